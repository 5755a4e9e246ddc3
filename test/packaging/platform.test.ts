/**
 * The platform packages as the napi CLI defines them: npm/<platform>/ is exactly what
 * `napi create-npm-dirs` makes from package.json (names, version, os/cpu/libc), and the runtime loader
 * and the install scripts name this machine's package the way the CLI names every target.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseTriple, readNapiConfig } from '@napi-rs/cli';
import { missingPlatformPackage, platformArchAbi } from '../../src/native/index.js';
import { ROOT } from '../support/cli.js';

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  version: string;
  optionalDependencies?: Record<string, string>;
  napi: { packageName: string; binaryName: string; targets: string[] };
};
const work = mkdtempSync(join(tmpdir(), 'pgha-npmdirs-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const read = (dir: string) =>
  Object.fromEntries(
    readdirSync(dir)
      .sort()
      .map((d) => [d, Object.fromEntries(readdirSync(join(dir, d)).sort().map((f) => [f, readFileSync(join(dir, d, f), 'utf8')]))]),
  );

describe('platform packages', () => {
  it('npm/ is what `napi create-npm-dirs` makes from package.json now (run `npx napi create-npm-dirs` / `npx napi version` after changing it)', () => {
    copyFileSync(join(ROOT, 'package.json'), join(work, 'package.json'));
    const r = spawnSync(process.execPath, [join(ROOT, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js'), 'create-npm-dirs', '--cwd', work], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(read(join(ROOT, 'npm'))).toEqual(read(join(work, 'npm')));
  });

  it('one package per target, named and versioned like the main package, for the os/cpu/libc of its triple', async () => {
    const napi = await readNapiConfig(join(ROOT, 'package.json'));
    expect(napi.targets.map((t) => t.platformArchABI).sort()).toEqual(readdirSync(join(ROOT, 'npm')).sort());
    for (const t of napi.targets) {
      const p = JSON.parse(readFileSync(join(ROOT, 'npm', t.platformArchABI, 'package.json'), 'utf8')) as Record<string, unknown>;
      expect(p).toMatchObject({ name: `@pgha/native-${t.platformArchABI}`, version: pkg.version, os: [t.platform], cpu: [t.arch], main: `pgha-native.${t.platformArchABI}.node` });
      if (t.abi === 'gnu' || t.abi === 'musl') expect(p.libc).toEqual([t.abi === 'gnu' ? 'glibc' : 'musl']);
    }
  });

  it('the loader and the install scripts name each target as the napi CLI does', async () => {
    const scripts = (await import(join(ROOT, 'scripts', 'platform.mjs'))) as { platformArchAbi: (p: string, a: string, musl: boolean) => string };
    for (const triple of pkg.napi.targets) {
      const t = parseTriple(triple);
      expect(platformArchAbi(t.platform, t.arch, t.abi === 'musl'), triple).toBe(t.platformArchABI);
      expect(scripts.platformArchAbi(t.platform, t.arch, t.abi === 'musl'), triple).toBe(t.platformArchABI);
    }
    // and this machine: the one `napi build --platform` names from rustc's host triple
    const host = /host: (\S+)/.exec(spawnSync('rustc', ['-vV'], { encoding: 'utf8' }).stdout)?.[1];
    expect(host).toBeDefined();
    expect(platformArchAbi()).toBe(parseTriple(host!).platformArchABI);
  });

  it('the loader names what is missing: a platform without a prebuilt addon, or one not installed', async () => {
    const napi = await readNapiConfig(join(ROOT, 'package.json'));
    const published = Object.fromEntries(napi.targets.map((t) => [`${napi.packageName}-${t.platformArchABI}`, pkg.version]));
    expect(missingPlatformPackage(napi.packageName, parseTriple('x86_64-pc-windows-msvc').platformArchABI, published)).toBe(
      'no prebuilt addon for win32-x64-msvc (prebuilt: linux-x64-gnu, linux-arm64-gnu, linux-x64-musl, linux-arm64-musl, darwin-x64, darwin-arm64)',
    );
    expect(missingPlatformPackage(napi.packageName, 'linux-arm64-musl', published)).toMatch(/^@pgha\/native-linux-arm64-musl is not installed \(installed with --omit=optional/);
  });

  it('prepack refuses to pack build output whose source is gone, naming it', () => {
    const root = join(work, 'stale');
    for (const d of ['scripts', 'src', 'dist/src']) mkdirSync(join(root, d), { recursive: true });
    copyFileSync(join(ROOT, 'scripts', 'prepack.mjs'), join(root, 'scripts', 'prepack.mjs'));
    symlinkSync(join(ROOT, 'node_modules'), join(root, 'node_modules'));
    writeFileSync(join(root, 'tsconfig.json'), JSON.stringify({ compilerOptions: { outDir: 'dist', rootDir: '.', module: 'NodeNext', target: 'ES2022', types: [], skipLibCheck: true }, include: ['src/**/*.ts'] }));
    writeFileSync(join(root, 'src', 'kept.ts'), 'export const kept = 1;\n');
    writeFileSync(join(root, 'dist', 'src', 'removed.js'), 'export const removed = 1;\n');
    const r = spawnSync(process.execPath, [join(root, 'scripts', 'prepack.mjs')], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toBe('pgha prepack: dist/ holds build output with no source (dist/src/removed.js): remove dist/ and pack again');
    rmSync(join(root, 'dist', 'src', 'removed.js'));
    const ok = spawnSync(process.execPath, [join(root, 'scripts', 'prepack.mjs')], { encoding: 'utf8' });
    expect(ok.status, ok.stderr).toBe(0);
    expect(readdirSync(join(root, 'dist', 'src'))).toEqual(['kept.js']);
  });

  it('CHANGELOG.md has an entry for the version in package.json', () => {
    const log = readFileSync(join(ROOT, 'CHANGELOG.md'), 'utf8');
    expect(log).toMatch(new RegExp(`^## ${pkg.version.replace(/\./g, '\\.')} — \\d{4}-\\d{2}-\\d{2}$`, 'm'));
  });

  it('the checkout lists no optionalDependencies: a clean clone installs with `npm ci` before any platform package is published', () => {
    // npm ci refuses a lockfile without the entries, and unpublished packages cannot be locked;
    // scripts/pack.mjs (and `napi pre-publish` in a release) add them to the published package.json
    expect(Object.keys(pkg.optionalDependencies ?? {}).filter((n) => n.startsWith(`${pkg.napi.packageName}-`))).toEqual([]);
  });
});

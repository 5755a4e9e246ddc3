/**
 * Install as users will: the tarballs `npm run pack` leaves in .pack/ (the main package and this
 * machine's prebuilt platform package) installed with `npm install -g --prefix <empty dir>` with
 * cargo and rustc out of PATH, then the installed commands run against a fixture and PostgreSQL's
 * own pg_waldump. `npm run pack` is skipped when .pack/stamp.json says the tarballs were made from
 * the same inputs (scripts/pack.mjs --if-stale); cargo rebuilds nothing when native/ is unchanged.
 */
import { execFile, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pg15BinDir } from '../harness/cluster.js';
import { ROOT } from '../support/cli.js';
import { parseWaldumpRecordStats, parseWaldumpRmgrStats, statsTriples } from '../support/oracles.js';

const PACK = join(ROOT, '.pack');
const FIXTURE = JSON.parse(readFileSync(join(ROOT, 'fixtures', 'pg15', 'expected.json'), 'utf8')) as { wal: { start: string; end: string } };
const WAL = join(ROOT, 'fixtures', 'pg15', 'wal');
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

const work = mkdtempSync(join(tmpdir(), 'pgha-install-'));
const prefix = join(work, 'prefix');
const bin = join(work, 'bin');
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** npm's own CLI script (the `npm` on PATH resolved), run with this node */
function npmCli(): string {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const npm = join(dir, 'npm');
    if (existsSync(npm)) return realpathSync(npm);
  }
  throw new Error('npm not found on PATH');
}

/** the environment of a user without a Rust toolchain: PATH holds only node and sh */
function userEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(npm_|CARGO|RUSTUP|RUSTC|NAPI_RS|PGHA_)/i.test(k)) continue;
    env[k] = v;
  }
  env.PATH = bin;
  return env;
}

/** a long child process without blocking the worker (vitest's RPC must keep answering) */
function runAsync(cmd: string, args: string[], opts: { cwd: string; env: NodeJS.ProcessEnv }): Promise<{ status: number; output: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { ...opts, encoding: 'utf8', maxBuffer: 1 << 26 }, (err, stdout, stderr) =>
      resolve({ status: err ? (typeof err.code === 'number' ? err.code : 1) : 0, output: `${stdout}\n${stderr}` }),
    );
  });
}

function run(cmd: string, args: string[], env = userEnv()): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { encoding: 'utf8', env, cwd: work, maxBuffer: 1 << 28 });
}

const installed = (name: string) => join(prefix, 'bin', name);
const platformDir = () => join(prefix, 'lib', 'node_modules', stamp.platformName);
let stamp: { main: string; platform: string; platformName: string; platformArchAbi: string; addon: string };

function tarList(tgz: string): string[] {
  const r = spawnSync('tar', ['tzf', tgz], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout.trim().split('\n').sort();
}

beforeAll(async () => {
  const pack = await runAsync(process.execPath, [join(ROOT, 'scripts', 'pack.mjs'), '--if-stale'], { cwd: ROOT, env: process.env });
  if (pack.status !== 0) throw new Error(`npm run pack failed:\n${pack.output}`);
  stamp = JSON.parse(readFileSync(join(PACK, 'stamp.json'), 'utf8'));

  mkdirSync(bin, { recursive: true });
  mkdirSync(prefix, { recursive: true });
  symlinkSync(process.execPath, join(bin, 'node'));
  symlinkSync('/bin/sh', join(bin, 'sh'));
  const r = await runAsync(
    process.execPath,
    [npmCli(), 'install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', '--no-update-notifier', '--prefer-offline', join(PACK, stamp.main), join(PACK, stamp.platform)],
    { cwd: work, env: userEnv() },
  );
  if (r.status !== 0) throw new Error(`npm install -g failed:\n${r.output}`);
}, 900_000);

describe('installed from the tarballs, without a Rust toolchain', () => {
  it('has no cargo or rustc on the PATH it installed and runs with', () => {
    for (const tool of ['cargo', 'rustc']) expect(run(tool, ['--version']).error?.message).toMatch(/ENOENT/);
  });

  it('the main tarball holds dist/ JavaScript, README, LICENSE and package.json only; the platform tarball the addon', () => {
    const main = tarList(join(PACK, stamp.main));
    expect(main.filter((f) => !/^package\/(dist\/(src|proxy)\/.+\.js|package\.json|README\.md|LICENSE)$/.test(f))).toEqual([]);
    for (const b of ['dist/src/cli/pgwal.js', 'dist/src/cli/pgha.js', 'dist/proxy/cli.js', 'dist/src/native/index.js']) expect(main).toContain(`package/${b}`);
    expect(stamp.addon).toBe(`pgha-native.${stamp.platformArchAbi}.node`);
    expect(tarList(join(PACK, stamp.platform))).toEqual(['package/LICENSE', 'package/README.md', `package/${stamp.addon}`, 'package/package.json'].sort());
    // what a consumer gets: no install scripts, the platform packages as optional dependencies
    const pkg = JSON.parse(readFileSync(join(prefix, 'lib', 'node_modules', 'pgha', 'package.json'), 'utf8')) as Record<string, Record<string, string> | undefined>;
    expect(pkg.scripts).toBeUndefined();
    expect(pkg.devDependencies).toBeUndefined();
    expect(pkg.optionalDependencies?.[stamp.platformName]).toBe(VERSION);
  });

  it("the main package's optionalDependencies are what `napi pre-publish` writes in a release job", async () => {
    // a release job's tree: package.json, npm/<platform>/ with each addon in (stand-ins here)
    const rel = join(work, 'release');
    mkdirSync(rel);
    copyFileSync(join(ROOT, 'package.json'), join(rel, 'package.json'));
    for (const dir of readdirSync(join(ROOT, 'npm'))) {
      mkdirSync(join(rel, 'npm', dir), { recursive: true });
      for (const f of readdirSync(join(ROOT, 'npm', dir))) copyFileSync(join(ROOT, 'npm', dir, f), join(rel, 'npm', dir, f));
      writeFileSync(join(rel, 'npm', dir, `pgha-native.${dir}.node`), 'stand-in');
    }
    const r = await runAsync(process.execPath, [join(ROOT, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js'), 'pre-publish', '-t', 'npm', '--skip-optional-publish', '--no-gh-release'], { cwd: rel, env: process.env });
    expect(r.status, r.output).toBe(0);
    const released = JSON.parse(readFileSync(join(rel, 'package.json'), 'utf8')) as { optionalDependencies: Record<string, string> };
    const packed = JSON.parse(readFileSync(join(prefix, 'lib', 'node_modules', 'pgha', 'package.json'), 'utf8')) as { optionalDependencies: Record<string, string> };
    expect(Object.keys(released.optionalDependencies)).toHaveLength(readdirSync(join(ROOT, 'npm')).length);
    expect(packed.optionalDependencies).toEqual(released.optionalDependencies);
  });

  it('pgwal native --json: the addon from the platform package', () => {
    const r = run(installed('pgwal'), ['native', '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ native: true });
    expect(r.stderr).toBe('');
    const from = run(process.execPath, ['--input-type=module', '-e', `const m = await import(${JSON.stringify(join(prefix, 'lib', 'node_modules', 'pgha', 'dist', 'src', 'native', 'index.js'))}); console.log(m.nativeSource())`]);
    expect(from.stdout.trim()).toBe(stamp.platformName);
    expect(existsSync(join(prefix, 'lib', 'node_modules', 'pgha', 'native'))).toBe(false);
  });

  it('pgwal inspect on the PG 15 fixture: the statistics pg_waldump prints, and what the checkout prints', () => {
    const args = ['inspect', '--stats=record', '--start', FIXTURE.wal.start, '--end', FIXTURE.wal.end, '--json', WAL];
    const r = run(installed('pgwal'), args);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as Record<string, never>;
    const waldump = (stats: string) =>
      spawnSync(join(pg15BinDir(), 'pg_waldump'), [stats, '-p', WAL, '-s', FIXTURE.wal.start, '-e', FIXTURE.wal.end], { encoding: 'utf8' });
    const byRecord = waldump('--stats=record');
    const byRmgr = waldump('--stats');
    expect(byRecord.status, byRecord.stderr).toBe(0);
    expect(statsTriples(out.statsByRecordType)).toEqual(parseWaldumpRecordStats(byRecord.stdout));
    expect(statsTriples(out.stats)).toEqual(parseWaldumpRmgrStats(byRmgr.stdout));
    const checkout = spawnSync(process.execPath, [join(ROOT, 'dist', 'src', 'cli', 'pgwal.js'), ...args], { encoding: 'utf8', maxBuffer: 1 << 28 });
    expect(checkout.status, checkout.stderr).toBe(0);
    expect(r.stdout).toBe(checkout.stdout);
  });

  it('pgha, pgha-proxy and pgwal --version print the package version', () => {
    for (const cmd of ['pgha', 'pgha-proxy', 'pgwal']) {
      const r = run(installed(cmd), ['--version']);
      expect(r.status, `${cmd}: ${r.stderr}`).toBe(0);
      expect(r.stdout.trim(), cmd).toBe(VERSION);
    }
  });
});

describe('installed without a usable platform package: the TypeScript twins, with one warning line saying why', () => {
  const inspectArgs = ['inspect', '--stats', '--json', WAL];
  const expectFallback = (reason: RegExp) => {
    const status = run(installed('pgwal'), ['native', '--json']);
    const st = JSON.parse(status.stdout) as { native: boolean; reason: string };
    expect(st.native).toBe(false);
    expect(st.reason).toMatch(reason);
    const r = run(installed('pgwal'), inspectArgs);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr.split('\n').filter(Boolean)).toEqual([`pgha: warning: native addon not loaded: ${st.reason}; using the TypeScript implementation (slower)`]);
    const native = run(installed('pgwal'), inspectArgs, { ...userEnv(), PGHA_NATIVE: '0' });
    expect(native.stderr).toBe(''); // asked for: no warning
    expect(r.stdout).toBe(native.stdout);
  };

  it('not installed (e.g. --omit=optional)', () => {
    const hidden = join(work, 'hidden');
    renameSync(platformDir(), hidden);
    try {
      expectFallback(new RegExp(`^${stamp.platformName} is not installed \\(installed with --omit=optional`));
    } finally {
      renameSync(hidden, platformDir());
    }
  });

  it('another version than pgha', () => {
    const pj = join(platformDir(), 'package.json');
    const orig = readFileSync(pj, 'utf8');
    writeFileSync(pj, orig.replace(`"version": "${VERSION}"`, '"version": "0.0.1"'));
    try {
      expectFallback(new RegExp(`^${stamp.platformName} is version 0\\.0\\.1, pgha is ${VERSION.replace(/\./g, '\\.')} \\(reinstall pgha\\)$`));
    } finally {
      writeFileSync(pj, orig);
    }
  });

  it('a damaged addon file', () => {
    const node = join(platformDir(), stamp.addon);
    const saved = join(work, 'saved.node');
    copyFileSync(node, saved);
    writeFileSync(node, 'not a shared object');
    try {
      expectFallback(new RegExp(`^${stamp.platformName} failed to load: .*pgha-native\\.[\\w-]+\\.node: (invalid ELF header|file too short)`));
    } finally {
      copyFileSync(saved, node);
    }
    expect(JSON.parse(run(installed('pgwal'), ['native', '--json']).stdout)).toEqual({ native: true });
  });
});

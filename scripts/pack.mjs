#!/usr/bin/env node
// `npm run pack`: the release tarballs this machine can make, in .pack/ (gitignored):
//   .pack/pgha-<version>.tgz                       the main package: dist/ JS, README, LICENSE, and
//                                                  optionalDependencies on every platform package
//   .pack/pgha-native-<platform>-<version>.tgz     the prebuilt addon for this machine (linux-x64-gnu here)
// The main package is staged in .pack/stage/ with a fresh `tsc` build (no stale or test files, no
// source maps) and the package.json a consumer gets: no install or dev scripts, no devDependencies,
// and the optionalDependencies that `napi pre-publish` writes in a release job (names from the napi
// CLI's own reading of package.json `napi`). The addon is built by `napi build --release` (cargo
// rebuilds nothing when native/ is unchanged) and copied into the platform package made by
// `napi create-npm-dirs` (npm/<platform>/, committed).
//
//   --if-stale   do nothing when .pack/ already holds tarballs made from the same inputs
//                (.pack/stamp.json: a hash of package.json, tsconfig.json, README, LICENSE, src/,
//                proxy/, native/ sources and npm/)
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { platformArchAbi } from './platform.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, '.pack');
const stage = join(out, 'stage');
const napiCli = join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js');

function run(cmd, args, cwd = root, capture = false) {
  const r = spawnSync(cmd, args, { cwd, stdio: capture ? ['ignore', 'pipe', 'inherit'] : 'inherit', encoding: 'utf8' });
  if (r.status !== 0) {
    console.error(`pgha pack: ${cmd} ${args.join(' ')} failed (exit ${r.status ?? r.signal})`);
    process.exit(1);
  }
  return r.stdout;
}

/** every input of the two tarballs, hashed (path and content) */
function inputsHash() {
  const h = createHash('sha256');
  const walk = (p) => {
    const st = statSync(p, { throwIfNoEntry: false });
    if (!st) return;
    if (st.isDirectory()) {
      for (const e of readdirSync(p).sort()) if (e !== 'target' && e !== 'node_modules') walk(join(p, e));
    } else if (!p.endsWith('.node') && !p.endsWith('binding.d.ts')) {
      h.update(relative(root, p)).update('\0').update(readFileSync(p)).update('\0');
    }
  };
  for (const p of ['package.json', 'tsconfig.json', 'README.md', 'LICENSE', 'src', 'proxy', 'native', 'npm', 'scripts/pack.mjs']) walk(join(root, p));
  return h.digest('hex');
}

const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const platform = platformArchAbi();
const hash = inputsHash();
const stampPath = join(out, 'stamp.json');
if (process.argv.includes('--if-stale') && existsSync(stampPath)) {
  const stamp = JSON.parse(readFileSync(stampPath, 'utf8'));
  if (stamp.inputs === hash && [stamp.main, stamp.platform].every((f) => existsSync(join(out, f)))) {
    console.log(`pgha pack: .pack/ is up to date (${stamp.main}, ${stamp.platform})`);
    process.exit(0);
  }
}

// the napi CLI's reading of package.json `napi`: targets (with their platform names) and package name
const { readNapiConfig } = await import(join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'index.js'));
const napi = await readNapiConfig(join(root, 'package.json'));
const target = napi.targets.find((t) => t.platformArchABI === platform);
if (!target) {
  console.error(`pgha pack: ${platform} is not among package.json napi.targets; nothing to build here`);
  process.exit(1);
}

rmSync(stage, { recursive: true, force: true });
mkdirSync(stage, { recursive: true });

// 1. the addon for this machine (release profile; cargo rebuilds nothing when native/ is unchanged)
console.log(`pgha pack: native addon for ${target.triple}`);
run(process.execPath, [napiCli, 'build', '--platform', '--release', '--manifest-path', 'native/Cargo.toml', '--output-dir', 'native', '--no-js', '--dts', 'binding.d.ts']);

// 2. the main package, from a fresh compile of src/ and proxy/ only
const main = join(stage, 'pgha');
console.log('pgha pack: tsc into .pack/stage/pgha/dist');
run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json', '--outDir', join(main, 'dist'), '--sourceMap', 'false']);
const published = { ...pkg };
delete published.devDependencies;
delete published.scripts;
published.optionalDependencies = Object.fromEntries(napi.targets.map((t) => [`${napi.packageName}-${t.platformArchABI}`, pkg.version]));
writeFileSync(join(main, 'package.json'), JSON.stringify(published, null, 2) + '\n');
for (const f of ['README.md', 'LICENSE']) copyFileSync(join(root, f), join(main, f));

// 3. the platform package made by `napi create-npm-dirs`, with the addon in it
const npmDir = join(root, 'npm', platform);
if (!existsSync(join(npmDir, 'package.json'))) {
  console.error(`pgha pack: npm/${platform}/package.json missing; run npx napi create-npm-dirs`);
  process.exit(1);
}
const platformPkg = JSON.parse(readFileSync(join(npmDir, 'package.json'), 'utf8'));
if (platformPkg.version !== pkg.version) {
  console.error(`pgha pack: npm/${platform} is version ${platformPkg.version}, package.json ${pkg.version}; run npx napi version`);
  process.exit(1);
}
const plat = join(stage, 'npm', platform);
mkdirSync(plat, { recursive: true });
for (const f of readdirSync(npmDir)) copyFileSync(join(npmDir, f), join(plat, f));
copyFileSync(join(root, 'LICENSE'), join(plat, 'LICENSE'));
const addon = `${napi.binaryName}.${platform}.node`;
copyFileSync(join(root, 'native', addon), join(plat, addon));

// 4. the tarballs (no lifecycle scripts: everything is built above)
for (const f of readdirSync(out)) if (f.endsWith('.tgz')) rmSync(join(out, f));
const pack = (dir) => JSON.parse(run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', out], dir, true))[0];
const mainTgz = pack(main);
const platTgz = pack(plat);
for (const t of [mainTgz, platTgz]) console.log(`pgha pack: .pack/${t.filename}: ${t.entryCount} files, ${t.size} bytes (${t.unpackedSize} unpacked)`);
writeFileSync(stampPath, JSON.stringify({ inputs: hash, main: mainTgz.filename, platform: platTgz.filename, platformName: platformPkg.name, platformArchAbi: platform, addon }, null, 2) + '\n');

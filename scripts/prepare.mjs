#!/usr/bin/env node
// `prepare`: runs on `npm install` / `npm ci` in a checkout (and for a git dependency), never when the
// package is installed from the registry or a tarball — those get the addon from the prebuilt platform
// package (@pgha/native-<platform>, an optionalDependency) and dist/ from the tarball.
//
// In a checkout (native/Cargo.toml present) it builds the addon from source with cargo + @napi-rs/cli,
// unless a platform package for this machine is installed, then compiles the TypeScript to dist/.
// Without cargo the TypeScript twins are used, unless PGHA_REQUIRE_NATIVE=1 (CI), which makes a failed
// addon build fail the install. Under `npm pack`/`npm publish` it does nothing: prepack builds dist/.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { platformPackage } from './platform.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const required = process.env.PGHA_REQUIRE_NATIVE === '1';
const run = (cmd, args) => spawnSync(cmd, args, { cwd: root, stdio: 'inherit', shell: false });

if (process.env.npm_command === 'pack' || process.env.npm_command === 'publish') process.exit(0);
if (!existsSync(join(root, 'native', 'Cargo.toml'))) process.exit(0); // not a checkout

function fail(msg) {
  if (required) {
    console.error(`${msg} (PGHA_REQUIRE_NATIVE=1: failing)`);
    process.exit(1);
  }
  console.warn(msg);
}

const pkg = platformPackage(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')));
let prebuilt = null;
try {
  prebuilt = dirname(createRequire(join(root, 'package.json')).resolve(`${pkg}/package.json`));
} catch {
  // not installed (the usual case in a checkout): build from source
}
if (prebuilt) {
  console.log(`pgha: using the prebuilt addon ${pkg} (${prebuilt}); not building native/`);
} else {
  const cargo = spawnSync('cargo', ['--version'], { encoding: 'utf8' });
  if (cargo.status !== 0) {
    fail('pgha: cargo not found: the native addon is not built; the pure TypeScript implementation will be used');
  } else {
    console.log(`pgha: building the native addon with ${cargo.stdout.trim()}`);
    const napi = join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js');
    const r = run(process.execPath, [napi, 'build', '--platform', '--release', '--manifest-path', 'native/Cargo.toml', '--output-dir', 'native', '--no-js', '--dts', 'binding.d.ts']);
    if (r.status !== 0) fail('pgha: native addon build failed; the pure TypeScript implementation will be used');
  }
}
const tsc = run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json']);
process.exit(tsc.status ?? 1);


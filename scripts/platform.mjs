// The napi-rs name of this machine's platform (`linux-x64-gnu`, `darwin-arm64`, …), as
// `napi create-npm-dirs` names the platform packages: <platform>-<arch>[-<abi>]. The runtime loader
// (src/native/index.ts) computes the same; test/packaging/platform.test.ts checks both against the
// napi CLI's own parseTriple for every target in package.json.
import { readFileSync } from 'node:fs';

export function isMusl() {
  if (process.platform !== 'linux') return false;
  try {
    return readFileSync('/usr/bin/ldd', 'utf8').includes('musl');
  } catch {
    const header = process.report?.getReport?.()?.header;
    return header ? !header.glibcVersionRuntime : false;
  }
}

/** linux-x64-gnu, linux-arm64-musl, darwin-arm64, win32-x64-msvc, … */
export function platformArchAbi(platform = process.platform, arch = process.arch, musl = isMusl()) {
  if (platform === 'linux') return `linux-${arch}-${musl ? 'musl' : 'gnu'}`;
  if (platform === 'win32') return `win32-${arch}-msvc`;
  return `${platform}-${arch}`;
}

/** @pgha/native-linux-x64-gnu for this machine (napi.packageName from package.json) */
export function platformPackage(pkgJson) {
  return `${pkgJson.napi.packageName}-${platformArchAbi()}`;
}

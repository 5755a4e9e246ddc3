/**
 * Loads the native addon once and exposes it behind the scan contract of ../formats/wal/contract.ts.
 * Where it comes from, in order:
 *  1. $NAPI_RS_NATIVE_LIBRARY_PATH, when set (a .node file chosen by hand);
 *  2. the prebuilt platform package `@pgha/native-<platform>` (linux-x64-gnu, darwin-arm64, …), an
 *     optionalDependency of the published package — what `npm install -g pgha` uses;
 *  3. the addon built from source in a checkout (native/pgha-native.<platform>.node, by `npm ci`).
 * When none loads, or PGHA_NATIVE=0 is set, the pure TypeScript twins answer instead; `nativeStatus()`
 * says which and why, and the first use of a twin in place of the addon prints ONE warning line on
 * stderr saying why (not for PGHA_NATIVE=0, which is asked for).
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { crc32c as tsCrc32c } from '../formats/crc32c.js';
import { scanWal as tsScanWal } from '../formats/wal/scan.js';
import { endReasonFromCode, type FilesScanResult, type ScanCarry, type ScanOptions, type ScanResult } from '../formats/wal/contract.js';

/**
 * The binding's types are the ones napi generates from native/src/lib.rs (`napi build --dts`, into
 * native/binding.d.ts, committed so that a checkout without Rust type-checks too; every build rewrites
 * it). Only types are imported: the addon itself is loaded below.
 */
type Binding = typeof import('../../native/binding.js');
type JsCarry = import('../../native/binding.js').JsCarry;
type JsScanOptions = import('../../native/binding.js').JsScanOptions;
type JsScanResult = import('../../native/binding.js').JsScanResult;

/** true when A and B have the same keys with mutually assignable types */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
// The carried scan state crosses the language boundary field by field: the contract's ScanCarry and
// the binding's JsCarry must have the same fields; only `partial` differs (null vs an optional Buffer).
// A field added on one side only fails this line at compile time.
const carryFieldsMatch: Same<Omit<ScanCarry, 'partial'>, Omit<JsCarry, 'partial'>> = true;
void carryFieldsMatch;

/** A file mapped by the addon (opaque); release() unmaps it once scanned. */
export type MappedFile = InstanceType<Binding['MappedWal']>;

/**
 * what the proxy's native relay reports about a session it carries; `kind` is client-eof,
 * client-error, backend-eof, backend-error, client-protocol, backend-protocol or backend-fatal
 */
export type RelayEvent = import('../../native/binding.js').JsRelayEvent;

/** pgha-proxy's native relay (native/src/relay.rs): sessions handed over after startup */
export type ProxyRelay = InstanceType<Binding['ProxyRelay']>;

/** the native relay, or null without the addon (the proxy then relays in TypeScript) */
export function nativeProxyRelay(onEvent: (e: RelayEvent) => void, threads = 1): ProxyRelay | null {
  if (!warned) warnFallback();
  return binding?.ProxyRelay ? new binding.ProxyRelay(onEvent, threads) : null;
}

/** what the transaction pool's native loop reports: acquire, client-closed, server-closed, cancel */
export type PoolEvent = import('../../native/binding.js').JsPoolEvent;

/** pgha-proxy's transaction pool loop (native/src/pool_relay.rs): clients and server connections handed over after login */
export type ProxyPool = InstanceType<Binding['ProxyPool']>;

/** the native transaction pool, or null without the addon (the pool then frames in TypeScript) */
/** `mode`: session or transaction pooling; `resetQuery`: run on a session-mode connection its client left (null: none) */
export function nativeProxyPool(onEvent: (e: PoolEvent) => void, mode: 'session' | 'transaction', maxPrepared: number, resetQuery: string | null, primary: string | null, waitLimitMs: number, waitError: Buffer): ProxyPool | null {
  if (!warned) warnFallback();
  return binding?.ProxyPool ? new binding.ProxyPool(onEvent, maxPrepared, primary, mode === 'session', resetQuery, waitLimitMs, waitError) : null;
}

interface PackageJson {
  name: string;
  version: string;
  napi?: { binaryName?: string; packageName?: string };
  optionalDependencies?: Record<string, string>;
}

/** the pgha package's root directory and package.json (dist/src/native → up to the package.json named pgha) */
function ownPackage(): { root: string; json: PackageJson } {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        const json = JSON.parse(readFileSync(pkg, 'utf8')) as PackageJson;
        if (json.name === 'pgha') return { root: dir, json };
      } catch {
        // keep walking up
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new Error('package root of pgha not found');
    dir = up;
  }
}

function isMusl(): boolean {
  if (process.platform !== 'linux') return false;
  try {
    return readFileSync('/usr/bin/ldd', 'utf8').includes('musl');
  } catch {
    const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
    return header ? !header.glibcVersionRuntime : false;
  }
}

/**
 * napi-rs' name of a platform, as `napi create-npm-dirs` names the platform packages and
 * `napi build --platform` the .node files: linux-x64-gnu, linux-arm64-musl, darwin-arm64, win32-x64-msvc
 * (scripts/platform.mjs computes the same for the install scripts).
 */
export function platformArchAbi(platform: string = process.platform, arch: string = process.arch, musl: boolean = isMusl()): string {
  if (platform === 'linux') return `linux-${arch}-${musl ? 'musl' : 'gnu'}`;
  if (platform === 'win32') return `win32-${arch}-msvc`;
  return `${platform}-${arch}`;
}

const firstLine = (e: unknown): string => (e instanceof Error ? e.message : String(e)).split('\n')[0]!;

/**
 * Why the platform package for `platform` is not there, given the main package's optionalDependencies
 * (the published package lists every platform package; a checkout lists none).
 */
export function missingPlatformPackage(scope: string, platform: string, optionalDependencies: Record<string, string>): string {
  const name = `${scope}-${platform}`;
  if (name in optionalDependencies) return `${name} is not installed (installed with --omit=optional or --no-optional, or from a lockfile made on another platform?)`;
  const prebuilt = Object.keys(optionalDependencies).filter((n) => n.startsWith(`${scope}-`)).map((n) => n.slice(scope.length + 1));
  return `no prebuilt addon for ${platform} (prebuilt: ${prebuilt.join(', ')})`;
}

function loadBinding(): { binding: Binding | null; from?: string; reason?: string } {
  if (process.env.PGHA_NATIVE === '0') return { binding: null, reason: 'disabled by PGHA_NATIVE=0' };
  const req = createRequire(import.meta.url);
  const override = process.env.NAPI_RS_NATIVE_LIBRARY_PATH;
  if (override) {
    try {
      return { binding: req(override) as Binding, from: override };
    } catch (e) {
      return { binding: null, reason: `NAPI_RS_NATIVE_LIBRARY_PATH=${override} failed to load: ${firstLine(e)}` };
    }
  }
  let own: { root: string; json: PackageJson };
  try {
    own = ownPackage();
  } catch (e) {
    return { binding: null, reason: firstLine(e) };
  }
  const platform = platformArchAbi();
  const scope = own.json.napi?.packageName ?? '@pgha/native';
  const binaryName = own.json.napi?.binaryName ?? 'pgha-native';
  const prebuilt = own.json.optionalDependencies ?? {};
  const name = `${scope}-${platform}`;
  const why: string[] = [];

  // 1. the prebuilt platform package
  let pkgJsonPath: string | undefined;
  try {
    pkgJsonPath = req.resolve(`${name}/package.json`);
  } catch {
    // not installed
  }
  if (pkgJsonPath) {
    try {
      const version = (JSON.parse(readFileSync(pkgJsonPath, 'utf8')) as PackageJson).version;
      if (version !== own.json.version) why.push(`${name} is version ${version}, pgha is ${own.json.version} (reinstall pgha)`);
      else return { binding: req(name) as Binding, from: name };
    } catch (e) {
      why.push(`${name} failed to load: ${firstLine(e)}`);
    }
  } else if (Object.keys(prebuilt).length > 0) {
    why.push(missingPlatformPackage(scope, platform, prebuilt));
  }

  // 2. the addon built from source in a checkout
  const local = join(own.root, 'native', `${binaryName}.${platform}.node`);
  if (existsSync(local)) {
    try {
      return { binding: req(local) as Binding, from: local };
    } catch (e) {
      why.push(`${local} failed to load: ${firstLine(e)}`);
    }
  } else if (existsSync(join(own.root, 'native', 'Cargo.toml'))) {
    why.push(`addon not built in this checkout (${local} missing; install Rust and run npm run build:native)`);
  } else if (why.length === 0) {
    why.push(`${name} is not installed`);
  }
  return { binding: null, reason: why.join('; ') };
}

const loaded = loadBinding();
const binding: Binding | null = loaded.binding;
const reason: string | undefined = loaded.reason;
/** where the addon was loaded from (a package name or a file) */
const loadedFrom: string | undefined = loaded.from;

let warned = binding !== null || process.env.PGHA_NATIVE === '0';
/** one line on stderr the first time a TypeScript twin answers in place of a missing addon */
function warnFallback(): void {
  if (warned) return;
  warned = true;
  process.stderr.write(`pgha: warning: native addon not loaded: ${reason}; using the TypeScript implementation (slower)\n`);
}

export function nativeStatus(): { native: boolean; reason?: string } {
  return binding ? { native: true } : { native: false, reason };
}

/** the package name or file the addon was loaded from; undefined when not loaded */
export const nativeSource = (): string | undefined => loadedFrom;

// the binding's carry has the contract's fields; only `partial` differs (Buffer | undefined vs Uint8Array | null)
function carryToJs(c: ScanCarry | null): JsCarry | undefined {
  if (!c) return undefined;
  const { partial, ...rest } = c;
  return { ...rest, partial: partial ? Buffer.from(partial.buffer, partial.byteOffset, partial.byteLength) : undefined };
}

/** a Buffer view of the same bytes (no copy): the async scan keeps a reference to a Buffer */
const asBuffer = (u: Uint8Array): Buffer => (Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength));

function optionsToJs(o: ScanOptions): JsScanOptions {
  return { bufLsn: o.bufLsn, carry: carryToJs(o.carry), mode: o.mode, startLsn: o.startLsn, endLsn: o.endLsn };
}

function resultFromJs(r: JsScanResult): ScanResult {
  const c = r.carry;
  return {
    count: r.count,
    records: r.records,
    stats: r.stats,
    end: r.endLsn !== undefined && r.endReason !== undefined ? { lsn: r.endLsn, reason: endReasonFromCode(r.endReason), message: r.endMessage ?? '' } : null,
    reachedEndLsn: r.reachedEndLsn,
    carry: { ...c, partial: c.partial ?? null },
    firstRecordLsn: r.firstRecordLsn,
    lastRecordLsn: r.lastRecordLsn,
    lastRecordEndLsn: r.lastRecordEndLsn,
  };
}

export interface Implementation {
  name: 'native' | 'typescript';
  crc32c(data: Uint8Array, init?: number): number;
  scanWal(buf: Uint8Array, options: ScanOptions): ScanResult;
  scanWalAsync(buf: Uint8Array, options: ScanOptions): Promise<ScanResult>;
  /** native only: map a file's first `length` bytes on the thread pool (no copy into JS memory) */
  mapFile?(path: string, length: number): Promise<MappedFile>;
  /** native only: scan a mapped file on the thread pool */
  scanMapped?(map: MappedFile, options: ScanOptions): Promise<ScanResult>;
  /** native only: scan consecutive whole files for statistics, one thread per core */
  scanFiles?(files: Array<{ path: string; bufLsn: bigint }>, segmentSize: number, blockSize: number, onBytes?: (bytesDone: number) => void): Promise<FilesScanResult>;
}

/** threads for a multi-file scan: PGHA_SCAN_THREADS, or 0 = one per core (decided by the addon) */
const scanThreads = (): number => {
  const n = Number(process.env.PGHA_SCAN_THREADS ?? 0);
  return Number.isInteger(n) && n >= 0 && n <= 256 ? n : 0;
};

export const tsImplementation: Implementation = {
  name: 'typescript',
  crc32c: tsCrc32c,
  scanWal: tsScanWal,
  scanWalAsync: async (buf, options) => tsScanWal(buf, options),
};

/** null when the addon is not loaded */
export const nativeImplementation: Implementation | null = binding
  ? (() => {
      const b = binding;
      return {
        name: 'native',
        crc32c: (data: Uint8Array, init?: number) => b.crc32c(data, init ?? 0),
        scanWal: (buf: Uint8Array, options: ScanOptions) => resultFromJs(b.scanWal(buf, optionsToJs(options))),
        scanWalAsync: async (buf: Uint8Array, options: ScanOptions) => resultFromJs(await b.scanWalAsync(asBuffer(buf), optionsToJs(options))),
        mapFile: (path: string, length: number) => b.mapWalFileAsync(path, length),
        scanMapped: async (map: MappedFile, options: ScanOptions) => resultFromJs(await b.scanMappedAsync(map, optionsToJs(options))),
        scanFiles: async (files, segmentSize, blockSize, onBytes) => {
          const progress = onBytes ? new b.ScanProgress() : undefined;
          const timer = onBytes ? setInterval(() => onBytes(progress!.bytes), 200) : undefined;
          try {
            const r = await b.scanWalFilesAsync(files.map((f) => f.path), files.map((f) => f.bufLsn), segmentSize, blockSize, scanThreads(), progress);
            return {
              count: r.count,
              stats: r.stats,
              firstRecordLsn: r.firstRecordLsn ?? null,
              lastRecordLsn: r.lastRecordLsn ?? null,
              carry: r.carry ? { ...r.carry, partial: r.carry.partial ?? null } : null,
              end: r.endLsn !== undefined && r.endReason !== undefined ? { lsn: r.endLsn, reason: endReasonFromCode(r.endReason), message: r.endMessage ?? '' } : null,
              filesScanned: r.filesScanned,
              bytesScanned: r.bytesScanned,
            };
          } finally {
            clearInterval(timer);
          }
        },
      } satisfies Implementation;
    })()
  : null;

const active: Implementation = nativeImplementation ?? tsImplementation;

export const crc32c = (data: Uint8Array, init?: number): number => (warned ? active : (warnFallback(), active)).crc32c(data, init);
export const scanWal = (buf: Uint8Array, options: ScanOptions): ScanResult => (warned ? active : (warnFallback(), active)).scanWal(buf, options);
export const scanWalAsync = (buf: Uint8Array, options: ScanOptions): Promise<ScanResult> => (warnFallback(), active.scanWalAsync(buf, options));
export const activeImplementation = (): Implementation => (warnFallback(), active);

/** SHA-256 (hex) of a file on the libuv pool when the addon is loaded; null otherwise */
export const sha256FileAsync: ((path: string) => Promise<string>) | null = binding ? (path) => binding!.sha256FileAsync(path) : null;

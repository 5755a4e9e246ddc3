/**
 * Loads the native addon (native/, built from source by `npm install`) once and exposes it behind
 * the contract of ./contract.ts. When the addon is missing, fails to load, or PGHA_NATIVE=0 is set,
 * the pure TypeScript twins answer instead; `nativeStatus()` says which and why.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { crc32c as tsCrc32c } from '../formats/crc32c.js';
import { scanWal as tsScanWal } from '../formats/wal/scan.js';
import { endReasonFromCode, type ScanCarry, type ScanOptions, type ScanResult } from '../formats/wal/contract.js';

/** The shape the generated binding (native/binding.d.ts) exports. */
/** the binding's carry: the contract's, with `partial` as an optional Buffer */
type JsCarry = Omit<ScanCarry, 'partial'> & { partial?: Buffer };
interface JsScanOptions {
  bufLsn: bigint;
  carry?: JsCarry;
  mode: string;
  startLsn?: bigint;
  endLsn?: bigint;
}
interface JsScanResult {
  count: number;
  records: Buffer;
  stats: Buffer;
  endLsn?: bigint;
  endReason?: number;
  endMessage?: string;
  reachedEndLsn: boolean;
  carry: JsCarry;
  firstRecordLsn: bigint;
  lastRecordLsn: bigint;
  lastRecordEndLsn: bigint;
}
/** A file mapped by the addon (opaque); release() unmaps it once scanned. */
export interface MappedFile {
  release(): void;
}
interface Binding {
  crc32c(data: Uint8Array, init?: number | null): number;
  scanWal(buf: Uint8Array, options: JsScanOptions): JsScanResult;
  scanWalAsync(buf: Uint8Array, options: JsScanOptions): Promise<JsScanResult>;
  mapWalFileAsync(path: string, length: number): Promise<MappedFile>;
  scanMappedAsync(map: MappedFile, options: JsScanOptions): Promise<JsScanResult>;
  sha256FileAsync(path: string): Promise<string>;
  ProxyRelay: new (onEvent: (e: RelayEvent) => void) => ProxyRelay;
}

/** what the proxy's native relay reports about a session it carries */
export interface RelayEvent {
  id: number;
  /** client-eof, client-error, backend-eof, backend-error, client-protocol, backend-protocol, backend-fatal */
  kind: string;
  detail: string;
  sqlstate?: string;
  clientTerminated: boolean;
  busy: boolean;
}

/** pgha-proxy's native relay (native/src/relay.rs): sessions handed over after startup */
export interface ProxyRelay {
  add(id: number, clientFd: number, backendFd: number, maxFrontendLength: number): void;
  finish(id: number, toClient?: Buffer | null, toBackend?: Buffer | null): void;
  txStatus(id: number): string | null;
  /** [bytes from clients, bytes to clients, sessions] */
  counters(): number[];
}

/** the native relay, or null without the addon (the proxy then relays in TypeScript) */
export function nativeProxyRelay(onEvent: (e: RelayEvent) => void): ProxyRelay | null {
  return binding?.ProxyRelay ? new binding.ProxyRelay(onEvent) : null;
}

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if (JSON.parse(readFileSync(pkg, 'utf8')).name === 'pgha') return dir;
      } catch {
        // keep walking up
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new Error('package root of pgha not found');
    dir = up;
  }
}

let binding: Binding | null = null;
let reason: string | undefined;
if (process.env.PGHA_NATIVE === '0') {
  reason = 'disabled by PGHA_NATIVE=0';
} else {
  try {
    // the addon built for this machine, loaded directly; else napi-rs' generated loader (which
    // also honours NAPI_RS_NATIVE_LIBRARY_PATH and other platforms' file names)
    const dir = join(packageRoot(), 'native');
    const direct = join(dir, `pgha-native.${process.platform}-${process.arch}-gnu.node`);
    const loader = join(dir, 'binding.cjs');
    const req = createRequire(import.meta.url);
    if (existsSync(direct) && !process.env.NAPI_RS_NATIVE_LIBRARY_PATH) binding = req(direct) as Binding;
    else if (existsSync(loader)) binding = req(loader) as Binding;
    else reason = `addon not built (${loader} missing; run npm install or npm run build:native)`;
  } catch (e) {
    reason = `addon failed to load: ${(e as Error).message.split('\n')[0]}`;
  }
}

export function nativeStatus(): { native: boolean; reason?: string } {
  return binding ? { native: true } : { native: false, reason };
}

// the binding's carry has the contract's fields; only `partial` differs (Buffer | undefined vs Uint8Array | null)
function carryToJs(c: ScanCarry | null): JsCarry | undefined {
  if (!c) return undefined;
  const { partial, ...rest } = c;
  return { ...rest, partial: partial ? Buffer.from(partial.buffer, partial.byteOffset, partial.byteLength) : undefined };
}

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
}

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
        scanWalAsync: async (buf: Uint8Array, options: ScanOptions) => resultFromJs(await b.scanWalAsync(buf, optionsToJs(options))),
        mapFile: (path: string, length: number) => b.mapWalFileAsync(path, length),
        scanMapped: async (map: MappedFile, options: ScanOptions) => resultFromJs(await b.scanMappedAsync(map, optionsToJs(options))),
      } satisfies Implementation;
    })()
  : null;

const active: Implementation = nativeImplementation ?? tsImplementation;

export const crc32c = (data: Uint8Array, init?: number): number => active.crc32c(data, init);
export const scanWal = (buf: Uint8Array, options: ScanOptions): ScanResult => active.scanWal(buf, options);
/** the design's name for the one-call-per-segment scan */
export const scanSegment = scanWal;
export const scanWalAsync = (buf: Uint8Array, options: ScanOptions): Promise<ScanResult> => active.scanWalAsync(buf, options);
export const activeImplementation = (): Implementation => active;

/** SHA-256 (hex) of a file on the libuv pool when the addon is loaded; null otherwise */
export const sha256FileAsync: ((path: string) => Promise<string>) | null = binding ? (path) => binding!.sha256FileAsync(path) : null;

/**
 * WAL and history files on disk, for shipping between nodes: digests, the list of files a node needs
 * to get from a point onto this node's timeline, and atomic receipt (temp file owned like the
 * directory, bounded in size and time, checked, fsync, then linked or renamed into place, fsync of
 * the directory) so a bad, stalled or interrupted transfer leaves nothing behind.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  constants,
  fstatSync,
  readSync,
  createReadStream,
  existsSync,
  fchownSync,
  fsyncSync,
  linkSync,
  lstatSync,
  openSync,
  readdirSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { crc32c, sha256FileAsync } from '../native/index.js';
import { historyFileName, parseWalFileName, segmentOf, walFileName, type Lsn } from '../formats/lsn.js';
import { timelineSpans, type TimelineHistory } from '../formats/timeline-history.js';
import { KNOWN_PAGE_MAGICS } from '../formats/versions.js';
import { SIZE_OF_XLOG_LONG_PHD, XLP_LONG_HEADER } from '../formats/wal/constants.js';

export interface FileDigest {
  name: string;
  size: number;
  sha256: string;
  /** listed files carry their CRC-32C too; a received file is verified by sha256 alone */
  crc32c?: number;
}

export class ShipError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
  ) {
    super(message);
  }
}

/** Only WAL segment, partial, history and backup-history names: never a path. */
export function checkWalName(name: string, segmentSize?: number): void {
  if (parseWalFileName(name, segmentSize) === null) {
    throw new ShipError(`not a WAL, history or backup file name: ${JSON.stringify(name)}`, 400, 'BAD_NAME');
  }
}

/**
 * Digests of files that do not change once written (complete segments, history files) are cached by
 * path, size and mtime: listing and then serving a file reads it once, not twice.
 */
const digestCache = new Map<string, { size: number; mtimeMs: number; digest: FileDigest }>();

export async function digestFile(path: string, name: string): Promise<FileDigest> {
  const st = statSync(path);
  // a FIFO or a device would never end: only regular files are read
  if (!st.isFile()) throw new ShipError(`${name} is not a regular file on this node`, 409, 'NOT_A_FILE');
  const hit = digestCache.get(path);
  if (hit && hit.size === st.size && hit.mtimeMs === st.mtimeMs) return { ...hit.digest, name };
  const digest = await computeDigest(path, name);
  if (digestCache.size > 4096) digestCache.clear();
  digestCache.set(path, { size: st.size, mtimeMs: st.mtimeMs, digest });
  return digest;
}

async function computeDigest(path: string, name: string): Promise<FileDigest> {
  const hash = createHash('sha256');
  let crc = 0;
  let size = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    const b = chunk as Buffer;
    hash.update(b);
    crc = crc32c(b, crc);
    size += b.length;
  }
  return { name, size, sha256: hash.digest('hex'), crc32c: crc };
}

/**
 * The files a node that stopped at (tli, lsn) needs to follow this node: the segment holding that
 * point on its own timeline (complete or .partial), every history file of this node's timeline, and
 * this node's segments from that point to its newest one.
 */
export function filesToFollow(
  walDir: string,
  history: TimelineHistory,
  segmentSize: number,
  tli: number,
  lsn: Lsn,
  opts: { systemId?: bigint; currentSegno?: bigint } = {},
): string[] {
  // segments that are not WAL of their own address (recycled, pre-allocated ahead) are not offered;
  // the one a running server is writing is, whatever its first page on disk says yet
  const present = new Set(
    regularFileNames(walDir).filter((n) => {
      const info = parseWalFileName(n, segmentSize);
      if (!(info?.kind === 'segment' && info.segno !== undefined) || info.segno === opts.currentSegno) return true;
      return isOwnSegment(join(walDir, n), info.segno, segmentSize, opts.systemId);
    }),
  );
  const names: string[] = [];
  const startSeg = segmentOf(lsn, segmentSize);
  const old = walFileName(tli, startSeg, segmentSize);
  if (present.has(old)) names.push(old);
  else if (present.has(`${old}.partial`)) names.push(`${old}.partial`);
  for (const e of history.entries) if (e.parentTimeline >= 2 && present.has(historyFileName(e.parentTimeline))) names.push(historyFileName(e.parentTimeline));
  if (history.timeline >= 2 && present.has(historyFileName(history.timeline))) names.push(historyFileName(history.timeline));
  // newest timeline first for each segment, as recovery picks them. Only the segment numbers that
  // are on disk are visited (the directory is listed once): a file named like the last segment of
  // the LSN space must not make this count through 2^64 / segment size numbers
  const spans = timelineSpans(history);
  const segnos = new Set<bigint>();
  for (const n of present) {
    const info = parseWalFileName(n, segmentSize);
    if (info?.kind === 'segment' && info.segno !== undefined && info.segno >= startSeg) segnos.add(info.segno);
  }
  for (const seg of [...segnos].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))) {
    for (const s of spans) {
      if (seg < segmentOf(s.begin, segmentSize)) continue;
      if (s.end !== null && seg > segmentOf(s.end, segmentSize)) continue;
      const n = walFileName(s.tli, seg, segmentSize);
      if (present.has(n) && !names.includes(n)) {
        names.push(n);
        break;
      }
    }
  }
  return names;
}

/**
 * Is this segment file WAL of that address, or a file the server recycled or pre-allocated (renamed
 * ahead, still holding an old segment's pages or zeros)? Its first page must carry a long header
 * (a known page magic) whose xlp_pageaddr is the segment's own start and, when given, the cluster's
 * system identifier. Reads 40 bytes; a non-regular file is not WAL.
 */
export function isOwnSegment(path: string, segno: bigint, segmentSize: number, systemId?: bigint): boolean {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch {
    return false;
  }
  try {
    if (!fstatSync(fd).isFile()) return false;
    const head = Buffer.alloc(SIZE_OF_XLOG_LONG_PHD);
    if (readSync(fd, head, 0, head.length, 0) < head.length) return false;
    return (
      KNOWN_PAGE_MAGICS.includes(head.readUInt16LE(0)) &&
      (head.readUInt16LE(2) & XLP_LONG_HEADER) !== 0 &&
      head.readBigUInt64LE(8) === segno * BigInt(segmentSize) &&
      (systemId === undefined || head.readBigUInt64LE(24) === systemId)
    );
  } finally {
    closeSync(fd);
  }
}

/** Names of the regular files in a directory (symlinks followed): FIFOs, devices and sockets are left out. */
export function regularFileNames(dir: string): string[] {
  const out: string[] = [];
  for (const d of readdirSync(dir, { withFileTypes: true })) {
    if (d.isFile()) out.push(d.name);
    else if (d.isSymbolicLink()) {
      try {
        if (statSync(join(dir, d.name)).isFile()) out.push(d.name);
      } catch {
        // dangling
      }
    }
  }
  return out;
}

/** The prefix of receiveFile's temp files: `.pgha-tmp.<name>.<pid>.<random>` in the target directory. */
export const TEMP_PREFIX = '.pgha-tmp.';

/**
 * Remove temp files an earlier agent left behind (killed mid-transfer): called at start-up, before
 * anything is received. Returns the names removed.
 */
export function removeStaleTempFiles(dir: string): string[] {
  const removed: string[] = [];
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return removed;
  }
  for (const n of entries) {
    if (!n.startsWith(TEMP_PREFIX)) continue;
    try {
      if (!lstatSync(join(dir, n)).isFile()) continue;
      unlinkSync(join(dir, n));
      removed.push(n);
    } catch {
      // gone meanwhile
    }
  }
  return removed;
}

/** fsync a file or directory by path */
export const fsyncPath = (path: string): void => {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
};

export interface ReceiveOptions {
  sha256: string;
  /** the exact length (from Content-Length or a listing): a shorter body → 400, a longer one → 413 */
  size?: number;
  /** the most bytes accepted: reading stops at the first byte beyond, 413 */
  maxSize?: number;
  /** checked on the first `bytes` bytes (or the whole body when shorter) before any of it is written */
  head?: { bytes: number; check: (head: Buffer) => void };
  /** checked on the whole body before it lands (only with a maxSize of at most 1 MiB: kept in memory) */
  content?: (body: Buffer) => void;
  /** no byte for this long → 408 (default: no limit) */
  idleMs?: number;
  /** the whole body must have arrived within this long → 408 (default: no limit) */
  deadlineMs?: number;
  /**
   * `replace`: rename over an existing file (downloads into a node's own pg_wal, of files it lacks).
   * `keep`: an existing file is never replaced — the same content is answered as already there
   * (`created: false`), other content is 409 CONFLICT. Commits of one target are serialized.
   */
  existing?: 'replace' | 'keep';
  /** run under the target's lock right before the file is put in place (a last check); throws to refuse */
  beforeCommit?: () => Promise<void> | void;
}

export interface Received extends FileDigest {
  /** false when an identical file was already there (existing: 'keep') */
  created: boolean;
}

/** per target path: the commit in progress, so two uploads of one name are decided one after the other */
const commitLocks = new Map<string, Promise<unknown>>();

async function underLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const prev = commitLocks.get(key) ?? Promise.resolve();
  const run = prev.then(fn, fn);
  const tail = run.catch(() => undefined);
  commitLocks.set(key, tail);
  try {
    return await run;
  } finally {
    if (commitLocks.get(key) === tail) commitLocks.delete(key);
  }
}

/** The next chunk of `it`, or a 408 ShipError when none comes within `ms`. */
async function nextWithin(it: AsyncIterator<Buffer>, ms: number, what: string): Promise<IteratorResult<Buffer>> {
  if (!Number.isFinite(ms)) return it.next();
  if (ms <= 0) throw new ShipError(`${what}: upload took too long`, 408, 'UPLOAD_TIMEOUT');
  const next = it.next();
  next.catch(() => undefined); // settles after a timeout too (the connection is closed): not unhandled
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      next,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new ShipError(`${what}: no data for ${ms} ms, upload abandoned`, 408, 'UPLOAD_TIMEOUT')), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Receive `name` into `dir` from `body`: a temp file in the same directory (created owned like the
 * directory, mode 0600), bounded in size and time, checked (head, content, length, sha256),
 * fsynced, then put in place (see `existing`) and the directory fsynced. Any failure — a refusal,
 * a timeout, the sender going away — removes the temp file; the target is never partially written.
 * The body is not destroyed on failure: the caller decides (a server answers and closes).
 */
export async function receiveFile(dir: string, name: string, body: Readable, expected: ReceiveOptions): Promise<Received> {
  checkWalName(name);
  if (!/^[0-9a-f]{64}$/.test(expected.sha256)) throw new ShipError('X-Checksum must be sha256:<64 hex digits>', 400, 'BAD_CHECKSUM_HEADER');
  const max = Math.min(expected.maxSize ?? Infinity, expected.size ?? Infinity);
  if (expected.content && !(max <= 1 << 20)) throw new RangeError('content checks need a maxSize of at most 1 MiB');
  const tmp = join(dir, `${TEMP_PREFIX}${name}.${process.pid}.${randomBytes(6).toString('hex')}`);
  const target = join(dir, name);
  // with the addon the file is hashed on the thread pool after it is written, so this thread only
  // moves bytes from the socket to the file; without it, hashing happens here as chunks arrive
  const hash = sha256FileAsync ? null : createHash('sha256');
  const kept: Buffer[] | null = expected.content ? [] : null;
  const started = Date.now();
  const deadline = expected.deadlineMs ?? Infinity;
  const idle = expected.idleMs ?? Infinity;
  let size = 0;
  let fd: number | null = null;
  let it: AsyncIterator<Buffer> | undefined;
  let headDone = !expected.head;
  let pendingHead: Buffer[] = [];
  const write = (chunk: Buffer) => {
    hash?.update(chunk);
    kept?.push(chunk);
    for (let off = 0; off < chunk.length; ) off += writeSync(fd!, chunk, off);
  };
  try {
    fd = openSync(tmp, 'wx', 0o600);
    // owned like the directory from the first byte: a temp file left by a killed agent is the
    // server owner's, as PostgreSQL's own files are
    ownFdLikeDirectory(fd, dir);
    it = (body as Readable & { iterator?: (o: { destroyOnReturn: boolean }) => AsyncIterator<Buffer> }).iterator
      ? (body as Readable).iterator({ destroyOnReturn: false })
      : (body as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    for (;;) {
      const r = await nextWithin(it, Math.min(idle, deadline - (Date.now() - started)), name);
      if (r.done) break;
      const chunk = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
      if (size + chunk.length > max) {
        const what = expected.size !== undefined && expected.size <= (expected.maxSize ?? Infinity) ? `expected ${expected.size}` : `at most ${max}`;
        throw new ShipError(`body for ${name} is longer than allowed (${what} bytes); the rest was not read`, 413, 'TOO_LARGE');
      }
      size += chunk.length;
      if (!headDone) {
        pendingHead.push(chunk);
        const have = pendingHead.reduce((a, b) => a + b.length, 0);
        if (have < expected.head!.bytes) continue;
        expected.head!.check(Buffer.concat(pendingHead).subarray(0, expected.head!.bytes));
        headDone = true;
        for (const c of pendingHead) write(c);
        pendingHead = [];
        continue;
      }
      write(chunk);
    }
    if (expected.size !== undefined && size !== expected.size) {
      throw new ShipError(`short body for ${name}: got ${size} bytes, expected ${expected.size}`, 400, 'BAD_LENGTH');
    }
    if (!headDone) {
      // a body shorter than the head: the check sees what there is (and says what is missing)
      expected.head!.check(Buffer.concat(pendingHead));
      for (const c of pendingHead) write(c);
    }
    const sha = hash ? hash.digest('hex') : await sha256FileAsync!(tmp);
    if (sha !== expected.sha256) throw new ShipError(`checksum mismatch for ${name}: got sha256:${sha}, expected sha256:${expected.sha256}`, 422, 'CHECKSUM_MISMATCH');
    expected.content?.(Buffer.concat(kept!, size));
    fsyncSync(fd);
    closeSync(fd);
    fd = null;
    const digest = { name, size, sha256: sha };
    const created = await underLock(target, async () => {
      await expected.beforeCommit?.();
      if (expected.existing !== 'keep') {
        renameSync(tmp, target);
        return true;
      }
      try {
        // link, not rename: it never replaces a file that appeared meanwhile (the server's own, too)
        linkSync(tmp, target);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        if (!statSync(target).isFile()) throw new ShipError(`${name} exists on this node and is not a regular file`, 409, 'CONFLICT');
        const have = await digestFile(target, name);
        if (have.sha256 === sha && have.size === size) return false;
        throw new ShipError(`${name} exists on this node with other content (sha256:${have.sha256}, ${have.size} bytes): it is never replaced`, 409, 'CONFLICT');
      }
      unlinkSync(tmp);
      return true;
    });
    if (created) fsyncPath(dir);
    else if (existsSync(tmp)) unlinkSync(tmp);
    return { ...digest, created };
  } catch (e) {
    if (fd !== null) closeSync(fd);
    if (existsSync(tmp)) unlinkSync(tmp);
    // let go of the body without destroying it (once a pending read settles): the caller may still
    // drain it, or destroy it
    Promise.resolve(it?.return?.()).catch(() => undefined);
    throw e;
  }
}

function ownFdLikeDirectory(fd: number, dir: string): void {
  if (process.getuid?.() !== 0) return;
  const st = statSync(dir);
  fchownSync(fd, st.uid, st.gid);
}

export { ownLikeDirectory } from '../datadir/ownership.js';

/**
 * WAL and history files on disk, for shipping between nodes: digests, the list of files a node needs
 * to get from a point onto this node's timeline, and atomic receipt (temp file, fsync, checksum,
 * rename, fsync of the directory) so a bad or interrupted transfer leaves nothing behind.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chownSync, closeSync, createReadStream, existsSync, fsyncSync, openSync, readdirSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { crc32c, sha256FileAsync } from '../native/index.js';
import { historyFileName, parseWalFileName, segmentOf, walFileName, type Lsn } from '../formats/lsn.js';
import { timelineSpans, type TimelineHistory } from '../formats/timeline-history.js';

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
export function filesToFollow(walDir: string, history: TimelineHistory, segmentSize: number, tli: number, lsn: Lsn): string[] {
  const present = new Set(readdirSync(walDir));
  const names: string[] = [];
  const startSeg = segmentOf(lsn, segmentSize);
  const old = walFileName(tli, startSeg, segmentSize);
  if (present.has(old)) names.push(old);
  else if (present.has(`${old}.partial`)) names.push(`${old}.partial`);
  for (const e of history.entries) if (e.parentTimeline >= 2 && present.has(historyFileName(e.parentTimeline))) names.push(historyFileName(e.parentTimeline));
  if (history.timeline >= 2 && present.has(historyFileName(history.timeline))) names.push(historyFileName(history.timeline));
  // newest timeline first for each segment, as recovery picks them
  const spans = timelineSpans(history);
  let maxSeg = startSeg;
  for (const n of present) {
    const info = parseWalFileName(n, segmentSize);
    if (info?.kind === 'segment' && info.segno !== undefined && info.segno > maxSeg) maxSeg = info.segno;
  }
  for (let seg = startSeg; seg <= maxSeg; seg++) {
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

/** fsync a file or directory by path */
export const fsyncPath = (path: string): void => {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
};

/**
 * Receive `name` into `dir` from `body`: a temp file in the same directory, fsynced, checked against
 * the expected sha256 (and length when given), then renamed into place and the directory fsynced.
 * Any failure removes the temp file; the target is never partially written.
 */
export async function receiveFile(dir: string, name: string, body: Readable, expected: { sha256: string; size?: number }): Promise<FileDigest> {
  checkWalName(name);
  if (!/^[0-9a-f]{64}$/.test(expected.sha256)) throw new ShipError('X-Checksum must be sha256:<64 hex digits>', 400, 'BAD_CHECKSUM_HEADER');
  const tmp = join(dir, `.pgha-tmp.${name}.${process.pid}.${randomBytes(6).toString('hex')}`);
  // with the addon the file is hashed on the thread pool after it is written, so this thread only
  // moves bytes from the socket to the file; without it, hashing happens here as chunks arrive
  const hash = sha256FileAsync ? null : createHash('sha256');
  let size = 0;
  let fd: number | null = null;
  try {
    fd = openSync(tmp, 'wx', 0o600);
    for await (const chunk of body as AsyncIterable<Buffer>) {
      hash?.update(chunk);
      for (let off = 0; off < chunk.length; ) off += writeSync(fd, chunk, off);
      size += chunk.length;
      if (expected.size !== undefined && size > expected.size) break;
    }
    if (expected.size !== undefined && size !== expected.size) {
      throw new ShipError(`short or long body for ${name}: got ${size} bytes, expected ${expected.size}`, 400, 'BAD_LENGTH');
    }
    const sha = hash ? hash.digest('hex') : await sha256FileAsync!(tmp);
    if (sha !== expected.sha256) throw new ShipError(`checksum mismatch for ${name}: got sha256:${sha}, expected sha256:${expected.sha256}`, 422, 'CHECKSUM_MISMATCH');
    fsyncSync(fd);
    closeSync(fd);
    fd = null;
    ownLikeDirectory(tmp, dir);
    renameSync(tmp, join(dir, name));
    fsyncPath(dir);
    return { name, size, sha256: sha };
  } catch (e) {
    if (fd !== null) closeSync(fd);
    if (existsSync(tmp)) unlinkSync(tmp);
    throw e;
  }
}

/** files written as root into a data directory must belong to its owner, or the server cannot read them */
export function ownLikeDirectory(path: string, dir: string): void {
  if (process.getuid?.() !== 0) return;
  const st = statSync(dir);
  chownSync(path, st.uid, st.gid);
}

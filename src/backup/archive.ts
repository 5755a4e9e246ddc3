/**
 * The continuous WAL archive: `archive push` (PostgreSQL's archive_command) and `archive get`
 * (restore_command). A segment is accepted only after pgwal's checks: its long page header (a known
 * page magic, the segment size, the address its name says, the repository's system identifier) and
 * a scan of every page and record in it (a complete segment must be valid WAL from end to end).
 * Pushing is idempotent: the same content again is fine, other content under an archived name is
 * refused (two primaries on one timeline, or a damaged file).
 */
import { randomBytes } from 'node:crypto';
import { open, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { FormatError } from '../formats/errors.js';
import { formatLsn, isValidSegmentSize, parseWalFileName, segmentStartLsn } from '../formats/lsn.js';
import { parseHistory } from '../formats/timeline-history.js';
import { majorFromPageMagic } from '../formats/versions.js';
import { SIZE_OF_XLOG_LONG_PHD, XLP_LONG_HEADER } from '../formats/wal/constants.js';
import { activeImplementation } from '../native/index.js';
import { compressBuffer, DEFAULT_LEVEL, sha256, type Compression } from './codec.js';
import { MAX_BACKUP_HISTORY_BYTES, MAX_HISTORY_BYTES, RepoProblem, walKey, type Repository, type WalEntry } from './repo.js';

const MAX_SEGMENT_BYTES = 1 << 30;

export interface PushResult {
  name: string;
  status: 'archived' | 'already-archived';
  key: string;
  size: number;
  sha256: string;
  storedSize: number;
}

/** not in the archive (restore_command's "no such file": exit 1) */
export class NotArchived extends Error {}

async function readRegular(path: string, max: number): Promise<Buffer> {
  const st = await stat(path);
  if (!st.isFile()) throw new RepoProblem(`${path}: not a regular file`);
  if (st.size > max) throw new RepoProblem(`${path}: ${st.size} bytes, larger than any file of its kind (at most ${max} bytes)`);
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(st.size);
    let done = 0;
    while (done < buf.length) {
      const { bytesRead } = await fh.read(buf, done, buf.length - done, done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return buf.subarray(0, done);
  } finally {
    await fh.close();
  }
}

const hex = (n: number | bigint, w: number) => `0x${n.toString(16).toUpperCase().padStart(w, '0')}`;

/** The checks of a WAL segment (or .partial) file before it is archived; returns the cluster facts it carries. */
export async function checkSegment(
  path: string,
  name: string,
  buf: Buffer,
  partial: boolean,
  /** called with the header's facts before the scan (the repository's system check) */
  beforeScan?: (facts: { systemId: bigint; segmentSize: number; pgVersion: number }) => Promise<void>,
): Promise<{ systemId: bigint; segmentSize: number; pgVersion: number }> {
  if (buf.length < SIZE_OF_XLOG_LONG_PHD) {
    throw new RepoProblem(`${path}: truncated WAL segment: ${buf.length} bytes, shorter than its ${SIZE_OF_XLOG_LONG_PHD}-byte long page header`);
  }
  const magic = buf.readUInt16LE(0);
  const major = majorFromPageMagic(magic);
  if (major === undefined) throw new RepoProblem(`${path}: offset 0: not a WAL segment of PostgreSQL 12-17 (expected a known XLOG_PAGE_MAGIC, got ${hex(magic, 4)})`);
  if (!(buf.readUInt16LE(2) & XLP_LONG_HEADER)) throw new RepoProblem(`${path}: offset 2: the first page lacks the long header (xlp_info ${hex(buf.readUInt16LE(2), 4)})`);
  const segmentSize = buf.readUInt32LE(32);
  if (!isValidSegmentSize(segmentSize)) throw new RepoProblem(`${path}: offset 32: bad segment size in the long page header (got ${segmentSize})`);
  if (buf.length !== segmentSize) {
    throw new RepoProblem(`${path}: truncated WAL segment: ${buf.length} bytes, its header says segments are ${segmentSize} bytes`);
  }
  const info = parseWalFileName(name, segmentSize);
  if (!info || info.segno === undefined) throw new RepoProblem(`${path}: not a WAL segment name for ${segmentSize}-byte segments`);
  const own = segmentStartLsn(info.segno, segmentSize);
  const pageaddr = buf.readBigUInt64LE(8);
  if (pageaddr !== own) {
    throw new RepoProblem(`${path}: offset 8: the first page is WAL at ${formatLsn(pageaddr)}, the name ${name} says ${formatLsn(own)} (a recycled or renamed file)`);
  }
  const pageTli = buf.readUInt32LE(4);
  if (pageTli > info.tli) throw new RepoProblem(`${path}: offset 4: the first page is of timeline ${pageTli}, after the name's timeline ${info.tli}`);
  const systemId = buf.readBigUInt64LE(24);
  await beforeScan?.({ systemId, segmentSize, pgVersion: major });
  const r = await activeImplementation().scanWalAsync(buf, { bufLsn: own, carry: null, mode: 'stats' });
  if (r.end && !partial) {
    throw new RepoProblem(`${path}: damaged WAL segment: at ${formatLsn(r.end.lsn)} (offset ${Number(r.end.lsn - own)}): ${r.end.reason}: ${r.end.message}`);
  }
  return { systemId, segmentSize, pgVersion: major };
}

/** archive_command: put one file of pg_wal into the repository */
export async function pushWal(repo: Repository, path: string, opts: { compression?: Compression; level?: number } = {}): Promise<PushResult> {
  const name = basename(path);
  const info = parseWalFileName(name);
  if (!info) throw new RepoProblem(`${path}: not a WAL segment, .partial, timeline history or backup history file name`);
  let buf: Buffer;
  if (info.kind === 'segment' || info.kind === 'partial') {
    buf = await readRegular(path, MAX_SEGMENT_BYTES);
    await checkSegment(path, name, buf, info.kind === 'partial', async (facts) => {
      await repo.ensureConfig({ systemId: facts.systemId.toString(), segmentSize: facts.segmentSize, pgVersion: facts.pgVersion, compression: opts.compression }, `WAL segment ${path}`);
    });
  } else if (info.kind === 'history') {
    buf = await readRegular(path, MAX_HISTORY_BYTES);
    try {
      parseHistory(buf, info.tli, path);
    } catch (e) {
      throw new RepoProblem(`not a timeline history file: ${e instanceof FormatError ? e.describe() : (e as Error).message}`);
    }
  } else {
    buf = await readRegular(path, MAX_BACKUP_HISTORY_BYTES);
    if (!/^START WAL LOCATION: /m.test(buf.toString('latin1'))) throw new RepoProblem(`${path}: not a backup history file (no "START WAL LOCATION:" line)`);
  }
  const sha = sha256(buf);
  const check = (found: WalEntry[]): WalEntry | null => {
    const other = found.find((e) => e.sha256 !== sha);
    if (other) {
      throw new RepoProblem(`${name} is already archived with other content (${repo.location}/${other.key}; this file is sha256:${sha}): refused, an archived file is never replaced`);
    }
    return found[0] ?? null;
  };
  const existing = check(await repo.findWal(name));
  if (existing) return { name, status: 'already-archived', key: existing.key, size: buf.length, sha256: sha, storedSize: existing.storedSize };
  const compression = (await repo.config())?.compression ?? opts.compression ?? 'gzip';
  const stored = await compressBuffer(buf, compression, opts.level ?? DEFAULT_LEVEL[compression]);
  const key = walKey(name, info.tli, sha, compression);
  const put = await repo.storage.put(key, stored, { ifAbsent: true });
  // another pusher of other content at the same moment: both see it now
  check(await repo.findWal(name));
  return { name, status: put.created ? 'archived' : 'already-archived', key, size: buf.length, sha256: sha, storedSize: stored.length };
}

/** the most bytes an archived file of this name may decompress to */
export function maxBytesFor(name: string, segmentSize: number | undefined): number {
  const info = parseWalFileName(name);
  if (info?.kind === 'history') return MAX_HISTORY_BYTES;
  if (info?.kind === 'backup') return MAX_BACKUP_HISTORY_BYTES;
  return segmentSize ?? MAX_SEGMENT_BYTES;
}

/** restore_command: write the archived `name` to `dest`, checked, atomically */
export async function getWal(repo: Repository, name: string, dest: string): Promise<{ name: string; key: string; size: number; sha256: string }> {
  const found = await repo.findWal(name);
  if (found.length === 0) throw new NotArchived(`${name} is not in the archive ${repo.location}`);
  if (new Set(found.map((e) => e.sha256)).size > 1) throw new RepoProblem(`${name} is archived with ${found.length} different contents in ${repo.location}: resolve the conflict first`);
  const cfg = await repo.config();
  const { bytes } = await repo.readWal(found[0], maxBytesFor(name, cfg?.segmentSize));
  const tmp = join(dirname(dest), `.pgha-tmp.${basename(dest)}.${process.pid}.${randomBytes(4).toString('hex')}`);
  const fh = await open(tmp, 'wx', 0o600);
  try {
    for (let off = 0; off < bytes.length; ) off += (await fh.write(bytes, off, bytes.length - off)).bytesWritten;
    await fh.sync();
    await fh.close();
    await rename(tmp, dest);
  } catch (e) {
    await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  return { name, key: found[0].key, size: bytes.length, sha256: found[0].sha256 };
}

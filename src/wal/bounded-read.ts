/**
 * Reading PostgreSQL's small files (pg_control, timeline history, slot state) from paths a user or a
 * peer may have put anything at: regular files only (a FIFO or a device such as /dev/zero is
 * refused before a byte is read — a FIFO is opened non-blocking so the open cannot hang), and never
 * more than the format allows (a larger file is refused, so a read can never grow without bound).
 */
import { closeSync, constants, fstatSync, openSync, readSync, statSync } from 'node:fs';
import { FileTooLargeError, NotRegularFileError, type FormatKind } from '../formats/errors.js';

/** pg_control is PG_CONTROL_FILE_SIZE bytes */
export const MAX_CONTROL_FILE_BYTES = 8192;
/** a timeline history file: one short line per switch; 1 MiB is thousands of timelines */
export const MAX_HISTORY_FILE_BYTES = 1 << 20;
/** ReplicationSlotOnDisk: 16 bytes + at most 184 bytes of slot data (PG 12–18) */
export const MAX_SLOT_STATE_BYTES = 200;
/** a backup history file (`.backup`): a dozen short lines */
export const MAX_BACKUP_HISTORY_BYTES = 64 << 10;

/** Throw NotRegularFileError unless `path` (followed through symlinks) is a regular file. */
export function assertRegularFile(path: string): void {
  if (!statSync(path).isFile()) throw new NotRegularFileError(path);
}

/**
 * The whole content of a regular file of at most `maxBytes` bytes. A path that is not a regular
 * file (checked before opening, and again on the open descriptor) → NotRegularFileError; a larger
 * file (by its size, or by what a read finds when it grows meanwhile) → FileTooLargeError.
 */
export function readBoundedFile(path: string, maxBytes: number, what: { kind: FormatKind; name: string }): Buffer {
  assertRegularFile(path);
  // O_NONBLOCK: should the path have become a FIFO since the stat, the open does not wait for a writer
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new NotRegularFileError(path);
    if (st.size > maxBytes) throw new FileTooLargeError(what.kind, what.name, { file: path, max: maxBytes, size: st.size });
    // read until the end, never more than maxBytes + 1 bytes (the file may grow while it is read)
    const chunks: Buffer[] = [];
    let done = 0;
    let want = Math.min(st.size, maxBytes) + 1;
    for (;;) {
      const buf = Buffer.alloc(Math.min(want, maxBytes + 1 - done));
      const n = readSync(fd, buf, 0, buf.length, done);
      if (n === 0) break;
      chunks.push(buf.subarray(0, n));
      done += n;
      if (done > maxBytes) throw new FileTooLargeError(what.kind, what.name, { file: path, max: maxBytes, size: done });
      want = 64 << 10;
    }
    return Buffer.concat(chunks, done);
  } finally {
    closeSync(fd);
  }
}

export const readControlBytes = (path: string): Buffer => readBoundedFile(path, MAX_CONTROL_FILE_BYTES, { kind: 'control', name: 'pg_control file' });
export const readHistoryBytes = (path: string): Buffer => readBoundedFile(path, MAX_HISTORY_FILE_BYTES, { kind: 'history', name: 'timeline history file' });
export const readSlotStateBytes = (path: string): Buffer => readBoundedFile(path, MAX_SLOT_STATE_BYTES, { kind: 'slot', name: 'replication slot state file' });

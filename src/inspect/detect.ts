/**
 * Decide what a path is by its content (not its name): a WAL segment, a directory of segments, a
 * data directory, a timeline history file, a replication slot state file or pg_control.
 */
import { closeSync, constants, existsSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { FormatError, NotRegularFileError } from '../formats/errors.js';
import { crc32c } from '../formats/crc32c.js';
import { CONTROL_CRC_OFFSET, CONTROL_CRC_OFFSET_18, PG_CONTROL_FILE_SIZE } from '../formats/control.js';
import { SLOT_MAGIC } from '../formats/replslot.js';
import { KNOWN_PAGE_MAGICS, KNOWN_PAGE_MAGICS_TEXT, SUPPORTED_RANGE, majorFromControlVersion } from '../formats/versions.js';

export type DetectedKind = 'segment' | 'wal-dir' | 'datadir' | 'history' | 'slot' | 'control';

export interface Detected {
  kind: DetectedKind;
  path: string;
  size: number;
}

const PROBE = 8192;

export function detect(path: string): Detected {
  const st = statSync(path);
  if (st.isDirectory()) {
    if (existsSync(join(path, 'global', 'pg_control')) && existsSync(join(path, 'pg_wal'))) return { kind: 'datadir', path, size: 0 };
    return { kind: 'wal-dir', path, size: 0 };
  }
  // a FIFO or a device (/dev/zero) could block or never end: regular files only, checked again on
  // the descriptor (opened non-blocking, so a FIFO swapped in meanwhile cannot hang the open)
  if (!st.isFile()) throw new NotRegularFileError(path);
  const head = Buffer.alloc(Math.min(PROBE, st.size));
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  try {
    if (!fstatSync(fd).isFile()) throw new NotRegularFileError(path);
    readSync(fd, head, 0, head.length, 0);
  } finally {
    closeSync(fd);
  }
  const size = st.size;
  if (head.length >= 4 && head.readUInt32LE(0) === SLOT_MAGIC) return { kind: 'slot', path, size };
  if (head.length >= 4 && KNOWN_PAGE_MAGICS.includes(head.readUInt16LE(0)) && head.readUInt16LE(2) & 0x0002) {
    return { kind: 'segment', path, size };
  }
  // pg_control: a valid CRC, or a known pg_control_version with its catalog version (so a damaged or
  // short copy still gets pg_control's own error, with the offset)
  const crcAt = (off: number) => head.length >= off + 4 && crc32c(head.subarray(0, off)) === head.readUInt32LE(off);
  const crcOk = crcAt(CONTROL_CRC_OFFSET) || crcAt(CONTROL_CRC_OFFSET_18);
  const versionOk = head.length >= 16 && majorFromControlVersion(head.readUInt32LE(8), head.readUInt32LE(12)) !== undefined;
  if ((crcOk && size === PG_CONTROL_FILE_SIZE) || versionOk) return { kind: 'control', path, size };
  if (basename(path) === 'pg_control') return { kind: 'control', path, size };
  if (/\.history$/.test(path) || looksLikeHistory(head)) return { kind: 'history', path, size };
  if (basename(path) === 'state') return { kind: 'slot', path, size };
  if (head.length >= 4 && head.readUInt16LE(0) >= 0xd000 && head.readUInt16LE(0) <= 0xd1ff) {
    throw new FormatError('wal', 'WAL segment of an unsupported PostgreSQL version', {
      file: path,
      offset: 0,
      expected: `XLOG_PAGE_MAGIC of ${SUPPORTED_RANGE} (${KNOWN_PAGE_MAGICS_TEXT})`,
      got: head.readUInt16LE(0).toString(16).toUpperCase(),
    });
  }
  throw new FormatError('file', 'unrecognized file: not a WAL segment, timeline history, replication slot state or pg_control', {
    file: path,
    offset: 0,
    expected: 'WAL page magic, slot magic 0x1051CA1, pg_control (8192 bytes, valid CRC) or history text',
    got: `${size} bytes starting ${head.subarray(0, 8).toString('hex') || '(empty)'}`,
  });
}

function looksLikeHistory(head: Buffer): boolean {
  if (head.length === 0 || head.includes(0)) return false;
  const text = head.toString('latin1');
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .every((l) => /^\d+\s+[0-9A-Fa-f]+\/[0-9A-Fa-f]+/.test(l));
}

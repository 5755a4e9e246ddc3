/**
 * Replication slot state files (`pg_replslot/<slot>/state`): ReplicationSlotOnDisk (slot.c) wrapping
 * ReplicationSlotPersistentData (slot.h), PG 12–18 (18 writes 17's layout byte for byte). Layouts: shared/reference/pg-formats.md §3.
 * The major version is identified by (version, length); the CRC covers bytes [8, 16 + length).
 */
import { crc32c } from './crc32c.js';
import { SlotStateError } from './errors.js';
import { ByteReader, ByteWriter } from './reader.js';
import type { Lsn } from './lsn.js';
import type { PgMajor } from './versions.js';

export const SLOT_MAGIC = 0x1051ca1;
/** magic u32, checksum u32, version u32, length u32 */
export const SLOT_ONDISK_CONSTANT_SIZE = 16;
/** bytes not covered by the checksum: magic and checksum */
export const SLOT_ONDISK_NOT_CHECKSUMMED = 8;
export const NAMEDATALEN = 64;

export type SlotPersistency = 'persistent' | 'ephemeral' | 'temporary';
const PERSISTENCY: readonly SlotPersistency[] = ['persistent', 'ephemeral', 'temporary'];
export type SlotInvalidation = 'none' | 'wal_removed' | 'rows_removed' | 'wal_level_insufficient';
const INVALIDATION: readonly SlotInvalidation[] = ['none', 'wal_removed', 'rows_removed', 'wal_level_insufficient'];

export interface SlotState {
  /**
   * major version whose layout the file has (12–14 and 15 share SLOT_VERSION 2; length tells 12/13).
   * A layout several majors write (14/15, 17/18) reports the newest unless `preferVersion` names another.
   */
  pgVersion: PgMajor;
  /** majors that write this exact layout (14 and 15 are byte-identical, so are 17 and 18) */
  possibleVersions: PgMajor[];
  magic: number;
  checksum: number;
  computedChecksum: number;
  checksumValid: boolean;
  version: number;
  length: number;
  name: string;
  /** 0 for a physical slot */
  database: number;
  kind: 'physical' | 'logical';
  persistency: SlotPersistency;
  persistencyCode: number;
  xmin: number;
  catalogXmin: number;
  restartLsn: Lsn;
  confirmedFlush: Lsn;
  plugin: string;
  /** 13–15: LSN at which the slot was invalidated (0 = never) */
  invalidatedAt?: Lsn;
  /** 16+: invalidation cause */
  invalidated?: SlotInvalidation;
  invalidatedCode?: number;
  /** 14+ */
  twoPhaseAt?: Lsn;
  twoPhase?: boolean;
  /** 17+ (synced: made by slot synchronisation on a standby; failover: synchronised to standbys) */
  synced?: boolean;
  failover?: boolean;
}

/** (SLOT_VERSION, length) → the majors that write it */
function layoutOf(version: number, length: number): PgMajor[] | undefined {
  if (version === 2 && length === 160) return [12];
  if (version === 2 && length === 168) return [13];
  if (version === 2 && length === 184) return [14, 15];
  if (version === 3 && length === 184) return [16];
  if (version === 5 && length === 184) return [17, 18];
  return undefined;
}

export interface ParseSlotOptions {
  file?: string;
  /** when the file's layout fits several majors (14/15, 17/18), which one to report */
  preferVersion?: PgMajor;
  /** do not throw on a checksum mismatch (report checksumValid=false instead) */
  allowBadChecksum?: boolean;
}

export function parseSlotState(bytes: Uint8Array, opts: ParseSlotOptions = {}): SlotState {
  const file = opts.file;
  if (bytes.length < SLOT_ONDISK_CONSTANT_SIZE) {
    throw new SlotStateError('replication slot state file too short', {
      file,
      offset: bytes.length,
      expected: `at least ${SLOT_ONDISK_CONSTANT_SIZE} bytes`,
      got: `${bytes.length} bytes`,
    });
  }
  const head = new ByteReader(bytes, 0, SLOT_ONDISK_CONSTANT_SIZE, 0, 'slot', 'slot state header');
  const magic = head.u32();
  const checksum = head.u32();
  const version = head.u32();
  const length = head.u32();
  if (magic !== SLOT_MAGIC) {
    throw new SlotStateError('replication slot file has wrong magic number', {
      file,
      offset: 0,
      expected: `0x${SLOT_MAGIC.toString(16)}`,
      got: `0x${magic.toString(16)}`,
    });
  }
  const versions = layoutOf(version, length);
  if (!versions) {
    throw new SlotStateError('replication slot file has an unsupported version/length', {
      file,
      offset: 8,
      expected: 'version 2 (PG 12-15) with length 160/168/184, 3 (16) or 5 (17-18) with length 184',
      got: `version ${version}, length ${length}`,
    });
  }
  if (bytes.length !== SLOT_ONDISK_CONSTANT_SIZE + length) {
    throw new SlotStateError('replication slot file has the wrong size', {
      file,
      offset: Math.min(bytes.length, SLOT_ONDISK_CONSTANT_SIZE + length),
      expected: `${SLOT_ONDISK_CONSTANT_SIZE + length} bytes`,
      got: `${bytes.length} bytes`,
    });
  }
  const computed = crc32c(bytes.subarray(SLOT_ONDISK_NOT_CHECKSUMMED, SLOT_ONDISK_CONSTANT_SIZE + length));
  if (computed !== checksum && !opts.allowBadChecksum) {
    throw new SlotStateError('checksum mismatch for replication slot file', {
      file,
      offset: 4,
      expected: `0x${computed.toString(16).padStart(8, '0')}`,
      got: `0x${checksum.toString(16).padStart(8, '0')}`,
    });
  }
  const major: PgMajor =
    opts.preferVersion !== undefined && versions.includes(opts.preferVersion) ? opts.preferVersion : versions[versions.length - 1];
  const r = new ByteReader(bytes, SLOT_ONDISK_CONSTANT_SIZE, SLOT_ONDISK_CONSTANT_SIZE + length, 0, 'slot', 'slot data');
  const name = r.name(NAMEDATALEN);
  const database = r.u32();
  const persistencyCode = r.u32();
  const xmin = r.u32();
  const catalogXmin = r.u32();
  const restartLsn = r.u64();
  const state: SlotState = {
    pgVersion: major,
    possibleVersions: versions,
    magic,
    checksum,
    computedChecksum: computed,
    checksumValid: computed === checksum,
    version,
    length,
    name,
    database,
    kind: database === 0 ? 'physical' : 'logical',
    persistency: PERSISTENCY[persistencyCode] ?? 'persistent',
    persistencyCode,
    xmin,
    catalogXmin,
    restartLsn,
    confirmedFlush: 0n,
    plugin: '',
  };
  if (PERSISTENCY[persistencyCode] === undefined) {
    throw new SlotStateError('unknown slot persistency', { file, offset: 16 + 68, expected: '0, 1 or 2', got: String(persistencyCode) });
  }
  if (major === 12) {
    state.confirmedFlush = r.u64();
    state.plugin = r.name(NAMEDATALEN);
  } else if (major === 13) {
    state.invalidatedAt = r.u64();
    state.confirmedFlush = r.u64();
    state.plugin = r.name(NAMEDATALEN);
  } else {
    if (major <= 15) {
      state.invalidatedAt = r.u64();
    } else {
      const code = r.u32();
      r.skip(4);
      state.invalidatedCode = code;
      state.invalidated = INVALIDATION[code] ?? 'none';
      if (INVALIDATION[code] === undefined) {
        throw new SlotStateError('unknown slot invalidation cause', { file, offset: 16 + 88, expected: '0..3', got: String(code) });
      }
    }
    state.confirmedFlush = r.u64();
    state.twoPhaseAt = r.u64();
    state.twoPhase = r.bool();
    state.plugin = r.name(NAMEDATALEN);
    if (major >= 17) {
      state.synced = r.bool();
      state.failover = r.bool();
    }
  }
  return state;
}

/**
 * Serialize a slot state. When `original` is given, bytes the model does not describe (padding) are
 * taken from it, so parse → serialize reproduces the file byte for byte; the checksum is always
 * recomputed (so an unmodified, valid file comes back identical).
 */
export function serializeSlotState(s: SlotState, original?: Uint8Array): Buffer {
  const size = SLOT_ONDISK_CONSTANT_SIZE + s.length;
  const out = Buffer.alloc(size);
  if (original && original.length === size) out.set(original);
  const w = new ByteWriter(out);
  w.u32(SLOT_MAGIC);
  w.u32(0);
  w.u32(s.version);
  w.u32(s.length);
  w.name(s.name, NAMEDATALEN);
  w.u32(s.database);
  w.u32(s.persistencyCode);
  w.u32(s.xmin);
  w.u32(s.catalogXmin);
  w.u64(s.restartLsn);
  const major = s.pgVersion;
  if (major === 12) {
    w.u64(s.confirmedFlush);
    w.name(s.plugin, NAMEDATALEN);
  } else if (major === 13) {
    w.u64(s.invalidatedAt ?? 0n);
    w.u64(s.confirmedFlush);
    w.name(s.plugin, NAMEDATALEN);
  } else {
    if (major <= 15) w.u64(s.invalidatedAt ?? 0n);
    else {
      w.u32(s.invalidatedCode ?? 0);
      w.pos += 4;
    }
    w.u64(s.confirmedFlush);
    w.u64(s.twoPhaseAt ?? 0n);
    w.bool(s.twoPhase ?? false);
    w.name(s.plugin, NAMEDATALEN);
    if (major >= 17) {
      w.bool(s.synced ?? false);
      w.bool(s.failover ?? false);
    }
  }
  const crc = crc32c(out.subarray(SLOT_ONDISK_NOT_CHECKSUMMED));
  out.writeUInt32LE(crc, 4);
  return out;
}

/** Fields an operator may edit (everything else is identity or layout). */
export type SlotEdit = Partial<Pick<SlotState, 'name' | 'xmin' | 'catalogXmin' | 'restartLsn' | 'confirmedFlush' | 'plugin' | 'twoPhase' | 'twoPhaseAt' | 'failover' | 'synced'>> & {
  persistency?: SlotPersistency;
};

/** Apply edits to a parsed slot and return the new file bytes with a recomputed CRC. */
export function editSlotState(original: Uint8Array, edit: SlotEdit, opts: ParseSlotOptions = {}): Buffer {
  const parsed = parseSlotState(original, opts);
  const next: SlotState = { ...parsed, ...edit };
  if (edit.persistency !== undefined) next.persistencyCode = PERSISTENCY.indexOf(edit.persistency);
  if ((edit.failover !== undefined || edit.synced !== undefined) && parsed.pgVersion < 17) {
    throw new SlotStateError('failover/synced exist only in PostgreSQL 17+ slot files', { file: opts.file, got: `PG ${parsed.pgVersion} layout` });
  }
  if ((edit.twoPhase !== undefined || edit.twoPhaseAt !== undefined) && parsed.pgVersion < 14) {
    throw new SlotStateError('two_phase exists only in PostgreSQL 14+ slot files', { file: opts.file, got: `PG ${parsed.pgVersion} layout` });
  }
  return serializeSlotState(next, original);
}

/**
 * `global/pg_control` (ControlFileData, pg_control.h), PG 12–18. The file is PG_CONTROL_FILE_SIZE
 * (8192) bytes; the struct's CRC-32C over bytes [0, 288) is stored at 288 in 12–17. 18 (pg_control_version
 * 1800) adds `bool default_char_signedness` after data_checksum_version, at 256: the 32-byte nonce moves
 * to 257 and the CRC, over [0, 292), to 292 (sizeof stays 296). Verified on 18.4 files: CRC, every
 * field against pg_control_system()/pg_control_checkpoint()/pg_control_init() (test/multiversion).
 * Layout: shared/reference/pg-formats.md §4. Offsets are named after the struct fields.
 */
import { crc32c } from './crc32c.js';
import { ControlFileError } from './errors.js';
import { ByteReader } from './reader.js';
import type { Lsn } from './lsn.js';
import { majorFromControlVersion, type PgMajor } from './versions.js';

export const PG_CONTROL_FILE_SIZE = 8192;
/** offsetof(ControlFileData, crc) in 12–17 */
export const CONTROL_CRC_OFFSET = 288;
/** offsetof(ControlFileData, crc) in 18 */
export const CONTROL_CRC_OFFSET_18 = 292;
/** where the CRC sits in a major's pg_control */
export function controlCrcOffset(major: PgMajor): number {
  return major >= 18 ? CONTROL_CRC_OFFSET_18 : CONTROL_CRC_OFFSET;
}
/** sizeof(ControlFileData) */
export const CONTROL_DATA_SIZE = 296;
const CHECKPOINT_OFF = 40;

export const DB_STATES = [
  'starting up',
  'shut down',
  'shut down in recovery',
  'shutting down',
  'in crash recovery',
  'in archive recovery',
  'in production',
] as const;
export type DbState = (typeof DB_STATES)[number];
export const WAL_LEVELS = ['minimal', 'replica', 'logical'] as const;
export type WalLevel = (typeof WAL_LEVELS)[number];

/** CheckPoint (pg_control.h): the copy in pg_control and the body of checkpoint records */
export interface CheckPoint {
  redo: Lsn;
  thisTimeLineID: number;
  prevTimeLineID: number;
  fullPageWrites: boolean;
  /** FullTransactionId: epoch << 32 | xid */
  nextXid: bigint;
  nextXidEpoch: number;
  nextXidXid: number;
  nextOid: number;
  nextMulti: number;
  nextMultiOffset: number;
  oldestXid: number;
  oldestXidDB: number;
  oldestMulti: number;
  oldestMultiDB: number;
  /** Unix seconds */
  time: bigint;
  oldestCommitTsXid: number;
  newestCommitTsXid: number;
  oldestActiveXid: number;
}

export interface ControlFile {
  pgVersion: PgMajor;
  systemId: bigint;
  pgControlVersion: number;
  catalogVersion: number;
  stateCode: number;
  state: DbState;
  /** Unix seconds of the last update */
  time: bigint;
  checkpointLsn: Lsn;
  checkpoint: CheckPoint;
  unloggedLsn: Lsn;
  minRecoveryPoint: Lsn;
  minRecoveryPointTLI: number;
  backupStartPoint: Lsn;
  backupEndPoint: Lsn;
  backupEndRequired: boolean;
  walLevelCode: number;
  walLevel: WalLevel;
  walLogHints: boolean;
  maxConnections: number;
  maxWorkerProcesses: number;
  maxWalSenders: number;
  maxPreparedXacts: number;
  maxLocksPerXact: number;
  trackCommitTimestamp: boolean;
  maxAlign: number;
  floatFormat: number;
  blockSize: number;
  relSegSize: number;
  walBlockSize: number;
  walSegmentSize: number;
  nameDataLen: number;
  indexMaxKeys: number;
  toastMaxChunkSize: number;
  largeObjectChunkSize: number;
  float8ByVal: boolean;
  /** 12 only */
  float4ByVal?: boolean;
  dataChecksumVersion: number;
  /** 18+: whether plain `char` was signed on the platform that ran initdb (pg_control_init().default_char_signedness) */
  defaultCharSignedness?: boolean;
  mockAuthNonce: string;
  crc: number;
  computedCrc: number;
  crcValid: boolean;
}

export function parseCheckPoint(r: ByteReader): CheckPoint {
  const redo = r.u64();
  const thisTimeLineID = r.u32();
  const prevTimeLineID = r.u32();
  const fullPageWrites = r.bool();
  r.skip(7);
  const nextXid = r.u64();
  const nextOid = r.u32();
  const nextMulti = r.u32();
  const nextMultiOffset = r.u32();
  const oldestXid = r.u32();
  const oldestXidDB = r.u32();
  const oldestMulti = r.u32();
  const oldestMultiDB = r.u32();
  r.skip(4);
  const time = r.i64();
  const oldestCommitTsXid = r.u32();
  const newestCommitTsXid = r.u32();
  const oldestActiveXid = r.u32();
  r.skip(4);
  return {
    redo,
    thisTimeLineID,
    prevTimeLineID,
    fullPageWrites,
    nextXid,
    nextXidEpoch: Number(nextXid >> 32n),
    nextXidXid: Number(nextXid & 0xffffffffn),
    nextOid,
    nextMulti,
    nextMultiOffset,
    oldestXid,
    oldestXidDB,
    oldestMulti,
    oldestMultiDB,
    time,
    oldestCommitTsXid,
    newestCommitTsXid,
    oldestActiveXid,
  };
}

export interface ParseControlOptions {
  file?: string;
  /** report crcValid=false instead of throwing */
  allowBadCrc?: boolean;
}

export function parseControlFile(bytes: Uint8Array, opts: ParseControlOptions = {}): ControlFile {
  const file = opts.file;
  if (bytes.length < CONTROL_DATA_SIZE) {
    throw new ControlFileError('pg_control file too short', {
      file,
      offset: bytes.length,
      expected: `${PG_CONTROL_FILE_SIZE} bytes`,
      got: `${bytes.length} bytes`,
    });
  }
  const r = new ByteReader(bytes, 0, CONTROL_DATA_SIZE, 0, 'control', 'pg_control');
  const systemId = r.u64();
  const pgControlVersion = r.u32();
  const catalogVersion = r.u32();
  const major = majorFromControlVersion(pgControlVersion, catalogVersion);
  if (major === undefined) {
    throw new ControlFileError('unsupported pg_control version', {
      file,
      offset: 8,
      expected: 'pg_control_version 1201 (PG 12), 1300 (13-16), 1700 (17) or 1800 (18) with a matching catalog version',
      got: `pg_control_version ${pgControlVersion}, catalog version ${catalogVersion}`,
    });
  }
  const crcOffset = controlCrcOffset(major);
  const crc = new DataView(bytes.buffer, bytes.byteOffset + crcOffset, 4).getUint32(0, true);
  const computedCrc = crc32c(bytes.subarray(0, crcOffset));
  if (crc !== computedCrc && !opts.allowBadCrc) {
    throw new ControlFileError('incorrect checksum in control file', {
      file,
      offset: crcOffset,
      expected: `0x${computedCrc.toString(16).padStart(8, '0')}`,
      got: `0x${crc.toString(16).padStart(8, '0')}`,
    });
  }
  if (bytes.length !== PG_CONTROL_FILE_SIZE && !opts.allowBadCrc) {
    throw new ControlFileError('pg_control file has the wrong size', {
      file,
      offset: Math.min(bytes.length, PG_CONTROL_FILE_SIZE),
      expected: `${PG_CONTROL_FILE_SIZE} bytes`,
      got: `${bytes.length} bytes`,
    });
  }
  const stateCode = r.u32();
  r.skip(4);
  const time = r.i64();
  const checkpointLsn = r.u64();
  r.seek(CHECKPOINT_OFF);
  const checkpoint = parseCheckPoint(r);
  const unloggedLsn = r.u64();
  const minRecoveryPoint = r.u64();
  const minRecoveryPointTLI = r.u32();
  r.skip(4);
  const backupStartPoint = r.u64();
  const backupEndPoint = r.u64();
  const backupEndRequired = r.bool();
  r.skip(3);
  const walLevelCode = r.u32();
  const walLogHints = r.bool();
  r.skip(3);
  const maxConnections = r.u32();
  const maxWorkerProcesses = r.u32();
  const maxWalSenders = r.u32();
  const maxPreparedXacts = r.u32();
  const maxLocksPerXact = r.u32();
  const trackCommitTimestamp = r.bool();
  r.skip(3);
  const maxAlign = r.u32();
  const floatFormat = r.f64();
  const blockSize = r.u32();
  const relSegSize = r.u32();
  const walBlockSize = r.u32();
  const walSegmentSize = r.u32();
  const nameDataLen = r.u32();
  const indexMaxKeys = r.u32();
  const toastMaxChunkSize = r.u32();
  const largeObjectChunkSize = r.u32();
  let float4ByVal: boolean | undefined;
  let float8ByVal: boolean;
  if (major === 12) {
    float4ByVal = r.bool();
    float8ByVal = r.bool();
    r.skip(2);
  } else {
    float8ByVal = r.bool();
    r.skip(3);
  }
  const dataChecksumVersion = r.u32();
  const defaultCharSignedness = major >= 18 ? r.bool() : undefined;
  const nonce = Buffer.from(r.bytesView(32)).toString('hex');
  const state = DB_STATES[stateCode];
  if (state === undefined) {
    throw new ControlFileError('invalid database cluster state in pg_control', { file, offset: 16, expected: '0..6', got: String(stateCode) });
  }
  const walLevel = WAL_LEVELS[walLevelCode];
  if (walLevel === undefined) {
    throw new ControlFileError('invalid wal_level in pg_control', { file, offset: 172, expected: '0..2', got: String(walLevelCode) });
  }
  return {
    pgVersion: major,
    systemId,
    pgControlVersion,
    catalogVersion,
    stateCode,
    state,
    time,
    checkpointLsn,
    checkpoint,
    unloggedLsn,
    minRecoveryPoint,
    minRecoveryPointTLI,
    backupStartPoint,
    backupEndPoint,
    backupEndRequired,
    walLevelCode,
    walLevel,
    walLogHints,
    maxConnections,
    maxWorkerProcesses,
    maxWalSenders,
    maxPreparedXacts,
    maxLocksPerXact,
    trackCommitTimestamp,
    maxAlign,
    floatFormat,
    blockSize,
    relSegSize,
    walBlockSize,
    walSegmentSize,
    nameDataLen,
    indexMaxKeys,
    toastMaxChunkSize,
    largeObjectChunkSize,
    float8ByVal,
    float4ByVal,
    dataChecksumVersion,
    defaultCharSignedness,
    mockAuthNonce: nonce,
    crc,
    computedCrc,
    crcValid: crc === computedCrc,
  };
}

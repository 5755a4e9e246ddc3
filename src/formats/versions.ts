/**
 * PostgreSQL major versions pgha reads, and the on-disk version markers that identify them.
 * Sources: xlog_internal.h (XLOG_PAGE_MAGIC), pg_control.h + catversion.h, slot.c (SLOT_VERSION);
 * every value verified against real files (shared/reference/pg-formats.md §1.4, §3.1, §4.3; 18 from
 * 18.4 files checked against its own SQL in test/multiversion).
 */
export type PgMajor = 12 | 13 | 14 | 15 | 16 | 17 | 18;
export const SUPPORTED_MAJORS: readonly PgMajor[] = [12, 13, 14, 15, 16, 17, 18];
/** "PG 12-18", for messages */
export const SUPPORTED_RANGE = `PG ${SUPPORTED_MAJORS[0]}-${SUPPORTED_MAJORS[SUPPORTED_MAJORS.length - 1]}`;

const PAGE_MAGIC: ReadonlyMap<number, PgMajor> = new Map([
  [0xd101, 12],
  [0xd106, 13],
  [0xd10d, 14],
  [0xd110, 15],
  [0xd113, 16],
  [0xd116, 17],
  // 18: read from real 18.4 segments (the first page of every segment, every page header)
  [0xd118, 18],
]);

/** XLOG_PAGE_MAGIC → major, or undefined for an unknown WAL format. */
export function majorFromPageMagic(magic: number): PgMajor | undefined {
  return PAGE_MAGIC.get(magic);
}

export function pageMagicOf(major: PgMajor): number {
  for (const [magic, m] of PAGE_MAGIC) if (m === major) return magic;
  throw new RangeError(`no page magic for ${major}`);
}

export const KNOWN_PAGE_MAGICS: readonly number[] = [...PAGE_MAGIC.keys()];

/** "D101, D106, …" — every known XLOG_PAGE_MAGIC, for messages */
export const KNOWN_PAGE_MAGICS_TEXT = KNOWN_PAGE_MAGICS.map((m) => m.toString(16).toUpperCase()).join(', ');

/**
 * (pg_control_version, catalog_version_no) → major. 13–16 share pg_control_version 1300, so the
 * catalog version (a yyyymmddN date stamp) decides: each major's catversion lies in its own range.
 */
export function majorFromControlVersion(controlVersion: number, catalogVersion: number): PgMajor | undefined {
  if (controlVersion === 1201) return 12;
  if (controlVersion === 1700) return 17;
  if (controlVersion === 1800) return 18;
  if (controlVersion !== 1300) return undefined;
  // catversion of each major's release branch: 13 = 2020xxxx, 14 = 2021xxxx, 15 = 2022xxxx, 16 = 2023xxxx
  if (catalogVersion >= 202007000 && catalogVersion < 202107000) return 13;
  if (catalogVersion >= 202107000 && catalogVersion < 202207000) return 14;
  if (catalogVersion >= 202207000 && catalogVersion < 202307000) return 15;
  if (catalogVersion >= 202307000 && catalogVersion < 202407000) return 16;
  return undefined;
}

/** Replication slot on-disk layout per major: SLOT_VERSION and the exact slotdata length. */
export interface SlotLayout {
  version: number;
  length: number;
}
export const SLOT_LAYOUTS: Readonly<Record<PgMajor, SlotLayout>> = {
  12: { version: 2, length: 160 },
  13: { version: 2, length: 168 },
  14: { version: 2, length: 184 },
  15: { version: 2, length: 184 },
  16: { version: 3, length: 184 },
  17: { version: 5, length: 184 },
  // 18 writes exactly 17's layout (SLOT_VERSION 5, 184 bytes; failover at 178, synced at 177): the
  // bytes cannot tell 17 from 18, only the data directory's pg_control can. inactive_since,
  // invalidation_reason's text and conflicting are in memory only, not in the file.
  18: { version: 5, length: 184 },
};

/**
 * The backup repository's layout over a Storage:
 *
 *   pgha-repo.json                               the cluster it belongs to (system identifier,
 *                                                segment size, PostgreSQL major, compression)
 *   wal/<TLI>/<file name>.<sha256>[.gz|.br]      archived WAL by timeline: segments, .partial,
 *                                                <TLI>.history, .backup files; the sha256 (of the
 *                                                uncompressed bytes) is in the key
 *   backups/<label>/base.tar[.gz|.br]            pg_basebackup's tar stream (with its WAL and
 *                                                backup_manifest)
 *   backups/<label>/manifest.json                written last: a backup without it is incomplete;
 *                                                carries its own sha256
 */
import { formatLsn, parseLsn, parseWalFileName, type Lsn, type WalFileKind } from '../formats/lsn.js';
import { parseHistory, type TimelineHistory } from '../formats/timeline-history.js';
import { COMPRESSION_EXT, compressionOfKey, decompressBuffer, sha256, type Compression } from './codec.js';
import { LocalStorage, StorageNotFound, type Storage, type StoredObject } from './storage.js';

/** A refusal or a finding about the repository's content: exit 1 (bad usage and I/O errors: 2). */
export class RepoProblem extends Error {}

export interface RepoConfig {
  format: 'pgha-repo/1';
  systemId: string;
  segmentSize: number;
  pgVersion: number;
  compression: Compression;
  createdAt: string;
}

export interface WalEntry {
  key: string;
  name: string;
  kind: WalFileKind;
  tli: number;
  segno?: bigint;
  sha256: string;
  compression: Compression;
  storedSize: number;
  mtimeMs: number;
}

export interface BackupFile {
  path: string;
  size: number;
  sha256: string;
}

export interface BackupManifest {
  format: 'pgha-backup/1';
  label: string;
  /** redo point of the backup's checkpoint (backup_label's START WAL LOCATION) */
  startLsn: string;
  /** the end of the WAL the backup needs to be consistent (backup_manifest's WAL-Ranges) */
  stopLsn: string;
  timeline: number;
  stopTimeline: number;
  startTime: string;
  stopTime: string;
  pgVersion: number;
  systemId: string;
  segmentSize: number;
  /** where it was taken: conninfo without password, and whether that server was a standby */
  source: { conninfo: string; standby: boolean };
  object: { key: string; compression: Compression; size: number; sha256: string; storedSize: number };
  /** every file of the data directory (PostgreSQL's backup_manifest list; WAL files included apart) */
  files: BackupFile[];
  walFiles: BackupFile[];
  /** sha256 of this JSON without the field */
  checksum?: string;
}

export interface BackupListing {
  label: string;
  manifest: BackupManifest | null;
  /** why the manifest is unusable (null when fine) */
  problem: string | null;
}

const WAL_KEY = /^wal\/([0-9A-F]{8})\/(.+)\.([0-9a-f]{64})(\.gz|\.br)?$/;
export const CONFIG_KEY = 'pgha-repo.json';
export const MAX_HISTORY_BYTES = 1 << 20;
export const MAX_BACKUP_HISTORY_BYTES = 64 << 10;
export const MAX_MANIFEST_BYTES = 256 << 20;

const hex8 = (n: number) => n.toString(16).toUpperCase().padStart(8, '0');

export function walKey(name: string, tli: number, sha: string, c: Compression): string {
  return `wal/${hex8(tli)}/${name}.${sha}${COMPRESSION_EXT[c]}`;
}

export function manifestKey(label: string): string {
  return `backups/${label}/manifest.json`;
}

/** serialize a manifest with its checksum (sha256 of the JSON without it) */
export function sealManifest(m: BackupManifest): string {
  const { checksum: _drop, ...body } = m;
  const text = JSON.stringify(body);
  return JSON.stringify({ ...body, checksum: sha256(Buffer.from(text)) }, null, 1) + '\n';
}

/** parse and check a manifest; throws RepoProblem with the key and what is wrong */
export function openManifest(text: string, key: string): BackupManifest {
  let m: BackupManifest;
  try {
    m = JSON.parse(text) as BackupManifest;
  } catch (e) {
    throw new RepoProblem(`${key}: corrupt backup manifest: not valid JSON (${(e as Error).message})`);
  }
  if (m === null || typeof m !== 'object' || m.format !== 'pgha-backup/1') throw new RepoProblem(`${key}: corrupt backup manifest: expected format "pgha-backup/1", got ${JSON.stringify((m as { format?: unknown })?.format ?? null)}`);
  const { checksum, ...body } = m;
  const want = sha256(Buffer.from(JSON.stringify(body)));
  if (checksum !== want) throw new RepoProblem(`${key}: corrupt backup manifest: checksum mismatch (expected sha256:${want}, got ${checksum ? `sha256:${checksum}` : 'none'})`);
  try {
    parseLsn(m.startLsn);
    parseLsn(m.stopLsn);
  } catch {
    throw new RepoProblem(`${key}: corrupt backup manifest: bad start or stop LSN`);
  }
  return m;
}

async function readAll(s: AsyncIterable<Buffer | string>, max: number, what: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of s) {
    const b = typeof c === 'string' ? Buffer.from(c) : c;
    n += b.length;
    if (n > max) throw new RepoProblem(`${what}: larger than ${max} bytes`);
    parts.push(b);
  }
  return Buffer.concat(parts, n);
}

export class Repository {
  private configCache: RepoConfig | null = null;

  constructor(readonly storage: Storage) {}

  static local(dir: string): Repository {
    return new Repository(new LocalStorage(dir));
  }

  get location(): string {
    return this.storage.location;
  }

  async readObject(key: string, max: number): Promise<Buffer> {
    return readAll(await this.storage.get(key), max, `${this.location}/${key}`);
  }

  async config(): Promise<RepoConfig | null> {
    if (this.configCache) return this.configCache;
    let text: Buffer;
    try {
      text = await this.readObject(CONFIG_KEY, 1 << 16);
    } catch (e) {
      if (e instanceof StorageNotFound) return null;
      throw e;
    }
    try {
      const c = JSON.parse(text.toString('utf8')) as RepoConfig;
      if (c.format !== 'pgha-repo/1' || typeof c.systemId !== 'string' || typeof c.segmentSize !== 'number') throw new Error('unexpected content');
      return (this.configCache = c);
    } catch (e) {
      throw new RepoProblem(`${this.location}/${CONFIG_KEY}: corrupt repository description (${(e as Error).message})`);
    }
  }

  /**
   * The repository's description: created by the first writer; afterwards every writer must be of
   * the same cluster (system identifier, segment size) — a foreign cluster's WAL or backup is refused.
   */
  async ensureConfig(want: Omit<RepoConfig, 'format' | 'createdAt' | 'compression'> & { compression?: Compression }, what: string): Promise<RepoConfig> {
    let have = await this.config();
    if (!have) {
      const c: RepoConfig = { format: 'pgha-repo/1', systemId: want.systemId, segmentSize: want.segmentSize, pgVersion: want.pgVersion, compression: want.compression ?? 'gzip', createdAt: new Date().toISOString() };
      await this.storage.put(CONFIG_KEY, Buffer.from(JSON.stringify(c, null, 1) + '\n'), { ifAbsent: true });
      this.configCache = null;
      have = (await this.config())!;
    }
    if (have.systemId !== want.systemId) {
      throw new RepoProblem(`${what} belongs to database system ${want.systemId}, this repository (${this.location}) to system ${have.systemId}`);
    }
    if (have.segmentSize !== want.segmentSize) {
      throw new RepoProblem(`${what} has ${want.segmentSize}-byte WAL segments, this repository ${have.segmentSize}-byte ones`);
    }
    return have;
  }

  /** every archived WAL, history and backup-history file (segment numbers need the repository's segment size) */
  async walEntries(): Promise<WalEntry[]> {
    const cfg = await this.config();
    return (await this.storage.list('wal/')).flatMap((o) => {
      const e = parseWalKey(o, cfg?.segmentSize);
      return e ? [e] : [];
    });
  }

  /** the archived versions of one file name (more than one: a conflict) */
  async findWal(name: string): Promise<WalEntry[]> {
    const info = parseWalFileName(name);
    if (!info) throw new RepoProblem(`not a WAL, history or backup file name: ${JSON.stringify(name)}`);
    const cfg = await this.config();
    return (await this.storage.list(`wal/${hex8(info.tli)}/`)).flatMap((o) => {
      const e = parseWalKey(o, cfg?.segmentSize);
      return e && e.name === name ? [e] : [];
    });
  }

  /** an archived file's bytes, decompressed and checked against the sha256 in its key */
  async readWal(e: WalEntry, maxBytes: number, opts: { allowMismatch?: boolean } = {}): Promise<{ bytes: Buffer; checksumOk: boolean }> {
    const stored = await this.readObject(e.key, maxBytes + (1 << 20));
    let bytes: Buffer;
    try {
      bytes = await decompressBuffer(stored, e.compression, maxBytes);
    } catch (err) {
      throw new RepoProblem(`${this.location}/${e.key}: cannot be decompressed (${(err as Error).message})`);
    }
    const got = sha256(bytes);
    if (got !== e.sha256 && !opts.allowMismatch) {
      throw new RepoProblem(`${this.location}/${e.key}: checksum mismatch (expected sha256:${e.sha256}, got sha256:${got})`);
    }
    return { bytes, checksumOk: got === e.sha256 };
  }

  /** the timeline history of `tli` from the archive (undefined for timeline 1 or when not archived) */
  async history(tli: number, entries?: WalEntry[]): Promise<TimelineHistory | undefined> {
    if (tli <= 1) return undefined;
    const name = `${hex8(tli)}.history`;
    const found = (entries ?? (await this.findWal(name))).filter((e) => e.name === name);
    if (found.length === 0) return undefined;
    const { bytes } = await this.readWal(found[0], MAX_HISTORY_BYTES);
    return parseHistory(bytes, tli, `${this.location}/${found[0].key}`);
  }

  async backups(): Promise<BackupListing[]> {
    const objects = await this.storage.list('backups/');
    const labels = [...new Set(objects.map((o) => o.key.split('/')[1]))];
    const out: BackupListing[] = [];
    for (const label of labels) {
      const key = manifestKey(label);
      if (!objects.some((o) => o.key === key)) {
        out.push({ label, manifest: null, problem: `incomplete backup (no ${key})` });
        continue;
      }
      try {
        const m = openManifest((await this.readObject(key, MAX_MANIFEST_BYTES)).toString('utf8'), `${this.location}/${key}`);
        if (m.label !== label) throw new RepoProblem(`${this.location}/${key}: manifest of backup ${m.label} under ${label}`);
        out.push({ label, manifest: m, problem: null });
      } catch (e) {
        if (!(e instanceof RepoProblem)) throw e;
        out.push({ label, manifest: null, problem: e.message });
      }
    }
    // oldest first, by where they start
    return out.sort((a, b) => {
      const la = a.manifest ? parseLsn(a.manifest.startLsn) : -1n;
      const lb = b.manifest ? parseLsn(b.manifest.startLsn) : -1n;
      return la === lb ? a.label.localeCompare(b.label) : la < lb ? -1 : 1;
    });
  }

  async manifest(label: string): Promise<BackupManifest> {
    const key = manifestKey(label);
    let text: Buffer;
    try {
      text = await this.readObject(key, MAX_MANIFEST_BYTES);
    } catch (e) {
      if (e instanceof StorageNotFound) throw new RepoProblem(`no backup ${label} in ${this.location} (no ${key})`);
      throw e;
    }
    return openManifest(text.toString('utf8'), `${this.location}/${key}`);
  }
}

export function parseWalKey(o: StoredObject, segmentSize?: number): WalEntry | null {
  const m = WAL_KEY.exec(o.key);
  if (!m) return null;
  const info = parseWalFileName(m[2], segmentSize);
  if (!info || hex8(info.tli) !== m[1]) return null;
  return { key: o.key, name: m[2], kind: info.kind, tli: info.tli, segno: info.segno, sha256: m[3], compression: compressionOfKey(o.key), storedSize: o.size, mtimeMs: o.mtimeMs };
}

export const lsnText = (l: Lsn): string => formatLsn(l);

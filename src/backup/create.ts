/**
 * `pgha backup create`: pg_basebackup's tar stream (`-D - -Ft -X fetch`, with PostgreSQL's own
 * backup_manifest and SHA-256 file checksums) goes straight into the repository, compressed,
 * while every file in it is hashed and checked against that backup_manifest — no staging copy of
 * the data directory, so an object store could take it as it comes. The backup holds the WAL it
 * needs to be consistent (fetched by pg_basebackup); the archive carries on from its start.
 * From a standby when one is streaming and `preferStandby` is asked.
 */
import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tarStream from 'tar-stream';
import { parseControlFile } from '../formats/control.js';
import { formatLsn, parseLsn } from '../formats/lsn.js';
import { COMPRESSION_EXT, compressStream, DEFAULT_LEVEL, HashingStream, type Compression } from './codec.js';
import { manifestKey, RepoProblem, sealManifest, type BackupFile, type BackupManifest, type Repository } from './repo.js';
import { psqlRow, redactConninfo, startTool } from './tools.js';

export interface CreateOptions {
  repo: Repository;
  /** libpq conninfo strings of candidate servers (a primary and standbys) */
  sources: string[];
  /** take it from a streaming standby when one of the sources is */
  preferStandby?: boolean;
  binDir: string;
  label?: string;
  compression?: Compression;
  level?: number;
  onProgress?: (doneBytes: number, totalBytes: number | null) => void;
  log?: (msg: string) => void;
}

export interface SourceProbe {
  conninfo: string;
  reachable: boolean;
  standby: boolean;
  streaming: boolean;
  systemId: string | null;
  error?: string;
}

export async function probeSource(binDir: string, conninfo: string): Promise<SourceProbe> {
  try {
    const [rec, status, sysid] = await psqlRow(binDir, conninfo, "SELECT pg_is_in_recovery(), coalesce((SELECT status FROM pg_stat_wal_receiver), ''), (SELECT system_identifier FROM pg_control_system())");
    return { conninfo, reachable: true, standby: rec === 't', streaming: status === 'streaming', systemId: sysid ?? null };
  } catch (e) {
    return { conninfo, reachable: false, standby: false, streaming: false, systemId: null, error: (e as Error).message };
  }
}

/** which source to copy: the first streaming standby when preferred, else the first that answers */
export function chooseSource(probes: SourceProbe[], preferStandby: boolean): SourceProbe | null {
  const up = probes.filter((p) => p.reachable);
  if (preferStandby) {
    const standby = up.find((p) => p.standby && p.streaming);
    if (standby) return standby;
    return up.find((p) => !p.standby) ?? up[0] ?? null;
  }
  return up[0] ?? null;
}

const INTERESTING = new Set(['backup_label', 'backup_manifest', 'global/pg_control', 'PG_VERSION']);

function defaultLabel(now = new Date()): string {
  return now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

interface PgBackupManifest {
  'PostgreSQL-Backup-Manifest-Version': number;
  Files: Array<{ Path: string; Size: number; 'Checksum-Algorithm'?: string; Checksum?: string }>;
  'WAL-Ranges': Array<{ Timeline: number; 'Start-LSN': string; 'End-LSN': string }>;
}

export async function createBackup(o: CreateOptions): Promise<BackupManifest> {
  if (o.sources.length === 0) throw new RepoProblem('no source to take a backup from');
  const probes = await Promise.all(o.sources.map((s) => probeSource(o.binDir, s)));
  const source = chooseSource(probes, o.preferStandby === true);
  if (!source) throw new RepoProblem(`no source answers: ${probes.map((p) => `${redactConninfo(p.conninfo)}: ${p.error}`).join('; ')}`);
  o.log?.(`backup from ${redactConninfo(source.conninfo)} (${source.standby ? 'standby' : 'primary'})`);
  const existingCfg = await o.repo.config();
  if (existingCfg && source.systemId && existingCfg.systemId !== source.systemId) {
    throw new RepoProblem(`the source ${redactConninfo(source.conninfo)} is database system ${source.systemId}, this repository (${o.repo.location}) holds system ${existingCfg.systemId}`);
  }
  const compression = existingCfg?.compression ?? o.compression ?? 'gzip';
  let label = o.label ?? defaultLabel();
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(label)) throw new RepoProblem(`bad backup label ${JSON.stringify(label)}: letters, digits, '.', '_' and '-' only`);
  for (let i = 2; (await o.repo.storage.list(`backups/${label}/`)).length > 0; i++) {
    if (o.label) throw new RepoProblem(`a backup labelled ${label} exists in ${o.repo.location}`);
    label = `${defaultLabel()}-${i}`;
  }
  const objectKey = `backups/${label}/base.tar${COMPRESSION_EXT[compression]}`;
  const startTime = new Date();

  let total: number | null = null;
  const run = startTool(o.binDir, 'pg_basebackup', ['-d', source.conninfo, '-D', '-', '-F', 't', '-X', 'fetch', '-c', 'fast', '-P', '-l', `pgha ${label}`, '--manifest-checksums=SHA256'], {
    onStderr: (text) => {
      for (const m of text.matchAll(/(\d+)\/(\d+) kB/g)) total = Number(m[2]) * 1024;
    },
  });
  const raw = new HashingStream((n) => o.onProgress?.(n, total));
  const extract = tarStream.extract();
  // every byte goes to the compressor and to the tar reader that checks the files as they pass
  const tee = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      if (extract.write(chunk)) cb(null, chunk);
      else extract.once('drain', () => cb(null, chunk));
    },
    flush(cb: TransformCallback) {
      (extract as unknown as { end(): void }).end();
      cb();
    },
  });
  const compress = compressStream(compression, o.level ?? DEFAULT_LEVEL[compression]);
  const stored = new HashingStream();
  const files: BackupFile[] = [];
  const kept = new Map<string, Buffer>();
  const entries = (async () => {
    for await (const entry of extract) {
      const name = entry.header.name.replace(/^\.\//, '').replace(/\/$/, '');
      const h = createHash('sha256');
      let size = 0;
      const keep: Buffer[] | null = INTERESTING.has(name) ? [] : null;
      for await (const chunk of entry as AsyncIterable<Buffer>) {
        h.update(chunk);
        size += chunk.length;
        keep?.push(chunk);
      }
      if (entry.header.type === 'file' || entry.header.type === 'contiguous-file') {
        files.push({ path: name, size, sha256: h.digest('hex') });
        if (keep) kept.set(name, Buffer.concat(keep));
      } else if (entry.header.type !== 'directory') {
        throw new RepoProblem(`the base backup holds ${entry.header.type} ${name}: tablespaces and links are not supported`);
      }
    }
  })();
  const put = o.repo.storage.put(objectKey, stored);
  try {
    const chain = pipeline(run.child.stdout, raw, tee, compress, stored);
    const [r] = await Promise.all([run.done, chain, put, entries]);
    if (r.status !== 0) throw new RepoProblem(`pg_basebackup failed (exit ${r.status ?? r.signal}): ${r.stderr.trim().split('\n').filter((l) => !/kB \(/.test(l)).slice(-2).join(' | ')}`);
  } catch (e) {
    run.child.kill('SIGTERM');
    await run.done;
    await o.repo.storage.delete(objectKey).catch(() => undefined);
    if (e instanceof RepoProblem) throw e;
    const r = await run.done;
    const why = r.status !== 0 && r.stderr.trim() ? `pg_basebackup: ${r.stderr.trim().split('\n').filter((l) => !/kB \(/.test(l)).slice(-2).join(' | ')}` : (e as Error).message;
    throw new RepoProblem(`backup failed: ${why}`);
  }
  const stopTime = new Date();
  try {
    return await finish();
  } catch (e) {
    await o.repo.storage.delete(objectKey).catch(() => undefined);
    throw e;
  }

  async function finish(): Promise<BackupManifest> {
    const need = (n: string) => {
      const b = kept.get(n);
      if (!b) throw new RepoProblem(`the base backup stream has no ${n}`);
      return b;
    };
    const labelText = need('backup_label').toString('utf8');
    const field = (k: string) => new RegExp(`^${k}: (.*)$`, 'm').exec(labelText)?.[1];
    const startLsn = parseLsn((field('START WAL LOCATION') ?? '').split(' ')[0]);
    const timeline = Number(field('START TIMELINE'));
    const control = parseControlFile(need('global/pg_control'), { file: 'global/pg_control' });
    let pgManifest: PgBackupManifest;
    try {
      pgManifest = JSON.parse(need('backup_manifest').toString('utf8')) as PgBackupManifest;
    } catch (e) {
      throw new RepoProblem(`backup_manifest from pg_basebackup is not JSON: ${(e as Error).message}`);
    }
    // PostgreSQL's manifest against what actually came through
    const byPath = new Map(files.map((f) => [f.path, f]));
    for (const f of pgManifest.Files) {
      const got = byPath.get(f.Path);
      if (!got) throw new RepoProblem(`backup_manifest lists ${f.Path}, the tar stream lacks it`);
      if (got.size !== f.Size || (f['Checksum-Algorithm'] === 'SHA256' && got.sha256 !== f.Checksum)) {
        throw new RepoProblem(`${f.Path}: the tar stream's copy differs from backup_manifest (size ${got.size} vs ${f.Size}, sha256 ${got.sha256} vs ${f.Checksum})`);
      }
    }
    const ranges = pgManifest['WAL-Ranges'];
    const last = ranges[ranges.length - 1];
    const manifest: BackupManifest = {
      format: 'pgha-backup/1',
      label,
      startLsn: formatLsn(startLsn),
      stopLsn: formatLsn(parseLsn(last['End-LSN'])),
      timeline,
      stopTimeline: last.Timeline,
      startTime: startTime.toISOString(),
      stopTime: stopTime.toISOString(),
      pgVersion: control.pgVersion,
      systemId: control.systemId.toString(),
      segmentSize: control.walSegmentSize,
      source: { conninfo: redactConninfo(source!.conninfo), standby: /^BACKUP FROM: standby$/m.test(labelText) },
      object: { key: objectKey, compression, size: raw.bytes, sha256: raw.sha256, storedSize: stored.bytes },
      files: files.filter((f) => !f.path.startsWith('pg_wal/')),
      walFiles: files.filter((f) => f.path.startsWith('pg_wal/')),
    };
    await o.repo.ensureConfig({ systemId: manifest.systemId, segmentSize: manifest.segmentSize, pgVersion: manifest.pgVersion, compression }, `the backup of ${redactConninfo(source!.conninfo)}`);
    await o.repo.storage.put(manifestKey(label), Buffer.from(sealManifest(manifest)));
    return manifest;
  }
}

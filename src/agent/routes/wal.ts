/**
 * walFiles, walFile: list, serve and receive WAL and history files (names checked, writes atomic).
 * An upload never replaces a file with other content, never writes a segment the server may be
 * using, is bounded in size and time, and lands only when its content is what its name says.
 */
import { createReadStream, existsSync } from 'node:fs';
import { join } from 'node:path';
import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { readControl, readNodeHistory, walDir } from '../../datadir/node-state.js';
import { readHistoryBytes } from '../../wal/bounded-read.js';
import type { ControlFile } from '../../formats/control.js';
import { FormatError } from '../../formats/errors.js';
import { historyFileName, parseLsn, parseTimelineId, parseWalFileName, segmentOf, segmentStartLsn } from '../../formats/lsn.js';
import { parseHistory, type TimelineHistory } from '../../formats/timeline-history.js';
import { SIZE_OF_XLOG_LONG_PHD } from '../../formats/wal/constants.js';
import { pageMagicOf } from '../../formats/versions.js';
import { checkWalName, digestFile, filesToFollow, receiveFile } from '../../ship/files.js';
import { AgentApiError } from '../api-error.js';
import {
  checkBackupContent,
  checkContentLength,
  checkHistoryContent,
  checkNotInUse,
  checkSegmentHead,
  uploadSize,
  type ServerPosition,
} from '../../ship/upload-rules.js';
import type { AgentContext } from '../server.js';

/** how long an upload may take: the whole body, and the longest pause between two chunks */
export interface UploadTimeouts {
  deadlineMs: number;
  idleMs: number;
}
export const DEFAULT_UPLOAD_TIMEOUTS: UploadTimeouts = { deadlineMs: 120_000, idleMs: 30_000 };

/**
 * Where the server is: with it running, its insert position (primary) or receive/replay position
 * (standby) and the lowest timeline it may be on, through SQL; stopped (or not answering SQL yet),
 * pg_control's REDO point — where recovery will start reading — and checkpoint timeline.
 */
export async function serverPosition(ctx: AgentContext, control: ControlFile): Promise<ServerPosition> {
  const running = ctx.pg.isRunning();
  const fromControl: ServerPosition = {
    running,
    tli: Math.min(control.checkpoint.thisTimeLineID, control.minRecoveryPointTLI || control.checkpoint.thisTimeLineID),
    lsn: control.checkpoint.redo,
    source: 'pg_control',
  };
  if (!running) return fromControl;
  try {
    const [r] = await ctx.pg.query<{ pos: string | null; tli: number | null; ctli: number | null }>(`
      SELECT CASE WHEN pg_is_in_recovery()
                  THEN greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text
                  ELSE pg_current_wal_insert_lsn()::text END AS pos,
             CASE WHEN pg_is_in_recovery()
                  THEN (SELECT received_tli FROM pg_stat_wal_receiver)
                  ELSE ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int END AS tli,
             (SELECT timeline_id FROM pg_control_checkpoint()) AS ctli`);
    if (!r?.pos) return fromControl;
    const tlis = [r.tli, r.ctli].filter((t): t is number => typeof t === 'number' && t > 0);
    return { running, tli: tlis.length ? Math.min(...tlis) : fromControl.tli, lsn: parseLsn(r.pos), source: 'sql' };
  } catch {
    // not accepting connections (starting, in crash recovery): the REDO point is the safe bound
    return fromControl;
  }
}

export function registerWalRoutes(app: FastifyInstance, ctx: AgentContext, timeouts: UploadTimeouts = DEFAULT_UPLOAD_TIMEOUTS): void {
  const dir = walDir(ctx.cfg.pgdata);
  const onSkip = (file: string, e: FormatError) => app.log.warn({ file, err: e.describe() }, 'history file passed over: not readable as one');
  // uploads in progress are cut when the agent shuts down (their temp files go with them)
  const uploading = new Set<IncomingMessage>();
  app.addHook('preClose', async () => {
    for (const r of uploading) r.socket?.destroy();
  });

  const list = async (tli: number, lsnText: string) => {
    const control = readControl(ctx.cfg.pgdata);
    let lsn: bigint;
    try {
      lsn = parseLsn(lsnText.replace('-', '/'));
    } catch (e) {
      throw new AgentApiError((e as Error).message, 400, 'BAD_ARGUMENT');
    }
    const pos = await serverPosition(ctx, control);
    const names = filesToFollow(dir, readNodeHistory(ctx.cfg.pgdata, control, { onSkip }), control.walSegmentSize, tli, lsn, {
      systemId: control.systemId,
      currentSegno: pos.running && pos.source === 'sql' ? segmentOf(pos.lsn, control.walSegmentSize) : undefined,
    });
    return { files: await Promise.all(names.map((n) => digestFile(join(dir, n), n))) };
  };

  const byPoint = async (tliText: string, lsnText: string) => {
    let tli: number;
    try {
      tli = parseTimelineId(tliText);
    } catch (e) {
      throw new AgentApiError((e as Error).message, 400, 'BAD_ARGUMENT');
    }
    return list(tli, lsnText);
  };
  app.get<{ Params: { tli: string; hi: string; lo: string } }>('/api/pg/v1/walFiles/:tli/:hi/:lo', async (req) =>
    byPoint(req.params.tli, `${req.params.hi}/${req.params.lo}`),
  );
  app.get<{ Params: { tli: string; lsn: string } }>('/api/pg/v1/walFiles/:tli/:lsn', async (req) => byPoint(req.params.tli, req.params.lsn));

  app.get<{ Params: { name: string } }>('/api/pg/v1/walFiles/:name', async (req) => {
    const segSize = readControl(ctx.cfg.pgdata).walSegmentSize;
    const info = parseWalFileName(req.params.name, segSize);
    if (!info || info.segno === undefined) throw new AgentApiError(`not a WAL segment name: ${JSON.stringify(req.params.name)}`, 400, 'BAD_NAME');
    const start = segmentStartLsn(info.segno, segSize);
    return list(info.tli, `${(start >> 32n).toString(16)}/${(start & 0xffffffffn).toString(16)}`);
  });

  app.get<{ Params: { name: string } }>('/api/pg/v1/walFile/:name', async (req, reply) => {
    const { name } = req.params;
    checkWalName(name);
    const path = join(dir, name);
    if (!existsSync(path)) throw new AgentApiError(`${name} is not in pg_wal on ${ctx.cfg.name}`, 404, 'NOT_FOUND');
    const d = await digestFile(path, name);
    ctx.metrics.bytesSent.inc(d.size);
    reply.header('content-type', 'application/octet-stream').header('content-length', String(d.size)).header('x-checksum', `sha256:${d.sha256}`);
    return reply.send(createReadStream(path, { highWaterMark: 1 << 20 }));
  });

  app.put<{ Params: { name: string } }>('/api/pg/v1/walFile/:name', async (req, reply) => {
    const { name } = req.params;
    checkWalName(name);
    const header = String(req.headers['x-checksum'] ?? '');
    const m = /^sha256:([0-9a-f]{64})$/.exec(header);
    if (!m) throw new AgentApiError('X-Checksum: sha256:<64 lower-case hex digits> is required', 400, 'BAD_CHECKSUM_HEADER');
    if (typeof req.headers['content-type'] !== 'string' || !req.headers['content-type'].startsWith('application/octet-stream')) {
      throw new AgentApiError('Content-Type must be application/octet-stream', 415, 'BAD_CONTENT_TYPE');
    }
    const control = readControl(ctx.cfg.pgdata);
    const segSize = control.walSegmentSize;
    const info = parseWalFileName(name, segSize);
    if (!info || (info.kind !== 'history' && info.segno === undefined)) {
      throw new AgentApiError(`not a WAL, history or backup file name for ${segSize}-byte segments: ${JSON.stringify(name)}`, 400, 'BAD_NAME');
    }
    // before a byte of the body is read: its announced length, and whether the name may be written
    const limits = uploadSize(info, segSize);
    const length = req.headers['content-length'] !== undefined ? Number(req.headers['content-length']) : undefined;
    checkContentLength(name, length, limits);
    const notInUse = async () => checkNotInUse(info, await serverPosition(ctx, readControl(ctx.cfg.pgdata)), segSize);
    await notInUse();
    const cluster = { systemId: control.systemId, segmentSize: segSize, blockSize: control.walBlockSize, pageMagic: pageMagicOf(control.pgVersion) };
    const historyOf = (tli: number): TimelineHistory | undefined => {
      const path = join(dir, historyFileName(tli));
      if (!existsSync(path)) return undefined;
      try {
        return parseHistory(readHistoryBytes(path), tli, path);
      } catch (e) {
        if (e instanceof FormatError) return undefined;
        throw e;
      }
    };
    uploading.add(req.raw);
    const d = await receiveFile(dir, name, req.body as Readable, {
      sha256: m[1],
      size: limits.exact ?? length,
      maxSize: limits.max,
      head: info.kind === 'segment' || info.kind === 'partial' ? { bytes: SIZE_OF_XLOG_LONG_PHD, check: (head) => checkSegmentHead(head, info, cluster, historyOf) } : undefined,
      content: info.kind === 'history' ? (body) => void checkHistoryContent(body, info) : info.kind === 'backup' ? (body) => checkBackupContent(body, info, segSize) : undefined,
      idleMs: timeouts.idleMs,
      deadlineMs: timeouts.deadlineMs,
      existing: 'keep',
      // the server may have started meanwhile: decided again right before the file lands
      beforeCommit: notInUse,
    }).finally(() => uploading.delete(req.raw));
    if (d.created) ctx.metrics.bytesReceived.inc(d.size);
    return reply.code(d.created ? 201 : 200).send({ name: d.name, size: d.size, sha256: d.sha256, ...(d.created ? {} : { existing: true }) });
  });
}

/** walFiles, walFile: list, serve and receive WAL and history files (names checked, writes atomic). */
import { createReadStream, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { readControl, readNodeHistory, walDir } from '../../datadir/node-state.js';
import { parseLsn, parseWalFileName, segmentStartLsn } from '../../formats/lsn.js';
import { parseTli } from '../../cli/commands/validlsn.js';
import { checkWalName, digestFile, filesToFollow, receiveFile, ShipError } from '../../ship/files.js';
import type { AgentContext } from '../server.js';

export function registerWalRoutes(app: FastifyInstance, ctx: AgentContext): void {
  const dir = walDir(ctx.cfg.pgdata);

  const list = async (tli: number, lsnText: string) => {
    const control = readControl(ctx.cfg.pgdata);
    let lsn: bigint;
    try {
      lsn = parseLsn(lsnText.replace('-', '/'));
    } catch (e) {
      throw new ShipError((e as Error).message, 400, 'BAD_ARGUMENT');
    }
    const names = filesToFollow(dir, readNodeHistory(ctx.cfg.pgdata, control), control.walSegmentSize, tli, lsn);
    return { files: await Promise.all(names.map((n) => digestFile(join(dir, n), n))) };
  };

  const byPoint = async (tliText: string, lsnText: string) => {
    let tli: number;
    try {
      tli = parseTli(tliText);
    } catch (e) {
      throw new ShipError((e as Error).message, 400, 'BAD_ARGUMENT');
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
    if (!info || info.segno === undefined) throw new ShipError(`not a WAL segment name: ${JSON.stringify(req.params.name)}`, 400, 'BAD_NAME');
    const start = segmentStartLsn(info.segno, segSize);
    return list(info.tli, `${(start >> 32n).toString(16)}/${(start & 0xffffffffn).toString(16)}`);
  });

  app.get<{ Params: { name: string } }>('/api/pg/v1/walFile/:name', async (req, reply) => {
    const { name } = req.params;
    checkWalName(name);
    const path = join(dir, name);
    if (!existsSync(path)) throw new ShipError(`${name} is not in pg_wal on ${ctx.cfg.name}`, 404, 'NOT_FOUND');
    const d = await digestFile(path, name);
    ctx.metrics.bytesSent.inc(d.size);
    reply.header('content-type', 'application/octet-stream').header('content-length', String(statSync(path).size)).header('x-checksum', `sha256:${d.sha256}`);
    return reply.send(createReadStream(path, { highWaterMark: 1 << 20 }));
  });

  app.put<{ Params: { name: string } }>('/api/pg/v1/walFile/:name', async (req, reply) => {
    const { name } = req.params;
    checkWalName(name);
    const header = String(req.headers['x-checksum'] ?? '');
    const m = /^sha256:([0-9a-f]{64})$/.exec(header);
    if (!m) throw new ShipError('X-Checksum: sha256:<64 lower-case hex digits> is required', 400, 'BAD_CHECKSUM_HEADER');
    if (typeof req.headers['content-type'] !== 'string' || !req.headers['content-type'].startsWith('application/octet-stream')) {
      throw new ShipError('Content-Type must be application/octet-stream', 415, 'BAD_CONTENT_TYPE');
    }
    const length = req.headers['content-length'] !== undefined ? Number(req.headers['content-length']) : undefined;
    const d = await receiveFile(dir, name, req.body as Readable, { sha256: m[1], size: length });
    ctx.metrics.bytesReceived.inc(d.size);
    return reply.code(201).send(d);
  });
}

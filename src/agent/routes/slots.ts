/** slots, slotFile: logical slot state for copying slots to standbys and carrying them over a promote. */
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { slotView } from '../../inspect/views.js';
import { slotsListing } from '../../slots/list.js';
import { checkSlotName, installSlotFile, readSlotFiles, SlotFileError } from '../../slots/files.js';
import { AgentApiError } from '../api-error.js';
import type { AgentContext } from '../server.js';

export function registerSlotRoutes(app: FastifyInstance, ctx: AgentContext): void {
  const { cfg, pg } = ctx;

  app.get('/api/pg/v1/slots', async () => slotsListing(cfg.pgdata, pg, cfg.name));

  app.get<{ Params: { name: string } }>('/api/pg/v1/slotFile/:name', async (req, reply) => {
    checkSlotName(req.params.name);
    const f = readSlotFiles(cfg.pgdata).find((x) => x.name === req.params.name);
    if (!f) throw new AgentApiError(`no replication slot ${req.params.name} on ${cfg.name}`, 404, 'NOT_FOUND');
    const bytes = readFileSync(f.path);
    reply.header('content-type', 'application/octet-stream').header('x-checksum', `sha256:${createHash('sha256').update(bytes).digest('hex')}`);
    return reply.send(bytes);
  });

  app.put<{ Params: { name: string } }>('/api/pg/v1/slotFile/:name', { bodyLimit: 4096 }, async (req, reply) => {
    checkSlotName(req.params.name);
    if (pg.isRunning()) throw new AgentApiError('PostgreSQL is running: slot files are only read at start-up, stop it first', 409, 'RUNNING');
    const chunks: Buffer[] = [];
    for await (const c of req.body as AsyncIterable<Buffer>) {
      chunks.push(c);
      if (chunks.reduce((a, b) => a + b.length, 0) > 4096) throw new AgentApiError('slot state file too large', 413, 'TOO_LARGE');
    }
    const bytes = Buffer.concat(chunks);
    const m = /^sha256:([0-9a-f]{64})$/.exec(String(req.headers['x-checksum'] ?? ''));
    if (!m || createHash('sha256').update(bytes).digest('hex') !== m[1]) throw new AgentApiError('X-Checksum missing or not matching the body', 422, 'CHECKSUM_MISMATCH');
    let state;
    try {
      state = installSlotFile(cfg.pgdata, bytes, req.params.name);
    } catch (e) {
      if (e instanceof SlotFileError) throw e;
      throw new AgentApiError((e as Error).message, 422, 'BAD_SLOT_FILE');
    }
    return reply.code(201).send({ name: state.name, restartLsn: slotView('', state).restartLsn, confirmedFlush: slotView('', state).confirmedFlush });
  });
}

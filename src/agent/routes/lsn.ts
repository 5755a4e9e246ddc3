/** lsn/*, validLsn: where this node is, and whether another node's end point is on its history. */
import type { FastifyInstance } from 'fastify';
import { isFenced } from '../../datadir/fence.js';
import { readControl, readNodeHistory } from '../../datadir/node-state.js';
import { parseTimelineId } from '../../formats/lsn.js';
import { validLsnAnswer } from '../../formats/timeline-history.js';
import { FormatError, LsnFormatError } from '../../formats/errors.js';
import { AgentClient } from '../../ship/client.js';
import { AgentApiError } from '../api-error.js';
import { liveLsn } from '../node-status.js';
import type { AgentContext } from '../server.js';

export function registerLsnRoutes(app: FastifyInstance, ctx: AgentContext): void {
  const { cfg, pg } = ctx;
  // a history file pg_control does not refer to that cannot be read is passed over (and logged); a
  // bad one that it refers to is a FormatError: 422 with the file and offset (server.ts)
  const onSkip = (file: string, e: FormatError) => app.log.warn({ file, err: e.describe() }, 'history file passed over: not readable as one');
  // who this node is: what a rejoining node needs to check lineage and to connect for replication
  app.get('/api/pg/v1/system', async () => {
    const c = readControl(cfg.pgdata);
    return {
      name: cfg.name,
      systemId: c.systemId.toString(),
      pgVersion: c.pgVersion,
      walSegmentSize: c.walSegmentSize,
      timeline: readNodeHistory(cfg.pgdata, c, { onSkip }).timeline,
      pgHost: cfg.pgHost,
      pgPort: pg.port,
      pgUser: pg.user,
      running: pg.isRunning(),
      fenced: isFenced(cfg.pgdata),
    };
  });
  app.get('/api/pg/v1/lsn/current', async () => ({ [cfg.name]: await liveLsn(pg) }));
  app.get('/api/pg/v1/lsn/all', async () => {
    const all: Record<string, unknown> = { [cfg.name]: await liveLsn(pg) };
    await Promise.all(
      Object.entries(cfg.peers).map(async ([name, url]) => {
        try {
          Object.assign(all, await new AgentClient(url, cfg.token, 10_000).get<Record<string, unknown>>('lsn/current'));
        } catch (e) {
          all[name] = { error: (e as Error).message };
        }
      }),
    );
    return all;
  });
  // the LSN's own slash may be a path separator (validLsn/3/0/39000028, as in the REST design) or
  // be written 0-39000028 / 0%2F39000028
  const validLsnRoute = async (tliText: string, lsnText: string) => {
    try {
      return validLsnAnswer(readNodeHistory(cfg.pgdata, undefined, { onSkip }), parseTimelineId(tliText), lsnText.replace('-', '/')).json;
    } catch (e) {
      if (e instanceof LsnFormatError) throw new AgentApiError((e as Error).message, 400, 'BAD_ARGUMENT');
      throw e;
    }
  };
  app.get<{ Params: { tli: string; hi: string; lo: string } }>('/api/pg/v1/validLsn/:tli/:hi/:lo', async (req) =>
    validLsnRoute(req.params.tli, `${req.params.hi}/${req.params.lo}`),
  );
  app.get<{ Params: { tli: string; lsn: string } }>('/api/pg/v1/validLsn/:tli/:lsn', async (req) => validLsnRoute(req.params.tli, req.params.lsn));
}

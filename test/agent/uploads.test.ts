/**
 * `PUT walFile/:name` against real PostgreSQL 15 clusters (in-process agents, and agent processes
 * where the agent itself may hang or be killed): an upload never replaces a file with other
 * content, never touches a segment the server may be using, is bounded in size and time, lands only
 * when its content is what its name says, leaves no temp file behind (and none owned by root), and
 * two uploads of one name are decided one after the other. The readers survive bad history files,
 * a listing is bounded by what is on disk, and the command-line tools take the token from a file or
 * the environment instead of the command line.
 */
import { createHash } from 'node:crypto';
import { createServer, request, type IncomingHttpHeaders } from 'node:http';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildAgent } from '../../src/agent/server.js';
import { walFileName } from '../../src/formats/lsn.js';
import { readControl } from '../../src/datadir/node-state.js';
import { cleanupAll, PgCluster, waitFor } from '../harness/cluster.js';
import { startAgent, startAgentProcess, stopAgentProcesses, stopAgents } from '../support/agents.js';
import { pgha } from '../support/cli.js';

const TOKEN = 'uploads-token-0123456789abcdef';
const SEG = 16 << 20;
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const segNameRe = /^[0-9A-F]{24}$/;

async function api(base: string, path: string, init: RequestInit = {}, token: string = TOKEN): Promise<Response> {
  return fetch(`${base}/api/pg/v1/${path}`, { ...init, headers: { authorization: `Bearer ${token}`, ...(init.headers ?? {}) }, signal: AbortSignal.timeout(60_000) });
}

function put(base: string, name: string, body: Uint8Array, checksum = sha256(body)): Promise<Response> {
  return api(base, `walFile/${name}`, { method: 'PUT', body: new Uint8Array(body), headers: { 'content-type': 'application/octet-stream', 'x-checksum': `sha256:${checksum}` } });
}

interface RawResult {
  status: number | null;
  body: string;
  sent: number;
  error: string | null;
  ms: number;
}

/**
 * A PUT through node:http, body produced chunk by chunk by `next(sent)` (null ends it; 'stall'
 * stops sending and keeps the connection open; a number waits that many ms before asking again);
 * without a content-length header it goes chunked.
 * Resolves when the answer has arrived, the connection is gone, or after `waitMs`.
 */
function rawPut(
  base: string,
  name: string,
  opts: { sha: string; headers?: Record<string, string>; next: (sent: number) => Buffer | null | 'stall' | number; waitMs?: number; onStall?: () => void },
): Promise<RawResult> {
  const u = new URL(`${base}/api/pg/v1/walFile/${name}`);
  const t0 = Date.now();
  return new Promise((resolve) => {
    let sent = 0;
    let status: number | null = null;
    let body = '';
    let settled = false;
    const finish = (error: string | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      resolve({ status, body, sent, error, ms: Date.now() - t0 });
    };
    const timer = setTimeout(() => finish('no answer in time'), opts.waitMs ?? 60_000);
    const req = request({
      host: u.hostname,
      port: u.port,
      path: u.pathname,
      method: 'PUT',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/octet-stream', 'x-checksum': `sha256:${opts.sha}`, ...(opts.headers ?? {}) },
    });
    req.on('response', (res) => {
      status = res.statusCode ?? null;
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => finish(null));
      res.on('error', () => finish(null));
    });
    req.on('error', (e) => setTimeout(() => finish(e.message), 200));
    req.on('close', () => setTimeout(() => finish(status === null ? 'closed without an answer' : null), 200));
    const pump = () => {
      while (!settled && status === null) {
        const b = opts.next(sent);
        if (b === 'stall') {
          opts.onStall?.();
          return;
        }
        if (typeof b === 'number') {
          setTimeout(pump, b);
          return;
        }
        if (b === null) {
          req.end();
          return;
        }
        sent += b.length;
        if (!req.write(b)) {
          req.once('drain', pump);
          return;
        }
      }
    };
    pump();
  });
}

const tempFiles = (dir: string) => readdirSync(dir).filter((n) => n.startsWith('.pgha-tmp'));

/** the server user's uid (pg_wal's owner) */
const ownerOf = (path: string) => statSync(path).uid;

let p: PgCluster;
let url: string;
/** complete segments before the server's position, oldest first */
let oldSegments: string[];
let aside: string;

/** take a segment out of pg_wal (as recycling would), returning its bytes */
function takeOut(name: string): Buffer {
  const bytes = readFileSync(join(p.walDir, name));
  renameSync(join(p.walDir, name), join(aside, name));
  return bytes;
}

/** an old segment's bytes, wherever it is now */
const segmentBytes = (name: string): Buffer => readFileSync(existsSync(join(p.walDir, name)) ? join(p.walDir, name) : join(aside, name));

/** put a file straight into pg_wal (bypassing the agent), owned like PostgreSQL's own */
function plant(dir: string, name: string, bytes: Uint8Array | string): void {
  writeFileSync(join(dir, name), bytes, { mode: 0o600 });
  const st = statSync(dir);
  chownSync(join(dir, name), st.uid, st.gid);
}

beforeAll(async () => {
  p = await PgCluster.init({ name: 'uploads', conf: { wal_keep_size: '2GB' } });
  await p.start();
  await p.sql('CREATE TABLE t(a int)');
  for (let i = 0; i < 5; i++) {
    await p.sql(`INSERT INTO t SELECT generate_series(1, 1000)`);
    await p.switchWal();
  }
  await p.sql('INSERT INTO t VALUES (0)');
  await p.checkpoint();
  await p.sql('INSERT INTO t VALUES (0)');
  const current = (await p.sql('SELECT pg_walfile_name(pg_current_wal_insert_lsn())'))!;
  oldSegments = readdirSync(p.walDir).filter((n) => segNameRe.test(n) && n < current).sort();
  expect(oldSegments.length).toBeGreaterThanOrEqual(4);
  aside = p.ownedDir('aside');
  url = await startAgent('up', p, TOKEN);
});

afterAll(async () => {
  await stopAgents();
  await stopAgentProcesses();
  await cleanupAll();
});

describe('PUT walFile: what may be written', () => {
  it('never writes the segment a running primary is writing, nor any after it (16 MiB of zeros, a real segment, the next ones)', async () => {
    await p.sql('INSERT INTO t VALUES (1)');
    const [{ lsn, file }] = await p.rows<{ lsn: string; file: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn, pg_walfile_name(pg_current_wal_insert_lsn()) AS file');
    const before = readFileSync(join(p.walDir, file)).subarray(0, 40);
    const zeros = Buffer.alloc(SEG);
    const r = await put(url, file, zeros);
    const body = (await r.json()) as { error: string; message: string };
    expect(r.status, JSON.stringify(body)).toBe(409);
    expect(body.error).toBe('SEGMENT_IN_USE');
    expect(body.message).toContain(lsn);
    // still the server's own segment: its long page header is there
    expect(readFileSync(join(p.walDir, file)).subarray(0, 40)).toEqual(before);
    // a well-formed segment (an old one) under the current name or the following ones: refused too
    const real = readFileSync(join(p.walDir, oldSegments.at(-1)!));
    const segno = BigInt('0x' + file.slice(8, 16)) * 256n + BigInt('0x' + file.slice(16));
    for (const n of [file, walFileName(1, segno + 1n, SEG), walFileName(1, segno + 7n, SEG), walFileName(2, segno + 1n, SEG)]) {
      const x = await put(url, n, real);
      expect(x.status, n).toBe(409);
    }
    expect(readdirSync(p.walDir).filter((n) => n.startsWith('00000002'))).toEqual([]);
    expect(tempFiles(p.walDir)).toEqual([]);
    // and the server carries on
    await p.sql('INSERT INTO t SELECT generate_series(1, 10000)');
    await p.checkpoint();
    expect(await p.sql('SELECT count(*) > 0 FROM t')).toBe('true');
  });

  it('never replaces an existing file with other content (409); the same content is answered 200', async () => {
    const name = oldSegments[1];
    const mine = readFileSync(join(p.walDir, name));
    const other = Buffer.from(mine);
    other[SEG / 2] ^= 0xff; // same header, other content
    const r = await put(url, name, other);
    expect(r.status).toBe(409);
    expect(((await r.json()) as { error: string }).error).toBe('CONFLICT');
    expect(sha256(readFileSync(join(p.walDir, name)))).toBe(sha256(mine));
    const same = await put(url, name, mine);
    expect(same.status).toBe(200);
    expect(await same.json()).toEqual({ name, size: SEG, sha256: sha256(mine), existing: true });
    expect(tempFiles(p.walDir)).toEqual([]);
  });

  it('lands a segment only when its content is what its name says; the genuine one lands owned like the server\'s files', async () => {
    const name = oldSegments[0];
    const genuine = takeOut(name);
    const refuse = async (what: string, n: string, body: Buffer, status = 422, pattern?: RegExp) => {
      const r = await put(url, n, body);
      const text = await r.text();
      expect(r.status, `${what}: ${text}`).toBe(status);
      if (pattern) expect(text, what).toMatch(pattern);
    };
    await refuse('zeros', name, Buffer.alloc(SEG), 422, /page magic/);
    await refuse('another segment (its own start address)', name, readFileSync(join(p.walDir, oldSegments[2])), 422, /xlp_pageaddr/);
    const foreign = Buffer.from(genuine);
    foreign.writeBigUInt64LE(12345n, 24);
    await refuse('another cluster', name, foreign, 422, /system identifier/);
    const pg14 = Buffer.from(genuine);
    pg14.writeUInt16LE(0xd10d, 0);
    await refuse('another major version', name, pg14, 422, /page magic/);
    await refuse('timeline 2 without its history', `00000002${name.slice(8)}`, genuine, 422, /00000002\.history must be on this node/);
    await refuse('short', name, genuine.subarray(0, SEG / 2), 400, /BAD_LENGTH/);
    expect(existsSync(join(p.walDir, name))).toBe(false);
    expect(existsSync(join(p.walDir, `00000002${name.slice(8)}`))).toBe(false);
    const ok = await put(url, name, genuine);
    expect(ok.status, await ok.clone().text()).toBe(201);
    expect(await ok.json()).toEqual({ name, size: SEG, sha256: sha256(genuine) });
    const st = statSync(join(p.walDir, name));
    expect(st.uid).toBe(ownerOf(p.walDir));
    expect(st.mode & 0o777).toBe(0o600);
    expect(sha256(readFileSync(join(p.walDir, name)))).toBe(sha256(genuine));
    expect(tempFiles(p.walDir)).toEqual([]);
  });

  it('takes exactly the segment size: a larger Content-Length is refused before the body, a longer chunked body is cut off with 413', async () => {
    const name = oldSegments[0];
    const genuine = takeOut(name);
    const sha = sha256(genuine);
    // announced 300 MB: answered at once, nothing read
    const announced = await rawPut(url, name, { sha, headers: { 'content-length': String(300 << 20) }, next: (sent) => (sent < 1 << 20 ? Buffer.alloc(64 << 10) : 'stall'), waitMs: 10_000 });
    expect(announced.status, JSON.stringify(announced)).toBe(413);
    expect(announced.ms).toBeLessThan(5_000);
    // chunked: the genuine segment, then 284 MB more
    const chunk = Buffer.alloc(1 << 20);
    const chunked = await rawPut(url, name, {
      sha,
      next: (sent) => (sent < SEG ? genuine.subarray(sent, Math.min(SEG, sent + (1 << 20))) : sent < 300 << 20 ? chunk : null),
      waitMs: 60_000,
    });
    expect(chunked.status, JSON.stringify(chunked)).toBe(413);
    expect(JSON.parse(chunked.body).error).toBe('TOO_LARGE');
    expect(chunked.sent).toBeLessThan(SEG + (64 << 20));
    expect(existsSync(join(p.walDir, name))).toBe(false);
    expect(tempFiles(p.walDir)).toEqual([]);
    // and a 1000-byte "segment" at the far end of the LSN space is not one
    const tiny = await put(url, '00000001FFFFFFFF000000FF', Buffer.alloc(1000, 1));
    expect(tiny.status).toBe(400);
    expect((await put(url, name, genuine)).status).toBe(201);
    expect(tempFiles(p.walDir)).toEqual([]);
  });

  it('decides two simultaneous uploads of one name one after the other: 201 for the first, 409 for other content', async () => {
    const name = oldSegments[3];
    const genuine = takeOut(name);
    const other = Buffer.from(genuine);
    other[SEG - 1] ^= 0x5a;
    const [a, b] = await Promise.all([put(url, name, genuine), put(url, name, other)]);
    const statuses = [a.status, b.status];
    expect(statuses.sort()).toEqual([201, 409]);
    const winner = a.status === 201 ? genuine : other;
    expect(sha256(readFileSync(join(p.walDir, name)))).toBe(sha256(winner));
    expect(tempFiles(p.walDir)).toEqual([]);
    // leave the genuine one in place
    if (winner !== genuine) {
      unlinkSync(join(p.walDir, name));
      expect((await put(url, name, genuine)).status).toBe(201);
    }
  });

  it('takes no history file above a running server\'s timeline', async () => {
    const good = Buffer.from('1\t0/3000000\tno recovery target specified\n');
    const running = await put(url, '00000002.history', good);
    expect(running.status).toBe(409);
    expect(((await running.json()) as { error: string }).error).toBe('SERVER_RUNNING');
    expect(readdirSync(p.walDir).filter((n) => n.endsWith('.history'))).toEqual([]);
  });

  it('takes a backup history file only when it is the one its name says', async () => {
    const seg = oldSegments[0];
    const name = `${seg}.00000028.backup`;
    const start = `0/${(parseInt(seg.slice(16), 16) * SEG + 0x28).toString(16).toUpperCase()}`;
    const bytes = Buffer.from(`START WAL LOCATION: ${start} (file ${seg})\nSTOP WAL LOCATION: ${start} (file ${seg})\nCHECKPOINT LOCATION: ${start}\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nLABEL: test\nSTART TIMELINE: 1\n`);
    expect((await put(url, name, Buffer.from(`START WAL LOCATION: 0/1000000 (file 000000010000000000000001)\n`))).status).toBe(422);
    expect((await put(url, name, Buffer.alloc(100))).status).toBe(422);
    expect((await put(url, `${seg}.00000000.backup`, bytes)).status).toBe(422);
    const big = await rawPut(url, name, { sha: 'a'.repeat(64), next: (sent) => (sent < 8 << 20 ? Buffer.alloc(1 << 20, 0x31) : null) });
    expect(big.status, JSON.stringify(big)).toBe(413);
    expect((await put(url, name, bytes)).status).toBe(201);
    expect((await put(url, name, bytes)).status).toBe(200);
    unlinkSync(join(p.walDir, name));
    expect(tempFiles(p.walDir)).toEqual([]);
  });
});

describe('readers of pg_wal', () => {
  it('a garbage history file with a segment of its timeline does not turn system, validLsn and walFiles into 500s', async () => {
    const seg7 = `00000007${oldSegments[2].slice(8)}`;
    plant(p.walDir, '00000007.history', 'garbage\0garbage');
    plant(p.walDir, seg7, readFileSync(join(p.walDir, oldSegments[2])));
    try {
      const sys = await api(url, 'system');
      expect(sys.status, await sys.clone().text()).toBe(200);
      expect(((await sys.json()) as { timeline: number }).timeline).toBe(1);
      const lsn = (await p.sql('SELECT pg_current_wal_lsn()'))!;
      const v = await api(url, `validLsn/1/${lsn}`);
      expect(v.status).toBe(200);
      expect(await v.json()).toEqual({ code: 0, msg: 'Valid lsn', cnt: 0 });
      const w = await api(url, 'walFiles/1/0-0');
      expect(w.status).toBe(200);
      expect(((await w.json()) as { files: Array<{ name: string }> }).files.map((f) => f.name)).not.toContain(seg7);
    } finally {
      unlinkSync(join(p.walDir, '00000007.history'));
      unlinkSync(join(p.walDir, seg7));
    }
  });
});

describe('a standby cloned from it, promoted, then stopped', () => {
  let s: PgCluster;
  let sUrl: string;
  beforeAll(async () => {
    s = await p.createStandby({ name: 'uploads-s' });
    await p.waitForReplay(s);
    await s.promote();
    await s.checkpoint(); // pg_control on timeline 2
    sUrl = await startAgent('s', s, TOKEN);
  });

  it('answers 422 naming the file and offset when the history of its own timeline is bad', async () => {
    const hist = join(s.walDir, '00000002.history');
    const good = readFileSync(hist);
    writeFileSync(hist, 'not\ta history\n');
    try {
      for (const path of ['system', 'validLsn/1/0-0', 'walFiles/1/0-0']) {
        const r = await api(sUrl, path);
        const body = (await r.json()) as { error: string; message: string };
        expect(r.status, `${path}: ${JSON.stringify(body)}`).toBe(422);
        expect(body.error).toBe('BAD_FILE');
        expect(body.message).toMatch(/00000002\.history: offset 0: line 1: syntax error/);
      }
    } finally {
      writeFileSync(hist, good);
    }
    expect((await api(sUrl, 'system')).status).toBe(200);
  });

  it('while stopped takes history files and old-timeline segments, but no segment from its REDO point on', async () => {
    s.stop('fast');
    expect(((await (await api(sUrl, 'system')).json()) as { running: boolean }).running).toBe(false);
    const h3 = Buffer.from('1\t0/3000000\tno recovery target specified\n\n2\t0/9000000\tno recovery target specified\n');
    expect((await put(sUrl, '00000003.history', h3)).status).toBe(201);
    expect((await put(sUrl, '00000003.history', h3)).status).toBe(200);
    const h3b = Buffer.from(h3.toString().replace('0/9000000', '0/A000000'));
    expect((await put(sUrl, '00000003.history', h3b)).status).toBe(409);
    // content: a history of its own timeline, of bounded size
    const garbage = await put(sUrl, '00000007.history', Buffer.from('this is not a timeline history\n'));
    expect(garbage.status).toBe(422);
    expect(((await garbage.json()) as { message: string }).message).toMatch(/00000007\.history: .*syntax error/);
    expect((await put(sUrl, '00000004.history', Buffer.from('1\t0/3000000\tx\n\n4\t0/4000000\tx\n'))).status).toBe(422);
    expect((await put(sUrl, '00000004.history', Buffer.from('garbage\0'))).status).toBe(422);
    const big = await rawPut(sUrl, '00000005.history', { sha: 'a'.repeat(64), next: (sent) => (sent < 8 << 20 ? Buffer.alloc(1 << 20, 0x31) : null) });
    expect(big.status, JSON.stringify(big)).toBe(413);
    expect(readdirSync(s.walDir).filter((n) => /^0000000[4-7]\.history$/.test(n))).toEqual([]);
    // an old timeline-1 segment it never had (cloned later): what a rejoin brings
    const missing = oldSegments.find((n) => !existsSync(join(s.walDir, n)))!;
    expect(missing).toBeDefined();
    expect((await put(sUrl, missing, segmentBytes(missing))).status).toBe(201);
    // a timeline-2 segment at its REDO point: refused even while stopped (recovery starts reading there)
    const redo = readControl(s.dataDir).checkpoint.redo;
    const redoSeg = walFileName(2, redo / BigInt(SEG), SEG);
    const r = await put(sUrl, redoSeg, readFileSync(join(s.walDir, redoSeg)));
    expect(r.status).toBe(409);
    expect(tempFiles(s.walDir)).toEqual([]);
  });
});

describe('uploads that stall, dribble or die', () => {
  let app: FastifyInstance;
  let quick: string;
  beforeAll(async () => {
    // a temp file an earlier agent left behind is removed at start-up
    plant(p.walDir, '.pgha-tmp.000000010000000000000002.999.abcdef', 'left over');
    ({ app } = buildAgent(
      { name: 'quick', host: '127.0.0.1', port: 0, pgdata: p.dataDir, token: TOKEN, peers: {}, pgBin: p.binDir, pgPort: p.port, pgHost: '127.0.0.1', replUser: 'postgres', autoRejoin: false },
      { logger: false, uploadTimeouts: { idleMs: 1_500, deadlineMs: 6_000 } },
    ));
    await app.listen({ host: '127.0.0.1', port: 0 });
    const addr = app.server.address();
    quick = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  });
  afterAll(async () => {
    await app?.close();
  });

  it('removes temp files of interrupted transfers at start-up', () => {
    expect(tempFiles(p.walDir)).toEqual([]);
  });

  it('sets request timeouts on the HTTP server (the whole request within 120 s, headers within 30 s)', () => {
    const { app: a } = buildAgent(
      { name: 'defaults', host: '127.0.0.1', port: 0, pgdata: p.dataDir, token: TOKEN, peers: {}, pgBin: p.binDir, pgPort: p.port, pgHost: '127.0.0.1', replUser: 'postgres', autoRejoin: false },
      { logger: false },
    );
    expect(a.server.requestTimeout).toBe(120_000);
    expect(a.server.headersTimeout).toBe(30_000);
  });

  it('cuts a stalled upload after the idle timeout and removes its temp file, which was the server owner\'s, mode 0600', async () => {
    const name = oldSegments[0];
    const genuine = takeOut(name);
    let tmpSeen: { uid: number; mode: number } | null = null;
    const r = await rawPut(quick, name, {
      sha: sha256(genuine),
      headers: { 'content-length': String(SEG) },
      next: (sent) => (sent < 1 << 20 ? genuine.subarray(sent, sent + (256 << 10)) : 'stall'),
      onStall: () =>
        void setTimeout(() => {
          const t = tempFiles(p.walDir)[0];
          if (t) {
            const st = statSync(join(p.walDir, t));
            tmpSeen = { uid: st.uid, mode: st.mode & 0o777 };
          }
        }, 500),
      waitMs: 15_000,
    });
    expect(r.error === null || r.status !== null, JSON.stringify(r)).toBe(true);
    expect(r.status, JSON.stringify(r)).toBe(408);
    expect(r.ms).toBeLessThan(10_000);
    expect(tmpSeen).toEqual({ uid: ownerOf(p.walDir), mode: 0o600 });
    await waitFor(async () => tempFiles(p.walDir).length === 0, 5_000, 'temp file removed');
    expect(existsSync(join(p.walDir, name))).toBe(false);
    expect((await put(quick, name, genuine)).status).toBe(201);
  });

  it('cuts an upload that dribbles for longer than the whole-upload deadline', async () => {
    const name = oldSegments[0];
    const genuine = takeOut(name);
    let pause = false;
    const r = await rawPut(quick, name, {
      sha: sha256(genuine),
      headers: { 'content-length': String(SEG) },
      // 8 KiB every 500 ms: never idle for long, never done
      next: (sent) => {
        if (sent >= SEG) return null;
        pause = !pause;
        return pause ? genuine.subarray(sent, sent + 8192) : 500;
      },
      waitMs: 20_000,
    });
    expect(r.status, JSON.stringify(r)).toBe(408);
    expect(r.ms).toBeGreaterThanOrEqual(5_500);
    expect(r.ms).toBeLessThan(12_000);
    await waitFor(async () => tempFiles(p.walDir).length === 0, 5_000, 'temp file removed');
    expect((await put(quick, name, genuine)).status).toBe(201);
  });
});

describe('agent processes: a hang and a kill', () => {
  it('lists walFiles bounded by what is on disk: a segment named at the end of the LSN space does not hang the agent', async () => {
    const agent = await startAgentProcess('hang', p, TOKEN);
    const far = '00000001FFFFFFFF000000FF';
    plant(p.walDir, far, Buffer.alloc(1000, 1));
    try {
      const t0 = Date.now();
      const r = await fetch(`${agent.url}/api/pg/v1/walFiles/1/0-0`, { headers: { authorization: `Bearer ${TOKEN}` }, signal: AbortSignal.timeout(10_000) });
      expect(r.status).toBe(200);
      // answered at once; and as its content is not WAL of that address, it is not offered
      expect(((await r.json()) as { files: Array<{ name: string }> }).files.map((f) => f.name)).not.toContain(far);
      expect(Date.now() - t0).toBeLessThan(5_000);
      expect((await fetch(`${agent.url}/health`, { signal: AbortSignal.timeout(5_000) })).status).toBe(200);
    } finally {
      unlinkSync(join(p.walDir, far));
    }
    // and it cannot be uploaded: a segment has the segment size
    const refused = await put(agent.url, far, Buffer.alloc(1000, 1));
    expect(refused.status).toBe(400);
    expect(existsSync(join(p.walDir, far))).toBe(false);
    const t1 = Date.now();
    await agent.stop(); // SIGTERM, SIGKILL only after 5 s
    expect(Date.now() - t1).toBeLessThan(4_500);
  });

  it('a temp file left by an agent killed mid-upload is the server owner\'s, mode 0600, and is removed when the agent starts again', async () => {
    const agent = await startAgentProcess('killed', p, TOKEN);
    const name = oldSegments[1];
    const genuine = takeOut(name);
    let killed = false;
    const r = await rawPut(agent.url, name, {
      sha: sha256(genuine),
      headers: { 'content-length': String(SEG) },
      next: (sent) => (sent < 2 << 20 ? genuine.subarray(sent, sent + (256 << 10)) : 'stall'),
      onStall: () =>
        void setTimeout(() => {
          process.kill(agent.pid, 'SIGKILL');
          killed = true;
        }, 500),
      waitMs: 10_000,
    });
    expect(killed).toBe(true);
    expect(r.status).toBeNull();
    await agent.stop();
    const left = tempFiles(p.walDir);
    expect(left.length).toBe(1);
    const st = statSync(join(p.walDir, left[0]));
    expect(st.uid).toBe(ownerOf(p.walDir));
    expect(st.mode & 0o777).toBe(0o600);
    const again = await startAgentProcess('killed2', p, TOKEN);
    expect(tempFiles(p.walDir)).toEqual([]);
    expect((await put(again.url, name, genuine)).status).toBe(201);
    await again.stop();
  });
});

describe('secrets: the token from a file or the environment, not the command line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgha-secrets-'));
  const FILE_TOKEN = 'file-token-0123456789abcdef';
  const ENV_TOKEN = 'env-token-0123456789abcdef';
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, `${FILE_TOKEN}\n`, { mode: 0o600 });
  chmodSync(tokenFile, 0o600);
  let seen: IncomingHttpHeaders[] = [];
  let fake: string;
  const server = createServer((req, res) => {
    seen.push(req.headers);
    res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":"FAKE","message":"a fake agent"}');
  });
  beforeAll(async () => {
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const a = server.address();
    fake = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
  });
  afterAll(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    rmSync(dir, { recursive: true, force: true });
  });
  const bearer = () => seen.map((h) => h.authorization).find(Boolean);

  const commands = () => [
    // a directory with no server running in it: the rejoin asks the source first, and fails there
    ['rejoin', '--pgdata', dir, '--source', fake, '--dry-run', '--json'],
    ['slots', 'sync', '--from', fake, '--to', fake, '--once'],
    ['slots', 'migrate', '--from', fake, '--to', fake, '--dry-run'],
  ];

  it('pgha rejoin, slots sync and slots migrate take --token-file, else $PGHA_TOKEN, else --token', async () => {
    for (const args of commands()) {
      seen = [];
      await pgha([...args, '--token-file', tokenFile, '--token', 'flag-token-0123456789'], { PGHA_TOKEN: ENV_TOKEN });
      expect(bearer(), `${args.join(' ')} --token-file`).toBe(`Bearer ${FILE_TOKEN}`);
      seen = [];
      const r = await pgha([...args], { PGHA_TOKEN: ENV_TOKEN });
      expect(r.stderr, args.join(' ')).not.toMatch(/required option/);
      expect(bearer(), `${args.join(' ')} PGHA_TOKEN`).toBe(`Bearer ${ENV_TOKEN}`);
      seen = [];
      await pgha([...args, '--token', 'flag-token-0123456789'], { PGHA_TOKEN: '' });
      expect(bearer(), `${args.join(' ')} --token`).toBe('Bearer flag-token-0123456789');
      const none = await pgha([...args], { PGHA_TOKEN: '' });
      expect(none.status).toBe(2);
      expect(none.stderr.trim()).toMatch(/^pgha: error: no token: give --token-file FILE, set PGHA_TOKEN, or pass --token$/);
    }
  });

  it('says so in --help', async () => {
    for (const args of [['rejoin'], ['slots', 'sync'], ['slots', 'migrate'], ['agent']]) {
      const r = await pgha([...args, '--help']);
      expect(r.status).toBe(0);
      expect(r.stdout, args.join(' ')).toMatch(/--token-file <file>/);
      if (args[0] !== 'agent') expect(r.stdout, args.join(' ')).toMatch(/--token-file FILE, else \$PGHA_TOKEN, else --token/);
    }
  });

  it('warns (one line, not an error) about a token file or config file that group or others can read', async () => {
    const open = join(dir, 'open-token');
    writeFileSync(open, FILE_TOKEN);
    chmodSync(open, 0o644);
    seen = [];
    const r = await pgha(['slots', 'migrate', '--from', fake, '--to', fake, '--token-file', open]);
    expect(bearer()).toBe(`Bearer ${FILE_TOKEN}`);
    const warnings = r.stderr.split('\n').filter((l) => l.startsWith('pgha: warning:'));
    expect(warnings).toEqual([`pgha: warning: token file ${open} is readable by group or others (mode 0644); it holds the agents' token: chmod 600 ${open}`]);
    const quiet = await pgha(['slots', 'migrate', '--from', fake, '--to', fake, '--token-file', tokenFile]);
    expect(quiet.stderr).not.toMatch(/warning/);
    const fifo = await pgha(['slots', 'migrate', '--from', fake, '--to', fake, '--token-file', '/dev/zero']);
    expect(fifo.status).toBe(2);
    expect(fifo.stderr.trim()).toBe('pgha: error: /dev/zero: not a regular file');
  });

  it('pgha agent takes --token-file (over PGHA_TOKEN) and warns about a readable config file', async () => {
    const config = join(dir, 'agent.json');
    writeFileSync(config, JSON.stringify({ autoRejoin: false, token: 'a-config-file-token-not-used' }));
    chmodSync(config, 0o644);
    const agent = await startAgentProcess('tokenfile', p, ENV_TOKEN, {}, { extraArgs: ['--token-file', tokenFile, '--config', config] });
    try {
      expect((await api(agent.url, 'system', {}, FILE_TOKEN)).status).toBe(200);
      expect((await api(agent.url, 'system', {}, ENV_TOKEN)).status).toBe(401);
      expect(agent.log()).toContain(`pgha: warning: config file ${config} is readable by group or others (mode 0644)`);
      expect(agent.log()).not.toContain('token file');
    } finally {
      await agent.stop();
    }
  });
});

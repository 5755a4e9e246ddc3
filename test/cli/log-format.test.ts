/**
 * Logs of the daemons: JSON lines when written to a file or a pipe, pretty and human on a terminal
 * (a real pseudo-terminal from util-linux `script`), `--log-format` forcing either; the proxies' and
 * peers' polls (GETs that answered) at debug, startup and refusals at info.
 */
import { execFileSync, spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, freePort, PgCluster, sleep, waitFor } from '../harness/cluster.js';
import { startAgentProcess, stopAgentProcesses, type AgentProcess } from '../support/agents.js';
import { pgha } from '../support/cli.js';
import { duringHealthChecks, PROXY_CLI, startProxy } from '../support/proxy.js';
import { logFormat } from '../../src/log/log.js';

const TOKEN = 'log-format-test-token-0123456789';

let primary: PgCluster;

beforeAll(async () => {
  primary = await PgCluster.init({ name: 'logfmt' });
  await primary.start();
}, 120_000);

afterAll(async () => {
  await stopAgentProcesses();
  await cleanupAll();
}, 60_000);

interface Line {
  level: number;
  msg: string;
  method?: string;
  url?: string;
  status?: number;
}

/** a one-line warning on stderr (e.g. the native addon missing in a checkout not built): not a log line */
const stderrWarning = (l: string) => /^pgha(-proxy)?: warning: /.test(l);

/** every line must be one JSON object (stderr's warnings aside) */
function jsonLines(text: string): Line[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '' && !stderrWarning(l))
    .map((l, i) => {
      try {
        return JSON.parse(l) as Line;
      } catch {
        throw new Error(`log line ${i + 1} is not JSON: ${l}`);
      }
    });
}

async function polls(agent: AgentProcess): Promise<void> {
  for (let i = 0; i < 3; i++) expect((await fetch(`${agent.url}/health`)).status).toBe(200);
  for (let i = 0; i < 2; i++) expect((await fetch(`${agent.url}/api/pg/v1/alive`, { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(200);
  expect((await fetch(`${agent.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(200);
  // refused: no token
  expect((await fetch(`${agent.url}/api/pg/v1/alive`)).status).toBe(401);
  await sleep(300);
}

describe('log format and levels', () => {
  it('the format: --log-format, else $PGHA_LOG_FORMAT, else pretty on a terminal and JSON otherwise; anything else is refused', () => {
    expect(logFormat(undefined, {}, { isTTY: true })).toBe('pretty');
    expect(logFormat(undefined, {}, { isTTY: false })).toBe('json');
    expect(logFormat(undefined, { PGHA_LOG_FORMAT: 'json' }, { isTTY: true })).toBe('json');
    expect(logFormat('pretty', { PGHA_LOG_FORMAT: 'json' }, { isTTY: false })).toBe('pretty');
    expect(() => logFormat('xml', {}, {})).toThrow('--log-format must be json or pretty, got "xml"');
  });

  it('pgha agent into a file: JSON lines; started at info; polls not at info, the refused request at info', async () => {
    const agent = await startAgentProcess('n1', primary, TOKEN);
    await polls(agent);
    const lines = jsonLines(agent.log());
    const started = lines.find((l) => l.msg === 'pgha agent started');
    expect(started?.level).toBe(30);
    const completed = lines.filter((l) => l.msg === 'request completed');
    expect(completed.map((l) => `${l.level} ${l.method} ${l.url} ${l.status}`)).toEqual(['30 GET /api/pg/v1/alive 401']);
    await agent.stop();
  });

  it('pgha agent --log-level debug: the polls are there, at debug', async () => {
    const agent = await startAgentProcess('n1', primary, TOKEN, {}, { extraArgs: ['--log-level', 'debug'] });
    await polls(agent);
    const completed = jsonLines(agent.log()).filter((l) => l.msg === 'request completed');
    const debug = completed.filter((l) => l.level === 20).map((l) => `${l.method} ${l.url} ${l.status}`);
    expect(debug.filter((x) => x === 'GET /health 200').length).toBeGreaterThanOrEqual(3);
    expect(debug.filter((x) => x === 'GET /api/pg/v1/alive 200')).toHaveLength(2);
    expect(debug).toContain('GET /metrics 200');
    expect(completed.filter((l) => l.level === 30).map((l) => `${l.method} ${l.url} ${l.status}`)).toEqual(['GET /api/pg/v1/alive 401']);
    await agent.stop();
  });

  it('pgha agent --log-format pretty into a file: human lines, no JSON', async () => {
    const agent = await startAgentProcess('n1', primary, TOKEN, {}, { extraArgs: ['--log-format', 'pretty'] });
    await polls(agent);
    const text = agent.log();
    expect(text).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO( \(n1\))?: pgha agent started/m);
    expect(text).toMatch(/INFO: request completed .*"status": ?401/);
    expect(text.split('\n').filter((l) => l.startsWith('{'))).toEqual([]);
    await agent.stop();
  });

  it("pgha-proxy: its admin port's polls and its health checks only at debug; an action refused at info", async () => {
    for (const level of ['info', 'debug'] as const) {
      const proxy = await startProxy([primary.port], ['--health-interval', '200', '--log-level', level], { env: { PGHA_TOKEN: TOKEN } });
      for (let i = 0; i < 3; i++) expect((await fetch(`${proxy.admin}/status`)).status).toBe(200);
      expect((await fetch(`${proxy.admin}/metrics`)).status).toBe(200);
      expect((await fetch(`${proxy.admin}/`)).status).toBe(200);
      expect((await fetch(`${proxy.admin}/switchover`, { method: 'POST' })).status).toBe(401);
      // three health checks done (each seen in /status) before the log is read: at info none is logged
      await duringHealthChecks(proxy, `127.0.0.1:${primary.port}`, 3, () => undefined);
      await proxy.stop();
      const lines = jsonLines(proxy.log());
      const requests = lines.filter((l) => l.msg === 'request completed');
      const atInfo = requests.filter((l) => l.level >= 30).map((l) => `${l.method} ${l.url} ${l.status}`);
      expect(atInfo, level).toEqual(['POST /switchover 401']);
      const checks = lines.filter((l) => l.msg === 'health check');
      if (level === 'info') {
        expect(requests.filter((l) => l.level < 30)).toEqual([]);
        expect(checks).toEqual([]);
      } else {
        const debug = requests.filter((l) => l.level === 20).map((l) => `${l.method} ${l.url} ${l.status}`);
        expect(debug.filter((x) => x === 'GET /status 200').length).toBeGreaterThanOrEqual(3);
        expect(debug).toContain('GET /metrics 200');
        expect(debug).toContain('GET / 200');
        expect(checks.length).toBeGreaterThan(0);
        expect(checks.every((l) => l.level === 20)).toBe(true);
      }
      expect(lines.find((l) => l.msg === 'pgha-proxy listening')?.level).toBe(30);
    }
  });

  it('pgha agent and pgha-proxy refuse another format with one line and exit 2', async () => {
    const r = await pgha(['agent', '--name', 'n1', '--pgdata', primary.dataDir, '--log-format', 'xml'], { PGHA_TOKEN: TOKEN });
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toBe('pgha: error: --log-format must be json or pretty, got "xml"');
    let out = '';
    let code: number | null = null;
    try {
      execFileSync(process.execPath, [PROXY_CLI, '--listen', '127.0.0.1:0', '--backend', '127.0.0.1:1', '--log-format', 'xml'], { stdio: 'pipe', encoding: 'utf8' });
    } catch (e) {
      code = (e as { status: number }).status;
      out = (e as { stderr: string }).stderr;
    }
    expect(code).toBe(2);
    expect(out.trim()).toBe('pgha-proxy: --log-format must be json or pretty, got "xml"');
  });

  it('pgha-proxy on a terminal (a real pseudo-terminal): pretty lines; with --log-format json there: JSON', async () => {
    for (const format of ['auto', 'json'] as const) {
      const admin = await freePort();
      const cmd = `exec ${process.execPath} ${PROXY_CLI} --listen 127.0.0.1:0 --admin 127.0.0.1:${admin} --backend 127.0.0.1:1 --health-interval 200${format === 'json' ? ' --log-format json' : ''}`;
      // script(1) gives the command a terminal of its own and copies what it writes to our pipe
      const s = spawn('script', ['-qfec', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, TERM: 'xterm' } });
      let out = '';
      s.stdout.on('data', (d: Buffer) => (out += d.toString()));
      try {
        await waitFor(async () => /pgha-proxy listening/.test(out), 15_000, 'the proxy says it listens');
        await sleep(500);
      } finally {
        // the proxy is script's child (exec): stop it by its PID, then script ends
        const child = execFileSync('pgrep', ['-P', String(s.pid)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).map(Number);
        for (const pid of child) process.kill(pid, 'SIGTERM');
        await new Promise((r) => s.once('close', r));
      }
      // eslint-disable-next-line no-control-regex
      const plain = out.replace(/\x1b\[[0-9;]*m/g, '').replace(/\r/g, '');
      const lines = plain.split('\n').filter((l) => l.trim() !== '' && !stderrWarning(l));
      if (format === 'auto') {
        expect(plain).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: pgha-proxy listening/m);
        expect(plain).toMatch(/WARN: health check failed/);
        expect(lines.filter((l) => l.startsWith('{'))).toEqual([]);
        // colours on a terminal
        expect(out).toMatch(/\x1b\[\d+m/);
      } else {
        for (const l of lines) expect(() => JSON.parse(l), l).not.toThrow();
        expect(lines.some((l) => JSON.parse(l).msg === 'pgha-proxy listening')).toBe(true);
      }
    }
  });
});

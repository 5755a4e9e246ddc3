/**
 * pgha-proxy for tests: the real CLI (dist/proxy/cli.js) as a child process on free loopback ports,
 * ready when its admin /health answers, stopped by PID. Logs go to a file in the test's temp dir.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, waitFor } from '../harness/cluster.js';
import type { ProxyStatus } from '../../proxy/server.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const PROXY_CLI = join(root, 'dist', 'proxy', 'cli.js');

/**
 * Polls the proxy's /status until `count` more health checks of backend `name` have ended (each a
 * new lastCheck), running `each` on what /status says after every one seen: checks that must not
 * change anything are counted, not waited for by the clock.
 */
export async function duringHealthChecks(
  proxy: Pick<RunningProxy, 'status'>,
  name: string,
  count: number,
  each: (backend: ProxyStatus['backends'][number], status: ProxyStatus) => void,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = (await proxy.status()).backends.find((b) => b.name === name)!.lastCheck;
  for (let seen = 0; seen < count; ) {
    if (Date.now() > deadline) throw new Error(`only ${seen} of ${count} health checks of ${name} ended within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
    const s = await proxy.status();
    const b = s.backends.find((x) => x.name === name)!;
    if (b.lastCheck !== last) {
      last = b.lastCheck;
      seen++;
      each(b, s);
    }
  }
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});

export interface RunningProxy {
  port: number;
  readPort: number | null;
  adminPort: number;
  pid: number;
  logFile: string;
  proc: ChildProcess;
  admin: string;
  status(): Promise<ProxyStatus>;
  metrics(): Promise<string>;
  log(): string;
  rssKiB(): number;
  stop(): Promise<void>;
}

/** backends: ports on 127.0.0.1, or HOST:PORT */
export async function startProxy(backends: Array<number | string>, extra: string[] = [], opts: { read?: boolean; env?: NodeJS.ProcessEnv } = {}): Promise<RunningProxy> {
  const port = await freePort();
  const adminPort = await freePort();
  const readPort = opts.read ? await freePort() : null;
  const dir = mkdtempSync(join(tmpdir(), 'pgha-proxy-'));
  const logFile = join(dir, 'proxy.log');
  const args = [PROXY_CLI, '--listen', `127.0.0.1:${port}`, '--admin', `127.0.0.1:${adminPort}`, '--health-user', 'postgres'];
  for (const b of backends) args.push('--backend', typeof b === 'number' ? `127.0.0.1:${b}` : b);
  if (readPort) args.push('--read-listen', `127.0.0.1:${readPort}`);
  args.push(...extra);
  const fd = openSync(logFile, 'a');
  const proc = spawn(process.execPath, args, { stdio: ['ignore', fd, fd], env: { ...process.env, ...(opts.env ?? {}) } });
  running.add(proc);
  let exited: number | null = null;
  proc.once('exit', (code) => {
    exited = code ?? -1;
    running.delete(proc);
  });
  const admin = `http://127.0.0.1:${adminPort}`;
  await waitFor(
    async () => {
      if (exited !== null) throw new Error(`pgha-proxy exited with ${exited}: ${readFileSync(logFile, 'utf8').slice(-2000)}`);
      try {
        const s = (await (await fetch(`${admin}/status`)).json()) as ProxyStatus;
        return s.primary !== null;
      } catch {
        return false;
      }
    },
    30_000,
    'pgha-proxy ready with a primary',
  );
  return {
    port,
    readPort,
    adminPort,
    pid: proc.pid!,
    logFile,
    proc,
    admin,
    status: async () => (await (await fetch(`${admin}/status`)).json()) as ProxyStatus,
    metrics: async () => (await fetch(`${admin}/metrics`)).text(),
    log: () => readFileSync(logFile, 'utf8'),
    rssKiB: () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${proc.pid}/status`, 'utf8'))?.[1] ?? 0),
    stop: async () => {
      if (exited !== null) return;
      const gone = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(t);
    },
  };
}

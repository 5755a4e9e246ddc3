/**
 * Node agents for tests: in this process, on a free loopback port, stopped by stopAgents(); or the
 * real CLI as a child process (startAgentProcess), optionally inside a network namespace.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildAgent } from '../../src/agent/server.js';
import { freePort, type PgCluster } from '../harness/cluster.js';
import type { NetHost } from '../harness/netns.js';
import { PGHA } from './cli.js';

const running: FastifyInstance[] = [];

export interface AgentOptions {
  /** the automatic rejoin loop: off unless asked for here, so tests drive the life cycle themselves */
  autoRejoin?: boolean;
  autoRejoinReclone?: boolean;
  /** how often the automatic rejoin looks (ms) */
  autoRejoinIntervalMs?: number;
  /** pgha-proxy admin URLs the agent asks for the primary */
  proxies?: string[];
  /** listen on this port (default: a free one chosen by the system) */
  port?: number;
  /** fastify logger setting (default: none) */
  logger?: boolean | object;
}

export async function startAgent(name: string, c: PgCluster, token: string, peers: Record<string, string> = {}, opts: AgentOptions = {}): Promise<string> {
  const { app } = buildAgent(
    {
      name,
      host: '127.0.0.1',
      port: opts.port ?? 0,
      pgdata: c.dataDir,
      token,
      peers,
      pgBin: c.binDir,
      pgPort: c.port,
      pgHost: '127.0.0.1',
      replUser: 'postgres',
      autoRejoin: opts.autoRejoin ?? false,
      autoRejoinReclone: opts.autoRejoinReclone,
      autoRejoinIntervalMs: opts.autoRejoinIntervalMs,
      proxies: opts.proxies,
    },
    { logger: opts.logger ?? false },
  );
  await app.listen({ host: '127.0.0.1', port: opts.port ?? 0 });
  running.push(app);
  const addr = app.server.address();
  return `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
}

export async function stopAgents(): Promise<void> {
  for (const a of running.splice(0)) await a.close();
}

// ---- the real CLI as a child process (optionally inside a network namespace) ----

export interface AgentProcess {
  name: string;
  /** http://IP:PORT of the agent (the namespace's address when it runs in a net host) */
  url: string;
  pid: number;
  logFile: string;
  /** what the agent wrote to stdout/stderr so far */
  log(): string;
  /** SIGTERM, then SIGKILL after 5 s, by PID; resolves when it has exited */
  stop(): Promise<void>;
}

export interface AgentProcessOptions {
  /** run the agent inside this network namespace, listening on its address */
  netHost?: NetHost;
  /** more `pgha agent` arguments */
  extraArgs?: string[];
  /** listen on this port (default: a free one), so peers can be told the URL before it starts */
  port?: number;
}

const processes = new Set<{ pid: number; exited: () => boolean; stop: () => Promise<void> }>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const p of processes) {
      try {
        if (!p.exited()) process.kill(p.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  });
}

/**
 * `node dist/src/cli/pgha.js agent …` as a child process beside `c` (its token in PGHA_TOKEN, not
 * on the command line), on a free port of 127.0.0.1 or of the net host's address; resolves once
 * GET /health answers.
 */
export async function startAgentProcess(
  name: string,
  c: PgCluster,
  token: string,
  peers: Record<string, string> = {},
  opts: AgentProcessOptions = {},
): Promise<AgentProcess> {
  installExitHook();
  const ip = opts.netHost?.ip ?? '127.0.0.1';
  const port = opts.port ?? (await freePort()); // free in the root namespace is free in a fresh namespace too
  const url = `http://${ip}:${port}`;
  const dir = mkdtempSync(join(tmpdir(), `pgha-agent-${name}-`));
  const logFile = join(dir, 'agent.log');
  const args = [
    PGHA, 'agent',
    '--name', name,
    '--pgdata', c.dataDir,
    '--listen', `${ip}:${port}`,
    '--pg-port', String(c.port),
    '--pg-host', c.host,
    '--pg-bin', c.binDir,
    '--repl-user', 'postgres',
    ...Object.entries(peers).flatMap(([n, u]) => ['--peer', `${n}=${u}`]),
    ...(opts.extraArgs ?? []),
  ];
  const [cmd, ...argv] = opts.netHost ? opts.netHost.exec([process.execPath, ...args]) : [process.execPath, ...args];
  const fd = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(cmd, argv, { env: { ...process.env, PGHA_TOKEN: token }, stdio: ['ignore', fd, fd] });
  } finally {
    closeSync(fd);
  }
  let exitCode: number | string | null = null;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exitCode = code ?? signal ?? 'exited';
      resolve();
    });
    child.once('error', (e) => {
      exitCode = `spawn error: ${e.message}`;
      resolve();
    });
  });
  const log = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
  const pid = child.pid ?? -1;
  const stop = async () => {
    if (exitCode === null) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        // gone
      }
      const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 5_000).unref());
      if ((await Promise.race([exited, timer])) === 'timeout') {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
        await exited;
      }
    }
    processes.delete(entry);
    if (process.env.PGHA_KEEP_TMP !== '1') rmSync(dir, { recursive: true, force: true });
  };
  const entry = { pid, exited: () => exitCode !== null, stop };
  processes.add(entry);
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exitCode !== null) {
      const text = log();
      await stop();
      throw new Error(`agent ${name} exited (${exitCode}) before answering /health:\n${text.split('\n').slice(-20).join('\n')}`);
    }
    try {
      if ((await fetch(`${url}/health`, { signal: AbortSignal.timeout(1_000) })).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      const text = log();
      await stop();
      throw new Error(`agent ${name} did not answer ${url}/health within 30 s:\n${text.split('\n').slice(-20).join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { name, url, pid, logFile, log, stop };
}

/** stop every agent process still running (afterAll) */
export async function stopAgentProcesses(): Promise<void> {
  for (const p of [...processes]) await p.stop();
}

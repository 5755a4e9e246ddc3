/**
 * A throwaway etcd for the tests: Debian's `etcd` (etcd-server, 3.4) as a child process, one member,
 * its data dir in a temp dir, client and peer ports free on loopback (plus any extra addresses to
 * listen on, e.g. the root side of the net hosts' links so agents inside namespaces reach it),
 * stopped by PID (SIGTERM, then SIGKILL) and its dir removed. `.ci/run` installs etcd-server.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, waitFor } from '../harness/cluster.js';

export interface EtcdServer {
  /** http://127.0.0.1:PORT */
  url: string;
  port: number;
  /** the client URL on another of the addresses it listens on */
  urlOn(host: string): string;
  pid: number;
  dir: string;
  log(): string;
  /** SIGSTOP / SIGCONT: etcd stops answering without closing a connection */
  pause(): void;
  resume(): void;
  /** SIGKILL, and wait until it is gone (its directory stays until stop) */
  kill(): Promise<void>;
  /** start it again on the same ports and data (after stop(keepData) or kill) */
  restart(): Promise<void>;
  stop(): Promise<void>;
  /** stop (SIGTERM), keeping its data for a restart */
  halt(): Promise<void>;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of running) {
    try {
      p.kill('SIGKILL');
    } catch {
      // gone
    }
  }
});

export function etcdBinary(): string {
  for (const p of [process.env.PGHA_ETCD_BIN, '/usr/bin/etcd', '/usr/local/bin/etcd'].filter((x): x is string => Boolean(x))) if (existsSync(p)) return p;
  const r = spawnSync('sh', ['-c', 'command -v etcd'], { encoding: 'utf8' });
  if (r.status === 0 && r.stdout.trim()) return r.stdout.trim();
  throw new Error('etcd not found: install it (Debian: apt-get install etcd-server; .ci/run does)');
}

/** start one etcd member; `listen` adds addresses besides 127.0.0.1 (same port); `port`: its client port (default a free one) */
export async function startEtcd(opts: { listen?: string[]; name?: string; port?: number } = {}): Promise<EtcdServer> {
  const port = opts.port ?? (await freePort());
  const peerPort = await freePort();
  const name = opts.name ?? 'pgha-test';
  return startMember({ name, port, peerPort, listen: opts.listen, initialCluster: `${name}=http://127.0.0.1:${peerPort}` });
}

/**
 * An etcd cluster of `members` (3: one may die and the others keep a quorum), all on loopback,
 * started together and stopped by PID.
 */
export async function startEtcdCluster(members = 3): Promise<{ members: EtcdServer[]; urls: string[]; stop(): Promise<void> }> {
  const ports = [];
  for (let i = 0; i < members; i++) ports.push({ port: await freePort(), peerPort: await freePort(), name: `pgha-m${i + 1}` });
  const initialCluster = ports.map((p) => `${p.name}=http://127.0.0.1:${p.peerPort}`).join(',');
  const token = `pgha-${process.pid}-${ports[0].peerPort}`;
  const settled = await Promise.allSettled(ports.map((p) => startMember({ ...p, initialCluster, token })));
  const up = settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  const stop = async () => {
    for (const m of up) await m.stop();
  };
  if (failed) {
    await stop();
    throw failed.reason;
  }
  return { members: up, urls: up.map((m) => m.url), stop };
}

async function startMember(o: { name: string; port: number; peerPort: number; initialCluster: string; listen?: string[]; token?: string }): Promise<EtcdServer> {
  const bin = etcdBinary();
  const { name, port, peerPort } = o;
  const dir = mkdtempSync(join(tmpdir(), 'pgha-etcd-'));
  const logFile = join(dir, 'etcd.log');
  const hosts = ['127.0.0.1', ...(o.listen ?? [])];
  const args = [
    '--name', name,
    '--data-dir', join(dir, 'data'),
    '--listen-client-urls', hosts.map((h) => `http://${h}:${port}`).join(','),
    '--advertise-client-urls', `http://127.0.0.1:${port}`,
    '--listen-peer-urls', `http://127.0.0.1:${peerPort}`,
    '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
    '--initial-cluster', o.initialCluster,
    '--initial-cluster-token', o.token ?? `pgha-${process.pid}-${peerPort}`,
    '--initial-cluster-state', 'new',
    // on loopback: short raft timers, so a leader is elected (or replaced) within about a second
    '--heartbeat-interval', '50',
    '--election-timeout', '500',
    '--log-level', 'warn',
  ];
  const url = `http://127.0.0.1:${port}`;
  const log = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
  let proc!: ChildProcess;
  let exited: string | null = null;
  let gone: Promise<void> = Promise.resolve();
  const launch = () => {
    const fd = openSync(logFile, 'a');
    try {
      // no ETCD_* from the environment: the flags are the whole configuration
      const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ETCD_')));
      proc = spawn(bin, args, { stdio: ['ignore', fd, fd], env });
    } finally {
      closeSync(fd);
    }
    const me = proc;
    running.add(me);
    exited = null;
    gone = new Promise<void>((resolve) => {
      me.once('exit', (code, signal) => {
        exited = String(code ?? signal);
        running.delete(me);
        resolve();
      });
    });
  };
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(proc.pid!, sig);
    } catch {
      // gone
    }
  };
  const halt = async () => {
    if (exited !== null) return;
    signal('SIGCONT');
    signal('SIGTERM');
    const t = setTimeout(() => signal('SIGKILL'), 5000);
    await gone;
    clearTimeout(t);
  };
  const kill = async () => {
    if (exited !== null) return;
    signal('SIGKILL');
    await gone;
  };
  const stop = async () => {
    await halt();
    if (process.env.PGHA_KEEP_TMP !== '1') rmSync(dir, { recursive: true, force: true });
  };
  const healthy = async (needHealth: boolean) =>
    waitFor(
      async () => {
        if (exited !== null) throw new Error(`etcd exited (${exited}):\n${log().slice(-2000)}`);
        try {
          const r = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
          return needHealth ? r.ok && ((await r.json()) as { health?: string }).health === 'true' : true;
        } catch {
          return false;
        }
      },
      20_000,
      'etcd healthy',
    );
  launch();
  try {
    // a member of a cluster being formed is healthy only once a quorum is up: the others start meanwhile
    await healthy(true);
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    url,
    port,
    urlOn: (host) => `http://${host}:${port}`,
    get pid() {
      return proc.pid!;
    },
    dir,
    log,
    pause: () => signal('SIGSTOP'),
    resume: () => signal('SIGCONT'),
    kill,
    halt,
    restart: async () => {
      await halt();
      launch();
      await healthy(false);
    },
    stop,
  };
}

/** a TCP relay to etcd that can black-hole everything (a network partition as the client sees it) */
export interface Gate {
  url: string;
  cut(): void;
  heal(): void;
  stop(): Promise<void>;
}

export async function etcdGate(targetPort: number): Promise<Gate> {
  let blocked = false;
  const pairs = new Set<[Socket, Socket]>();
  const server: Server = createServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1');
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    client.on('data', (d) => {
      if (!blocked) upstream.write(d);
    });
    upstream.on('data', (d) => {
      if (!blocked) client.write(d);
    });
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  const g: Gate = {
    url: `http://127.0.0.1:${port}`,
    cut: () => {
      blocked = true;
    },
    heal: () => {
      // what was black-holed is lost: the connections that carried it are dropped, as after a partition
      blocked = false;
      for (const [a, b] of [...pairs]) {
        a.destroy();
        b.destroy();
      }
    },
    stop: async () => {
      for (const [a, b] of [...pairs]) {
        a.destroy();
        b.destroy();
      }
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  return g;
}


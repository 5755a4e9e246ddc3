/**
 * A throwaway etcd for the tests: Debian's `etcd` (etcd-server, 3.4) as a child process, one member,
 * its data dir in a temp dir, client and peer ports free on loopback (plus any extra addresses to
 * listen on, e.g. the root side of the net hosts' links so agents inside namespaces reach it),
 * stopped by PID (SIGTERM, then SIGKILL) and its dir removed. `.ci/run` installs etcd-server.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
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
  stop(): Promise<void>;
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
  const bin = etcdBinary();
  const port = opts.port ?? (await freePort());
  const peerPort = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'pgha-etcd-'));
  const logFile = join(dir, 'etcd.log');
  const hosts = ['127.0.0.1', ...(opts.listen ?? [])];
  const name = opts.name ?? 'pgha-test';
  const args = [
    '--name', name,
    '--data-dir', join(dir, 'data'),
    '--listen-client-urls', hosts.map((h) => `http://${h}:${port}`).join(','),
    '--advertise-client-urls', `http://127.0.0.1:${port}`,
    '--listen-peer-urls', `http://127.0.0.1:${peerPort}`,
    '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
    '--initial-cluster', `${name}=http://127.0.0.1:${peerPort}`,
    '--initial-cluster-state', 'new',
    // one member on loopback: short raft timers so it is leader of itself at once
    '--heartbeat-interval', '50',
    '--election-timeout', '500',
    '--log-level', 'warn',
  ];
  const fd = openSync(logFile, 'a');
  let proc: ChildProcess;
  try {
    // no ETCD_* from the environment: the flags are the whole configuration
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ETCD_')));
    proc = spawn(bin, args, { stdio: ['ignore', fd, fd], env });
  } finally {
    closeSync(fd);
  }
  running.add(proc);
  let exited: string | null = null;
  const gone = new Promise<void>((resolve) => {
    proc.once('exit', (code, signal) => {
      exited = String(code ?? signal);
      running.delete(proc);
      resolve();
    });
  });
  const url = `http://127.0.0.1:${port}`;
  const log = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
  const stop = async () => {
    if (exited === null) {
      try {
        process.kill(proc.pid!, 'SIGCONT');
        process.kill(proc.pid!, 'SIGTERM');
      } catch {
        // gone
      }
      const t = setTimeout(() => {
        try {
          process.kill(proc.pid!, 'SIGKILL');
        } catch {
          // gone
        }
      }, 5000);
      await gone;
      clearTimeout(t);
    }
    if (process.env.PGHA_KEEP_TMP !== '1') rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(
      async () => {
        if (exited !== null) throw new Error(`etcd exited (${exited}):\n${log().slice(-2000)}`);
        try {
          const r = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
          return r.ok && ((await r.json()) as { health?: string }).health === 'true';
        } catch {
          return false;
        }
      },
      20_000,
      'etcd healthy',
    );
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    url,
    port,
    urlOn: (host) => `http://${host}:${port}`,
    pid: proc.pid!,
    dir,
    log,
    pause: () => process.kill(proc.pid!, 'SIGSTOP'),
    resume: () => process.kill(proc.pid!, 'SIGCONT'),
    stop,
  };
}

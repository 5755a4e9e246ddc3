/**
 * Every process `pgha demo` starts, by PID: long-running ones (postgres, agents, the proxy) with
 * their output in a log file, and short tool runs (initdb, pg_basebackup). Nothing is found by
 * name: cleanup stops what is registered here, the postmasters named by each data directory's
 * postmaster.pid (an agent may have restarted one), and the descendants of what it started.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { randomInt } from 'node:crypto';
import { createServer } from 'node:net';
import { childPids, processAlive, processIds } from '../pg/instance.js';

export { processAlive };

export class DemoError extends Error {
  /** where to look: a log file, a data directory */
  constructor(
    message: string,
    readonly where?: string,
  ) {
    super(message);
  }
}

export interface Tracked {
  name: string;
  pid: number;
  logFile: string | null;
  /** long-running: its exit before cleanup is reported (unless it was expected) */
  watched: boolean;
  exit: { code: number | null; signal: NodeJS.Signals | null } | null;
  exited: Promise<void>;
  child: ChildProcess;
}

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** stdout and stderr appended here (default: captured in memory for tool runs) */
  logFile?: string;
  /** an unexpected exit of this process ends the demo with an error naming its log file */
  watched?: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** the user PostgreSQL runs as: the demo's own, or `postgres` when we are root (PostgreSQL refuses root) */
export function asServerUser(cmd: string, args: string[], user: string | null): [string, string[]] {
  return user ? ['runuser', ['-u', user, '--', cmd, ...args]] : [cmd, args];
}

/**
 * A free TCP port on 127.0.0.1, never one handed out before by this process. Taken below the
 * kernel's ephemeral range (ip_local_port_range), where the source ports of outgoing connections
 * come from: a port the kernel hands to listen(0) can be taken by any process's next connect()
 * before the server meant for it binds it. Each vitest worker (VITEST_POOL_ID) draws from its own
 * slice, so that two workers never pick the same port between checking and binding it. Where the
 * ephemeral range leaves too little room below it, the kernel's choice.
 */
const handedOut = new Set<number>();
export async function freePort(): Promise<number> {
  const slice = portSlice();
  if (slice) {
    for (let i = 0; i < 100; i++) {
      const port = slice.from + randomInt(slice.size);
      if (handedOut.has(port)) continue;
      if (await listensOn(port)) {
        handedOut.add(port);
        return port;
      }
    }
  }
  for (;;) {
    const port = await listensOn(0);
    if (port && !handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

/** binds 127.0.0.1:port (0: any) and lets it go: the port bound, or 0 when it is taken */
function listensOn(port: number): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', () => resolve(0));
    srv.listen(port, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => resolve(typeof addr === 'object' && addr ? addr.port : 0));
    });
  });
}

/** this process's slice of the ports between 10000 and the ephemeral range (null: no room there) */
function portSlice(): { from: number; size: number } | null {
  let low = 32768;
  try {
    low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || low;
  } catch {
    // not Linux: the usual default
  }
  const room = low - 10000;
  if (room < 4000) return null;
  const slices = 8;
  const size = Math.floor(room / slices);
  const worker = Number(process.env.VITEST_POOL_ID ?? 0) % slices;
  return { from: 10000 + worker * size, size };
}

/** every descendant of `pid` (children first found, then theirs), from /proc */
export function descendants(pid: number): number[] {
  const out: number[] = [];
  const queue = [pid];
  while (queue.length) {
    const p = queue.shift()!;
    for (const c of childPids(p)) {
      if (!out.includes(c)) {
        out.push(c);
        queue.push(c);
      }
    }
  }
  return out;
}

/** processes whose command line mentions `text` (the demo's unique temp dir) — a sweep by PID after cleanup */
export function pidsMentioning(text: string): number[] {
  return processIds().filter((p) => {
    if (p === process.pid) return false;
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(text) && processAlive(p);
    } catch {
      return false; // gone meanwhile
    }
  });
}

export function postmasterPid(dataDir: string): number | null {
  const f = `${dataDir}/postmaster.pid`;
  if (!existsSync(f)) return null;
  try {
    const pid = Number(readFileSync(f, 'utf8').split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // gone
  }
}

/** send `sig`, wait up to `ms` for every pid to be gone, then SIGKILL what is left */
export async function stopPids(pids: number[], sig: NodeJS.Signals, ms: number): Promise<void> {
  const live = pids.filter(processAlive);
  for (const p of live) signal(p, sig);
  const deadline = Date.now() + ms;
  while (Date.now() < deadline && live.some(processAlive)) await sleep(25);
  for (const p of live) if (processAlive(p)) signal(p, 'SIGKILL');
  const hard = Date.now() + 5000;
  while (Date.now() < hard && live.some(processAlive)) await sleep(25);
}

export class ProcessSet {
  /** set once cleanup starts: nothing new is started after that */
  closing = false;
  private readonly procs: Tracked[] = [];
  /** every PID ever started or adopted here (the JSON report lists them) */
  readonly everStarted = new Set<number>();
  private readonly expected = new Set<number>();
  private deathHandler: ((t: Tracked) => void) | null = null;

  constructor() {
    // last resort: this process ends without cleanup (an uncaught error) — kill what is left by PID
    process.once('exit', () => {
      for (const t of this.procs) if (!t.exit) signal(t.pid, 'SIGKILL');
    });
  }

  /** called when a watched process exits while the demo runs */
  onUnexpectedExit(fn: (t: Tracked) => void): void {
    this.deathHandler = fn;
  }

  /** this process may exit from now on without that being an error (a postmaster an agent restarts) */
  expectExit(pid: number): void {
    this.expected.add(pid);
  }

  adopt(pid: number): void {
    this.everStarted.add(pid);
  }

  start(name: string, cmd: string, args: string[], o: SpawnOptions = {}): Tracked {
    if (this.closing) throw new DemoError(`not starting ${name}: the demo is stopping`);
    let fd: number | null = null;
    if (o.logFile) fd = openSync(o.logFile, 'a');
    let child: ChildProcess;
    try {
      // its own process group: a Ctrl-C on the terminal reaches the demo, which stops everything in order
      child = spawn(cmd, args, { env: o.env ?? process.env, cwd: o.cwd, detached: true, stdio: ['ignore', fd ?? 'pipe', fd ?? 'pipe'] });
    } finally {
      if (fd !== null) closeSync(fd);
    }
    let resolveExit!: () => void;
    const t: Tracked = {
      name,
      pid: child.pid ?? -1,
      logFile: o.logFile ?? null,
      watched: o.watched === true,
      exit: null,
      exited: new Promise<void>((r) => (resolveExit = r)),
      child,
    };
    const done = (code: number | null, sig: NodeJS.Signals | null) => {
      if (t.exit) return;
      t.exit = { code, signal: sig };
      resolveExit();
      if (t.watched && !this.closing && !this.expected.has(t.pid)) this.deathHandler?.(t);
    };
    child.once('exit', done);
    child.once('error', (e) => {
      if (!t.exit) t.exit = { code: null, signal: null };
      resolveExit();
      if (t.watched && !this.closing) this.deathHandler?.({ ...t, name: `${name} (${e.message})` });
    });
    if (t.pid > 0) this.everStarted.add(t.pid);
    this.procs.push(t);
    return t;
  }

  /** a short tool run: resolves with its output, rejects with the last lines of stderr on a failure */
  async run(name: string, cmd: string, args: string[], o: SpawnOptions = {}): Promise<string> {
    const t = this.start(name, cmd, args, o);
    let out = '';
    t.child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    t.child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    await t.exited;
    if (t.exit?.code !== 0) {
      const detail = (o.logFile && existsSync(o.logFile) ? readFileSync(o.logFile, 'utf8') : out).trim().split('\n').slice(-3).join(' | ');
      throw new DemoError(`${name} failed (${t.exit?.code ?? t.exit?.signal ?? 'no exit status'}): ${detail}`, o.logFile);
    }
    return out;
  }

  /** the processes started here that are still alive */
  alive(): Tracked[] {
    return this.procs.filter((t) => !t.exit && processAlive(t.pid));
  }

  /**
   * Stop the ones matching `which` (all by default): SIGTERM (or `sig`), then SIGKILL after `ms`;
   * their descendants (a tool an agent was running) too.
   */
  async stop(which: (t: Tracked) => boolean = () => true, sig: NodeJS.Signals = 'SIGTERM', ms = 5000): Promise<void> {
    const targets = this.procs.filter((t) => !t.exit && which(t));
    const kids = targets.flatMap((t) => descendants(t.pid));
    for (const k of kids) this.everStarted.add(k);
    for (const t of targets) signal(t.pid, sig);
    const deadline = Date.now() + ms;
    while (Date.now() < deadline && targets.some((t) => !t.exit)) await sleep(25);
    for (const t of targets) if (!t.exit) signal(t.pid, 'SIGKILL');
    await Promise.race([Promise.all(targets.map((t) => t.exited)), sleep(5000)]);
    // what they were running (pg_rewind, pg_ctl…) must not outlive them
    await stopPids(kids, 'SIGKILL', 0);
  }

  /** right now, without waiting (the process is exiting) */
  killAllSync(): void {
    for (const t of this.procs) if (!t.exit) signal(t.pid, 'SIGKILL');
  }
}

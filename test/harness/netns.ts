/**
 * Network cuts for the HA tests: a Linux network namespace per "host", joined to the root namespace
 * by a veth pair with point-to-point /30 addresses out of a range reserved for the tests
 * (10.231.0.0/16). Everything is created and removed by the test itself:
 *
 *  - root side of the veth: 10.231.a.b+1/30, namespace side: +2/30; `lo` up and a default route via
 *    the root side inside the namespace;
 *  - in the root namespace an `unreachable 10.231.0.0/16` route, so that when a link is down (its
 *    connected /30 route gone) packets to the range end there instead of leaving by the default
 *    route; forwarding is switched on for our veths only (namespace ↔ namespace through the root),
 *    and two policy rules keep forwarded traffic inside the range: `from 10.231/16 to 10.231/16
 *    lookup main`, then `from 10.231/16 unreachable` — a namespace never reaches beyond this machine;
 *  - cut() takes both ends of the link down at once; heal() brings them up and restores the route.
 *
 * Names carry the pid (`pgha-<pid36>-<n>`, veth `ph-<pid36>-<n>` / `pn-<pid36>-<n>`) so two test
 * workers never collide; leftovers of a crashed run (pid no longer alive) are removed at first use.
 * Creation, the shared route/rules and their removal happen under a cross-process lock directory.
 */
import { spawnSync, type SpawnSyncOptions, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { processAlive } from '../../src/pg/instance.js';

/** the address range reserved for the tests' network namespaces */
export const NET_RANGE = '10.231.0.0/16';
const RANGE_OCTETS = [10, 231] as const;
const SLOTS = 1 << 14; // /30s in the /16
const NS_PREFIX = 'pgha-';
const VETH_HOST_PREFIX = 'ph-';
const VETH_PEER_PREFIX = 'pn-';
const NAME_RE = /^pgha-([0-9a-z]+)-([0-9a-z]+)$/;
const VETH_RE = /^ph-([0-9a-z]+)-([0-9a-z]+)$/;
const RULE_PREF_INSIDE = 10231;
const RULE_PREF_BLOCK = 10232;
const LOCK_DIR = '/run/pgha-netns.lock';

let ipPath: string | undefined;

/** the `ip` binary (root's PATH usually has /usr/sbin; else the usual places), looked up once */
export function ipBin(): string {
  if (ipPath === undefined) {
    ipPath = 'ip';
    if (spawnSync('ip', ['-V'], { encoding: 'utf8' }).error) {
      for (const p of ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip']) {
        if (existsSync(p)) {
          ipPath = p;
          break;
        }
      }
    }
  }
  return ipPath;
}

export class NetnsError extends Error {}

export interface NetHost {
  /** the name given to createNetHost (for messages) */
  readonly name: string;
  /** the network namespace, `pgha-<pid36>-<n>` */
  readonly ns: string;
  /** the namespace side address (what clients connect to) */
  readonly ip: string;
  /** the root side address (the namespace's default gateway) */
  readonly hostIp: string;
  /** veth interface in the root namespace */
  readonly vethHost: string;
  /** veth interface inside the namespace */
  readonly vethPeer: string;
  /** true between cut() and heal() */
  readonly isCut: boolean;
  readonly destroyed: boolean;
  /** both ends of the link down: nothing in or out of the namespace (but its own loopback) */
  cut(): Promise<void>;
  /** links up again and the default route inside restored; resolves once traffic can flow */
  heal(): Promise<void>;
  /** argv prefix that runs `args` inside the namespace: ['ip','netns','exec',ns, ...args] */
  exec(args: string[]): string[];
  /** run a command inside the namespace (synchronously) */
  run(args: string[], opts?: SpawnSyncOptions): SpawnSyncReturns<string>;
  /** pids of the processes living in the namespace */
  pids(): number[];
  /** kill what still runs inside, delete the veth and the namespace (idempotent) */
  destroy(): Promise<void>;
}

function ip(args: string[], opts: { allowFailure?: boolean } = {}): SpawnSyncReturns<string> {
  const r = spawnSync(ipBin(), args, { encoding: 'utf8' });
  if (!opts.allowFailure && r.status !== 0) {
    throw new NetnsError(`ip ${args.join(' ')} failed (exit ${r.status}${r.signal ? `, ${r.signal}` : ''}): ${(r.stderr || r.stdout || String(r.error ?? '')).trim()}`);
  }
  return r;
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ---- cross-process lock (a directory; its owner's pid inside; broken when that pid is dead) ----

let lockDepth = 0;

function withLock<T>(fn: () => T): T {
  if (lockDepth > 0) {
    lockDepth++;
    try {
      return fn();
    } finally {
      lockDepth--;
    }
  }
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      mkdirSync(LOCK_DIR);
      writeFileSync(join(LOCK_DIR, 'owner'), String(process.pid));
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    let stale = false;
    try {
      const owner = Number(readFileSync(join(LOCK_DIR, 'owner'), 'utf8'));
      stale = owner > 0 && (owner === process.pid || !processAlive(owner));
    } catch {
      // no owner file yet: its creator is between mkdir and write — unless that was long ago
      try {
        stale = Date.now() - statSync(LOCK_DIR).mtimeMs > 10_000;
      } catch {
        stale = false;
      }
    }
    if (stale) {
      rmSync(LOCK_DIR, { recursive: true, force: true });
      continue;
    }
    if (Date.now() > deadline) throw new NetnsError(`could not take ${LOCK_DIR} within 60 s`);
    sleepSync(20);
  }
  lockDepth = 1;
  try {
    return fn();
  } finally {
    lockDepth = 0;
    rmSync(LOCK_DIR, { recursive: true, force: true });
  }
}

// ---- the shared root-namespace state: unreachable route + policy rules ----

function ensureRangeState(): void {
  ip(['route', 'replace', 'unreachable', NET_RANGE]);
  const rules = ip(['rule', 'list']).stdout;
  if (!new RegExp(`^${RULE_PREF_INSIDE}:`, 'm').test(rules)) {
    ip(['rule', 'add', 'pref', String(RULE_PREF_INSIDE), 'from', NET_RANGE, 'to', NET_RANGE, 'lookup', 'main']);
  }
  if (!new RegExp(`^${RULE_PREF_BLOCK}:`, 'm').test(rules)) {
    ip(['rule', 'add', 'pref', String(RULE_PREF_BLOCK), 'from', NET_RANGE, 'unreachable']);
  }
}

function removeRangeState(): void {
  ip(['route', 'del', 'unreachable', NET_RANGE], { allowFailure: true });
  for (const pref of [RULE_PREF_INSIDE, RULE_PREF_BLOCK]) {
    for (let i = 0; i < 10 && ip(['rule', 'del', 'pref', String(pref)], { allowFailure: true }).status === 0; i++);
  }
}

/** names of the network namespaces with our prefix */
export function listPghaNamespaces(): string[] {
  return ip(['netns', 'list'], { allowFailure: true })
    .stdout.split('\n')
    .map((l) => l.trim().split(/\s+/)[0])
    .filter((n) => n && n.startsWith(NS_PREFIX));
}

function rootLinks(): string[] {
  return ip(['-o', 'link', 'show'], { allowFailure: true })
    .stdout.split('\n')
    .map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1])
    .filter((n): n is string => !!n);
}

function nsPids(ns: string): number[] {
  return ip(['netns', 'pids', ns], { allowFailure: true })
    .stdout.split('\n')
    .map((s) => Number(s.trim()))
    .filter((n) => Number.isInteger(n) && n > 0);
}

/** SIGKILL everything in the namespace and wait until nothing lives there */
function killNamespace(ns: string): void {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const pids = nsPids(ns).filter((p) => p !== process.pid && processAlive(p));
    if (pids.length === 0) return;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    if (Date.now() > deadline) throw new NetnsError(`processes ${pids.join(' ')} in ${ns} do not die`);
    sleepSync(20);
  }
}

function deleteNamespace(ns: string, vethHost: string): void {
  killNamespace(ns);
  ip(['link', 'del', vethHost], { allowFailure: true });
  ip(['netns', 'del', ns], { allowFailure: true });
}

const ownPid36 = process.pid.toString(36);
let swept = false;

/**
 * Remove namespaces and veths a dead process left behind (and, once, any carrying our own pid: a
 * crashed earlier run that had this pid — we have made none yet). Under the lock.
 */
function sweepStale(): void {
  const stale = (pid36: string) => {
    const pid = parseInt(pid36, 36);
    if (pid === process.pid) return !swept;
    return !processAlive(pid);
  };
  for (const ns of listPghaNamespaces()) {
    const m = NAME_RE.exec(ns);
    if (m && stale(m[1])) deleteNamespace(ns, `${VETH_HOST_PREFIX}${m[1]}-${m[2]}`);
  }
  for (const link of rootLinks()) {
    const m = VETH_RE.exec(link);
    if (m && stale(m[1])) ip(['link', 'del', link], { allowFailure: true });
  }
  swept = true;
}

/** /30 slots whose root side address is already on some interface of the root namespace */
function usedSlots(): Set<number> {
  const used = new Set<number>();
  const re = new RegExp(`inet ${RANGE_OCTETS[0]}\\.${RANGE_OCTETS[1]}\\.(\\d+)\\.(\\d+)/`, 'g');
  for (const m of ip(['-o', '-4', 'addr', 'show']).stdout.matchAll(re)) used.add((Number(m[1]) * 256 + Number(m[2])) >> 2);
  return used;
}

function slotAddress(slot: number, offset: 1 | 2): string {
  const n = slot * 4 + offset;
  return `${RANGE_OCTETS[0]}.${RANGE_OCTETS[1]}.${n >> 8}.${n & 255}`;
}

const hosts = new Set<NetHostImpl>();
let seq = 0;
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => destroyAllNetHostsSync());
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      destroyAllNetHostsSync();
      process.exit(130);
    });
  }
}

class NetHostImpl implements NetHost {
  private cutState = false;
  private gone = false;

  constructor(
    readonly name: string,
    readonly ns: string,
    readonly ip: string,
    readonly hostIp: string,
    readonly vethHost: string,
    readonly vethPeer: string,
  ) {}

  get isCut(): boolean {
    return this.cutState;
  }

  get destroyed(): boolean {
    return this.gone;
  }

  exec(args: string[]): string[] {
    return [ipBin(), 'netns', 'exec', this.ns, ...args];
  }

  run(args: string[], opts: SpawnSyncOptions = {}): SpawnSyncReturns<string> {
    const [cmd, ...argv] = this.exec(args);
    return spawnSync(cmd, argv, { encoding: 'utf8', ...opts }) as SpawnSyncReturns<string>;
  }

  pids(): number[] {
    return nsPids(this.ns);
  }

  private alive(): void {
    if (this.gone) throw new NetnsError(`net host ${this.name} (${this.ns}) was destroyed`);
  }

  async cut(): Promise<void> {
    this.alive();
    // the unreachable route must be there before the connected route goes
    withLock(() => ensureRangeState());
    ip(['link', 'set', this.vethHost, 'down']);
    ip(['-n', this.ns, 'link', 'set', this.vethPeer, 'down']);
    this.cutState = true;
  }

  async heal(): Promise<void> {
    this.alive();
    ip(['link', 'set', this.vethHost, 'up']);
    ip(['-n', this.ns, 'link', 'set', this.vethPeer, 'up']);
    // taking the link down flushed the default route inside; the connected /30s come back on their own
    ip(['-n', this.ns, 'route', 'replace', 'default', 'via', this.hostIp]);
    const deadline = Date.now() + 10_000;
    for (;;) {
      const up = (args: string[]) => /\bLOWER_UP\b/.test(ip(args, { allowFailure: true }).stdout);
      const routed = ip(['route', 'get', this.ip], { allowFailure: true }).stdout.includes(`dev ${this.vethHost}`);
      if (up(['link', 'show', this.vethHost]) && up(['-n', this.ns, 'link', 'show', this.vethPeer]) && routed) break;
      if (Date.now() > deadline) throw new NetnsError(`${this.vethHost} of ${this.ns} did not come up`);
      await sleep(20);
    }
    this.cutState = false;
  }

  destroySync(): void {
    if (this.gone) return;
    this.gone = true;
    hosts.delete(this);
    try {
      withLock(() => {
        deleteNamespace(this.ns, this.vethHost);
        sweepStale();
        // the shared route and rules go with the last namespace of any test process
        if (listPghaNamespaces().length === 0) removeRangeState();
      });
    } catch (e) {
      // at exit there is no one to tell; elsewhere the caller should know
      deleteNamespace(this.ns, this.vethHost);
      throw e;
    }
  }

  async destroy(): Promise<void> {
    this.destroySync();
  }
}

/**
 * A network namespace joined to the root namespace by its own veth pair and /30; see the file
 * comment. `name` is only a label.
 */
export async function createNetHost(name: string): Promise<NetHost> {
  installExitHook();
  const id = (seq++).toString(36);
  const ns = `${NS_PREFIX}${ownPid36}-${id}`;
  const vethHost = `${VETH_HOST_PREFIX}${ownPid36}-${id}`;
  const vethPeer = `${VETH_PEER_PREFIX}${ownPid36}-${id}`;
  if (vethHost.length > 15) throw new NetnsError(`interface name ${vethHost} too long`);
  return withLock(() => {
    sweepStale();
    ensureRangeState();
    const used = usedSlots();
    let slot = -1;
    for (let i = 0; i < SLOTS; i++) {
      const s = (process.pid * 97 + i) % SLOTS;
      if (!used.has(s)) {
        slot = s;
        break;
      }
    }
    if (slot < 0) throw new NetnsError(`no free /30 left in ${NET_RANGE}`);
    const h = new NetHostImpl(name, ns, slotAddress(slot, 2), slotAddress(slot, 1), vethHost, vethPeer);
    try {
      ip(['netns', 'add', ns]);
      ip(['link', 'add', vethHost, 'type', 'veth', 'peer', 'name', vethPeer, 'netns', ns]);
      ip(['addr', 'add', `${h.hostIp}/30`, 'dev', vethHost]);
      // namespace ↔ namespace through the root; the policy rules keep it inside the range
      writeFileSync(`/proc/sys/net/ipv4/conf/${vethHost}/forwarding`, '1');
      ip(['link', 'set', vethHost, 'up']);
      ip(['-n', ns, 'link', 'set', 'lo', 'up']);
      ip(['-n', ns, 'addr', 'add', `${h.ip}/30`, 'dev', vethPeer]);
      ip(['-n', ns, 'link', 'set', vethPeer, 'up']);
      ip(['-n', ns, 'route', 'add', 'default', 'via', h.hostIp]);
    } catch (e) {
      deleteNamespace(ns, vethHost);
      throw e;
    }
    hosts.add(h);
    return h;
  });
}

function destroyAllNetHostsSync(): void {
  for (const h of [...hosts]) {
    try {
      h.destroySync();
    } catch {
      // best effort at exit
    }
  }
}

/** destroy every net host this process made (afterAll) */
export async function destroyAllNetHosts(): Promise<void> {
  const errors: unknown[] = [];
  for (const h of [...hosts]) {
    try {
      h.destroySync();
    } catch (e) {
      errors.push(e);
    }
  }
  if (errors.length) throw errors[0];
}

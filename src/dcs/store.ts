/**
 * One cluster's state on etcd (keys.ts): a thin layer over the `etcd3` client that gives every
 * unary call a deadline, keeps track of whether etcd answers, and offers the few operations pgha
 * needs — reads, watches (initial value + changes, re-read after a reconnect), the compare-and-swap
 * of the primary with its history entry in the same transaction, the synchronous record, members.
 *
 * Fault handling: a gRPC channel that lost its server reconnects within a second (not gRPC's
 * default of up to two minutes), a host circuit breaker opens after 3 failures for 500 ms only (so
 * with several endpoints a dead one is skipped, and a healed one is used again at once), and a
 * failed call is retried once.
 */
import { hostname } from 'node:os';
import { circuitBreaker, ConsecutiveBreaker, ExponentialBackoff, handleWhen, retry, type IBackoff } from 'cockatiel';
import { Etcd3, isRecoverableError, type IKeyValue } from 'etcd3';
import {
  clusterKeys,
  parseRecord,
  type ClusterKeys,
  type HistoryRecord,
  type LeaderRecord,
  type MemberRecord,
  type PrimaryLeaseRecord,
  type PrimaryRecord,
  type SlotsRecordView,
  type SyncRecordView,
} from './keys.js';

export interface StoreOptions {
  endpoints: string[];
  cluster: string;
  /** deadline of one unary call (default 2000 ms) */
  callTimeoutMs?: number;
}

export interface Versioned<T> {
  value: T | null;
  raw: string | null;
  /** etcd's mod revision of the key (of its deletion for a delete event), '0' when it never existed */
  modRevision: string;
  /** the lease the key is bound to ('0': none) */
  lease: string;
}

/** the outcome of a compare-and-swap */
export interface SwapResult {
  ok: boolean;
  /** the value found when it was refused */
  current: PrimaryRecord | null;
  /** why it was refused */
  reason: string | null;
  history: number | null;
}

export type Unwatch = () => Promise<void>;

type Watcher = Awaited<ReturnType<ReturnType<Etcd3['watch']>['create']>>;

const big = (s: string | number | undefined | null) => BigInt(s ?? 0);

export class ClusterStore {
  readonly client: Etcd3;
  readonly keys: ClusterKeys;
  readonly endpoints: string[];
  readonly cluster: string;
  readonly callTimeoutMs: number;
  /** the last call that reached etcd, and the last error */
  readonly health = { lastOk: 0, lastError: null as string | null, lastErrorAt: 0 };
  /** the highest etcd revision this process has seen (a read's header, a watch event, a transaction) */
  revision = '0';
  private readonly watchers = new Set<Watcher>();
  private closed = false;

  constructor(o: StoreOptions) {
    this.endpoints = o.endpoints;
    this.cluster = o.cluster;
    this.keys = clusterKeys(o.cluster);
    this.callTimeoutMs = o.callTimeoutMs ?? 2000;
    this.client = new Etcd3({
      hosts: o.endpoints,
      dialTimeout: this.callTimeoutMs,
      grpcOptions: {
        'grpc.initial_reconnect_backoff_ms': 100,
        'grpc.min_reconnect_backoff_ms': 100,
        'grpc.max_reconnect_backoff_ms': 1000,
        // etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time): it would answer
        // with GOAWAY "too many pings" and drop the connection
        'grpc.keepalive_time_ms': 5000,
        'grpc.keepalive_timeout_ms': 2000,
        'grpc.keepalive_permit_without_calls': 1,
      },
      // streams (watches, lease keep-alives) carry their own deadline or none
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + this.callTimeoutMs }),
      faultHandling: {
        host: () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: 500, breaker: new ConsecutiveBreaker(3) }),
        global: retry(handleWhen(isRecoverableError), { maxAttempts: 1 }),
        // etcd3 types this as a backoff but calls .next() on it: it is the factory it wants
        watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 1000 }) as unknown as IBackoff<unknown>,
      },
    });
  }

  /** etcd answered within the last `withinMs` */
  healthy(withinMs: number): boolean {
    return this.health.lastOk > 0 && Date.now() - this.health.lastOk <= withinMs && this.health.lastOk >= this.health.lastErrorAt;
  }

  /**
   * etcd answered something within the last `withinMs` (errors meanwhile do not count: with several
   * endpoints a dead one keeps failing while the others answer)
   */
  answeredWithin(withinMs: number): boolean {
    return this.health.lastOk > 0 && Date.now() - this.health.lastOk <= withinMs;
  }

  /** run one call, noting whether etcd answered */
  async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      const r = await fn();
      this.health.lastOk = Date.now();
      return r;
    } catch (e) {
      this.health.lastError = (e as Error).message;
      this.health.lastErrorAt = Date.now();
      throw e;
    }
  }

  noteOk(): void {
    this.health.lastOk = Date.now();
  }

  /** remember etcd's revision (it only grows) */
  noteRevision(rev: string | number | undefined | null): void {
    if (rev !== undefined && rev !== null && big(rev) > big(this.revision)) this.revision = String(rev);
  }

  noteError(e: unknown): void {
    this.health.lastError = (e as Error).message ?? String(e);
    this.health.lastErrorAt = Date.now();
  }

  async read<T extends object>(key: string): Promise<Versioned<T>> {
    const res = await this.call(() => this.client.get(key).exec());
    this.noteRevision(res.header.revision);
    return versioned<T>(res.kvs[0] ?? null, res.header.revision);
  }

  async readPrefix<T extends object>(prefix: string): Promise<Array<{ key: string; value: T }>> {
    const res = await this.call(() => this.client.getAll().prefix(prefix).exec());
    this.noteRevision(res.header.revision);
    return res.kvs
      .map((kv) => ({ key: kv.key.toString(), value: parseRecord<T>(kv.value.toString()) }))
      .filter((x): x is { key: string; value: T } => x.value !== null)
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /**
   * Watch one key (or a prefix): `onChange` is called with the current value first, then on every
   * change, and again after the watch reconnected (a change missed meanwhile is read then). Values
   * never go back in revision.
   */
  async watch<T extends object>(key: string, onChange: (v: Versioned<T>) => void, opts: { prefix?: boolean } = {}): Promise<Unwatch> {
    let last = -1n;
    const deliver = (v: Versioned<T>) => {
      this.noteRevision(v.modRevision);
      const rev = big(v.modRevision);
      if (!opts.prefix && rev < last) return;
      last = rev;
      onChange(v);
    };
    const reread = async () => {
      try {
        if (opts.prefix) {
          const res = await this.call(() => this.client.getAll().prefix(key).exec());
          deliver({ value: null, raw: null, modRevision: res.header.revision, lease: '0' });
        } else deliver(await this.read<T>(key));
      } catch {
        // the watch will reconnect and read again
      }
    };
    const b = this.client.watch();
    const w = await (opts.prefix ? b.prefix(key) : b.key(key)).create();
    this.watchers.add(w);
    let disconnected = false;
    w.on('put', (kv) => {
      this.noteOk();
      deliver(versioned<T>(kv, kv.mod_revision));
    });
    w.on('delete', (kv) => {
      this.noteOk();
      deliver({ value: null, raw: null, modRevision: kv.mod_revision, lease: '0' });
    });
    w.on('disconnected', (e) => {
      disconnected = true;
      this.noteError(e);
    });
    w.on('connected', () => {
      this.noteOk();
      if (disconnected) {
        disconnected = false;
        void reread();
      }
    });
    w.on('error', (e) => this.noteError(e));
    await reread();
    return async () => {
      this.watchers.delete(w);
      await w.cancel().catch(() => undefined);
    };
  }

  // ------------------------------------------------------------------ the primary

  async primary(): Promise<Versioned<PrimaryRecord>> {
    return this.read<PrimaryRecord>(this.keys.primary);
  }

  async history(): Promise<HistoryRecord[]> {
    return (await this.readPrefix<HistoryRecord>(this.keys.history)).map((x) => x.value);
  }

  private async nextHistory(): Promise<number> {
    const res = await this.call(() => this.client.getAll().prefix(this.keys.history).keys());
    let n = 0;
    for (const k of res) {
      const m = /(\d+)$/.exec(k);
      if (m) n = Math.max(n, Number(m[1]));
    }
    return n + 1;
  }

  /**
   * Compare-and-swap of the primary: write `next` (and its history entry) only if the primary key
   * still holds `expectedRaw` exactly (null: the key must not exist) and, with `guard`, the guard
   * key still holds its value (the decider is still the leader). Two deciders can never both succeed.
   */
  async swapPrimary(
    expectedRaw: string | null,
    next: PrimaryRecord,
    entry: { kind: HistoryRecord['kind']; trigger: HistoryRecord['trigger']; from: PrimaryRecord | null },
    guard?: { key: string; raw: string },
  ): Promise<SwapResult> {
    const n = await this.nextHistory();
    const history: HistoryRecord = { n, kind: entry.kind, trigger: entry.trigger, from: entry.from, to: next, at: new Date().toISOString(), by: next.by };
    let txn = expectedRaw === null ? this.client.if(this.keys.primary, 'Create', '==', 0) : this.client.if(this.keys.primary, 'Value', '==', expectedRaw);
    txn = txn.and(this.keys.historyEntry(n), 'Create', '==', 0);
    if (guard) txn = txn.and(guard.key, 'Value', '==', guard.raw);
    const res = await this.call(() =>
      txn
        .then(this.client.put(this.keys.primary).value(JSON.stringify(next)), this.client.put(this.keys.historyEntry(n)).value(JSON.stringify(history)))
        .else(this.client.get(this.keys.primary), ...(guard ? [this.client.get(guard.key)] : []))
        .commit(),
    );
    this.noteRevision(res.header.revision);
    if (res.succeeded) return { ok: true, current: next, reason: null, history: n };
    const found = res.responses[0]?.response_range?.kvs?.[0];
    const currentRaw = found ? found.value.toString() : null;
    const current = parseRecord<PrimaryRecord>(currentRaw);
    let reason: string;
    if (currentRaw !== expectedRaw) reason = current ? `etcd records ${current.backend} as the primary (written by ${current.by}), not what this decider read` : 'the primary record changed meanwhile';
    else if (guard) {
      const g = res.responses[1]?.response_range?.kvs?.[0];
      reason = g && g.value.toString() === guard.raw ? 'history entry written meanwhile: try again' : 'this proxy is no longer the leader';
    } else reason = 'history entry written meanwhile: try again';
    return { ok: false, current, reason, history: null };
  }

  async primaryLease(): Promise<Versioned<PrimaryLeaseRecord>> {
    return this.read<PrimaryLeaseRecord>(this.keys.primaryLease);
  }

  /**
   * Wait until `key` is gone or `done(value)` says so (watched, not polled); resolves false after
   * timeoutMs.
   */
  async waitFor<T extends object>(key: string, done: (v: T | null) => boolean, timeoutMs: number): Promise<boolean> {
    let resolve!: (ok: boolean) => void;
    const result = new Promise<boolean>((r) => (resolve = r));
    const timer = setTimeout(() => resolve(false), timeoutMs);
    const unwatch = await this.watch<T>(key, (v) => {
      if (done(v.value)) resolve(true);
    });
    try {
      return await result;
    } finally {
      clearTimeout(timer);
      await unwatch();
    }
  }

  // ------------------------------------------------------------------ the rest

  async putSync(rec: SyncRecordView | null): Promise<void> {
    if (rec) await this.call(() => this.client.put(this.keys.sync).value(JSON.stringify(rec)).exec());
    else await this.call(() => this.client.delete().key(this.keys.sync).exec());
  }

  async putSlots(rec: SlotsRecordView | null): Promise<void> {
    if (rec) await this.call(() => this.client.put(this.keys.slots).value(JSON.stringify(rec)).exec());
    else await this.call(() => this.client.delete().key(this.keys.slots).exec());
  }

  async slots(): Promise<SlotsRecordView | null> {
    return (await this.read<SlotsRecordView>(this.keys.slots)).value;
  }

  async sync(): Promise<SyncRecordView | null> {
    return (await this.read<SyncRecordView>(this.keys.sync)).value;
  }

  async members(): Promise<MemberRecord[]> {
    return (await this.readPrefix<MemberRecord>(this.keys.members)).map((x) => x.value);
  }

  async leader(): Promise<LeaderRecord | null> {
    return (await this.read<LeaderRecord>(this.keys.leader)).value;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of [...this.watchers]) await w.cancel().catch(() => undefined);
    this.watchers.clear();
    this.client.close();
  }
}

function versioned<T extends object>(kv: IKeyValue | null, revision: string): Versioned<T> {
  if (!kv) return { value: null, raw: null, modRevision: revision ?? '0', lease: '0' };
  const raw = kv.value.toString();
  return { value: parseRecord<T>(raw), raw, modRevision: kv.mod_revision, lease: String(kv.lease ?? '0') };
}

/** a process id for leader records: host name and pid */
export function processId(): string {
  return `${hostname()}:${process.pid}`;
}

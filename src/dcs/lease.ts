/**
 * One etcd lease, kept alive by this process, with a local view of how long it is surely valid.
 *
 * etcd starts a lease's TTL again when it receives a keep-alive, so a lease renewed by a request
 * sent at time t lives on the server until at least t + TTL. `validUntil` is exactly that bound
 * (the send time of the last answered grant or keep-alive, plus the TTL etcd granted): while
 * Date.now() < validUntil the keys bound to the lease surely still exist, and once it has passed
 * the lease may be gone and another process may hold what it held. The keeper renews every TTL/4;
 * when validUntil (less `safetyMs`) passes without an answer, or etcd says the lease is gone, it
 * emits 'lost' and grants a new lease as soon as etcd answers again ('granted'). `safetyMs` gives
 * up the lease that much before it can expire on etcd: room for a late timer or a busy event loop
 * between the check and what the holder stops doing.
 */
import { EventEmitter } from 'node:events';
import type { ClusterStore } from './store.js';

export interface LeaseKeeperOptions {
  ttlSeconds: number;
  /** how often to renew (default TTL/4, at least 200 ms) */
  renewEveryMs?: number;
  /** the lease counts as lost this long before validUntil (default 0) */
  safetyMs?: number;
  log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: object) => void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class LeaseKeeper extends EventEmitter {
  /** the current lease (etcd's id as a decimal string), null while there is none */
  id: string | null = null;
  /** the TTL etcd granted (it may round a short one up) */
  grantedTtl = 0;
  /** Date.now() before which the lease surely still exists on the server */
  validUntil = 0;
  /** when the last keep-alive was answered */
  lastRenewal = 0;
  readonly renewEveryMs: number;
  private running = false;
  private loop: Promise<void> | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  private wake: (() => void) | null = null;

  constructor(
    private readonly store: ClusterStore,
    readonly o: LeaseKeeperOptions,
  ) {
    super();
    this.renewEveryMs = o.renewEveryMs ?? Math.max(200, Math.floor((o.ttlSeconds * 1000) / 4));
  }

  /** the lease exists now for sure, and will for `safetyMs` more */
  get valid(): boolean {
    return this.id !== null && Date.now() < this.validUntil - (this.o.safetyMs ?? 0);
  }

  /** ms the lease is still surely valid (0 when not) */
  remainingMs(): number {
    return this.id === null ? 0 : Math.max(0, this.validUntil - Date.now());
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
    this.watchdog = setInterval(() => {
      if (this.id !== null && Date.now() >= this.validUntil - (this.o.safetyMs ?? 0)) this.lose(`no keep-alive answered for ${Date.now() - (this.validUntil - this.grantedTtl * 1000)} ms (TTL ${this.grantedTtl} s)`);
    }, 50);
    this.watchdog.unref?.();
  }

  /** stop renewing; with revoke the lease (and its keys) go now, else they expire after the TTL */
  async stop(revoke: boolean): Promise<void> {
    this.running = false;
    if (this.watchdog) clearInterval(this.watchdog);
    this.wake?.();
    await this.loop;
    const id = this.id;
    this.id = null;
    this.validUntil = 0;
    if (revoke && id !== null) {
      await this.store.call(() => this.store.client.leaseClient.leaseRevoke({ ID: id })).catch(() => undefined);
    }
  }

  private lose(why: string): void {
    if (this.id === null) return;
    const id = this.id;
    this.id = null;
    this.validUntil = 0;
    this.o.log?.('warn', 'etcd lease lost', { lease: id, why });
    this.emit('lost', why);
  }

  private async pause(ms: number): Promise<void> {
    await new Promise<void>((r) => {
      const t = setTimeout(r, ms);
      this.wake = () => {
        clearTimeout(t);
        r();
      };
    });
    this.wake = null;
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (this.running) {
      const sent = Date.now();
      try {
        if (this.id === null) {
          const r = await this.store.call(() => this.store.client.leaseClient.leaseGrant({ TTL: this.o.ttlSeconds }));
          if (!this.running) {
            await this.store.client.leaseClient.leaseRevoke({ ID: r.ID }).catch(() => undefined);
            break;
          }
          this.id = String(r.ID);
          this.grantedTtl = Number(r.TTL);
          this.validUntil = sent + this.grantedTtl * 1000;
          this.lastRenewal = Date.now();
          this.o.log?.('info', 'etcd lease granted', { lease: this.id, ttl: this.grantedTtl });
          this.emit('granted', this.id);
        } else {
          const id = this.id;
          const ttl = await this.keepAlive(id, Math.max(500, this.renewEveryMs));
          if (this.id !== id) continue;
          if (ttl <= 0) this.lose('etcd says the lease has expired');
          else {
            this.grantedTtl = ttl;
            this.validUntil = Math.max(this.validUntil, sent + ttl * 1000);
            this.lastRenewal = Date.now();
            this.emit('renewed');
          }
        }
        failures = 0;
        await this.pause(Math.max(0, this.renewEveryMs - (Date.now() - sent)));
      } catch (e) {
        this.store.noteError(e);
        if (failures++ === 0) this.o.log?.('warn', 'etcd lease: no answer', { lease: this.id, err: (e as Error).message });
        await this.pause(Math.min(this.renewEveryMs, 200));
      }
    }
  }

  /** one keep-alive on a short-lived stream, within timeoutMs; the TTL etcd answered (0: gone) */
  private async keepAlive(id: string, timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    const stream = await Promise.race([
      // opening the stream asks nothing of etcd: only its answer shows that etcd is there
      this.store.client.leaseClient.leaseKeepAlive({ deadline }),
      sleep(timeoutMs).then(() => {
        throw new Error(`keep-alive stream not opened within ${timeoutMs} ms`);
      }),
    ]);
    try {
      const res = await new Promise<{ TTL: string | number; header?: { revision?: string } }>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`keep-alive not answered within ${timeoutMs} ms`)), timeoutMs);
        stream.on('data', (d: { TTL: string | number; header?: { revision?: string } }) => {
          clearTimeout(t);
          resolve(d);
        });
        stream.on('error', (e: Error) => {
          clearTimeout(t);
          reject(e);
        });
        stream.write({ ID: id });
      });
      this.store.noteOk();
      this.store.noteRevision(res.header?.revision);
      return Number(res.TTL);
    } finally {
      try {
        stream.end();
      } catch {
        // already closed
      }
    }
  }
}

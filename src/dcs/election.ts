/**
 * Leader election on etcd: the `leader` key, created in a transaction only if it does not exist,
 * bound to the candidate's lease (lease.ts). The holder is leader while its lease is surely valid;
 * when its keep-alives go unanswered it steps down at `validUntil` less the lease's safety margin
 * — before etcd can let the key expire — and every other candidate, watching the key, campaigns
 * as soon as it is deleted. A dead leader's key goes when its lease expires: takeover within the
 * TTL.
 */
import { EventEmitter } from 'node:events';
import type { LeaderRecord } from './keys.js';
import type { LeaseKeeper } from './lease.js';
import type { ClusterStore, Unwatch, Versioned } from './store.js';

export interface ElectionOptions {
  id: string;
  /** the admin URL other proxies send an operator to */
  admin: string | null;
  log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: object) => void;
}

export class LeaderElection extends EventEmitter {
  isLeader = false;
  /** the leader as last seen on etcd (this process included) */
  leader: LeaderRecord | null = null;
  /** this candidate's record while it is leader (the exact JSON on etcd: the CAS guard) */
  private mine: string | null = null;
  private unwatch: Unwatch | null = null;
  private timer: NodeJS.Timeout | null = null;
  private campaigning = false;
  private stopped = false;

  constructor(
    private readonly store: ClusterStore,
    private readonly lease: LeaseKeeper,
    private readonly o: ElectionOptions,
  ) {
    super();
  }

  get id(): string {
    return this.o.id;
  }

  /** the leader key and its exact value while this process leads: a transaction guard */
  guard(): { key: string; raw: string } | null {
    return this.isLeader && this.mine && this.lease.valid ? { key: this.store.keys.leader, raw: this.mine } : null;
  }

  async start(): Promise<void> {
    this.lease.on('granted', () => void this.campaign());
    this.lease.on('lost', (why: string) => this.stepDown(`lease lost: ${why}`));
    this.lease.on('renewed', () => {
      if (!this.isLeader && !this.leader) void this.campaign();
    });
    this.lease.start();
    this.unwatch = await this.store
      .watch<LeaderRecord>(this.store.keys.leader, (v) => this.onLeaderKey(v))
      .catch((e) => {
        this.store.noteError(e);
        return null;
      });
    // a watch that could not be set up (etcd down at start) is replaced by trying now and then
    this.timer = setInterval(() => {
      if (!this.isLeader && (!this.leader || !this.unwatch)) void this.campaign();
      if (!this.unwatch && !this.stopped) {
        void this.store
          .watch<LeaderRecord>(this.store.keys.leader, (v) => this.onLeaderKey(v))
          .then((u) => {
            if (this.stopped) void u();
            else this.unwatch = u;
          })
          .catch(() => undefined);
      }
    }, Math.max(250, this.lease.renewEveryMs));
    this.timer.unref?.();
  }

  private onLeaderKey(v: Versioned<LeaderRecord>): void {
    this.leader = v.value;
    if (this.isLeader && v.raw !== this.mine) this.stepDown(v.value ? `etcd names ${v.value.id} the leader` : 'the leader key is gone');
    if (!v.value) void this.campaign();
  }

  private async campaign(): Promise<void> {
    if (this.stopped || this.isLeader || this.campaigning) return;
    const id = this.lease.id;
    if (id === null || !this.lease.valid) return;
    this.campaigning = true;
    try {
      const rec: LeaderRecord = { id: this.o.id, admin: this.o.admin, since: new Date().toISOString() };
      const raw = JSON.stringify(rec);
      const keys = this.store.keys;
      const res = await this.store.call(() =>
        this.store.client.if(keys.leader, 'Create', '==', 0).then(this.store.client.put(keys.leader).value(raw).lease(id)).else(this.store.client.get(keys.leader)).commit(),
      );
      if (res.succeeded && this.lease.id === id && this.lease.valid && !this.stopped) {
        this.mine = raw;
        this.leader = rec;
        this.isLeader = true;
        this.o.log?.('warn', 'this pgha-proxy is the leader now', { id: this.o.id, lease: id });
        this.emit('leader', true);
      } else if (!res.succeeded) {
        const kv = res.responses[0]?.response_range?.kvs?.[0];
        if (kv) {
          try {
            this.leader = JSON.parse(kv.value.toString()) as LeaderRecord;
          } catch {
            // not ours to judge
          }
        }
      }
    } catch (e) {
      this.store.noteError(e);
    } finally {
      this.campaigning = false;
    }
  }

  private stepDown(why: string): void {
    if (!this.isLeader) return;
    this.isLeader = false;
    this.mine = null;
    this.o.log?.('warn', 'this pgha-proxy is no longer the leader', { id: this.o.id, why });
    this.emit('leader', false);
  }

  /** give up: the key is deleted (if still ours) so another candidate takes over at once */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    const mine = this.mine;
    this.stepDown('stopping');
    await this.unwatch?.();
    if (mine) {
      const keys = this.store.keys;
      await this.store
        .call(() => this.store.client.if(keys.leader, 'Value', '==', mine).then(this.store.client.delete().key(keys.leader)).commit())
        .catch(() => undefined);
    }
  }
}

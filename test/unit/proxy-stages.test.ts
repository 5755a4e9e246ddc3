/**
 * The proxy by stage: the read-only router and the cancel request, each tested on its own, and the
 * server module imported by nothing in proxy/ but its command line (no metrics ↔ server cycle).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serialize } from 'pg-protocol';
import { describe, expect, it } from 'vitest';
import { cancelRequest } from '../../proxy/cancel/forwarder.js';
import type { BackendState } from '../../proxy/health/monitor.js';
import { ReaderRouter } from '../../proxy/router/reader.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** the fields the router reads */
function backend(name: string, role: BackendState['role'], lsn: string | null): BackendState {
  return { name, role, lsn, replayLsn: lsn, failures: 0 } as unknown as BackendState;
}

describe('read-only router', () => {
  const primary = backend('p:1', 'primary', '0/5000000');
  it('takes the standby with the fewest sessions, ties in turn, never one too far behind or failing', () => {
    const s1 = backend('s:1', 'standby', '0/4FFFF00');
    const s2 = backend('s:2', 'standby', '0/4FFFF00');
    const behind = backend('s:3', 'standby', '0/1000000');
    const failing = { ...backend('s:4', 'standby', '0/5000000'), failures: 1 };
    const sessions = new Map([['s:1', 2], ['s:2', 2], ['s:3', 0], ['s:4', 0]]);
    const r = new ReaderRouter({ primary: () => primary, backends: () => [primary, s1, s2, behind, failing], sessionsOn: (n) => sessions.get(n) ?? 0 }, 1024 * 1024);
    expect([r.pick()?.name, r.pick()?.name, r.pick()?.name]).toEqual(['s:1', 's:2', 's:1']);
    sessions.set('s:1', 3);
    expect(r.pick()?.name).toBe('s:2');
  });
  it('falls back to the primary when no standby qualifies', () => {
    const r = new ReaderRouter({ primary: () => primary, backends: () => [primary, backend('s:3', 'standby', '0/1000000')], sessionsOn: () => 0 }, 1024);
    expect(r.pick()?.name).toBe('p:1');
  });
});

describe('CancelRequest', () => {
  it('a 4-byte key is what pg-protocol serialises; a 32-byte key (protocol 3.2) follows the same layout', () => {
    const key4 = Buffer.from([0x12, 0x34, 0x56, 0x78]);
    expect(cancelRequest(4242, key4)).toEqual(serialize.cancel(4242, key4.readInt32BE(0)));
    const key32 = Buffer.alloc(32, 0xab);
    const b = cancelRequest(4242, key32);
    expect([b.length, b.readInt32BE(0), b.readInt32BE(4), b.readInt32BE(8)]).toEqual([44, 44, 80877102, 4242]);
    expect(b.subarray(12)).toEqual(key32);
  });
});

describe('proxy/server.ts', () => {
  it('is imported by no other module of proxy/ than its command line', () => {
    const files = (dir: string): string[] => readdirSync(dir).flatMap((n) => (statSync(join(dir, n)).isDirectory() ? files(join(dir, n)) : n.endsWith('.ts') ? [join(dir, n)] : []));
    const importers = files(join(ROOT, 'proxy')).filter((f) => /from '(\.\.\/)+server\.js'|from '\.\/server\.js'/.test(readFileSync(f, 'utf8'))).map((f) => f.slice(ROOT.length + 1));
    expect(importers).toEqual(['proxy/cli.ts']);
  });
});

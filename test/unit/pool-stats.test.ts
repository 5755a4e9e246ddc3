import { describe, expect, it } from 'vitest';
import { byDatabase, RequestClock, type RouteTotals, StatsPeriods, zeroCounts } from '../../proxy/pool/stats.js';

const route = (user: string, database: string, c: Partial<RouteTotals>): RouteTotals => ({ user, database, ...zeroCounts(), ...c });

describe('SHOW STATS arithmetic (proxy/pool/stats.ts)', () => {
  it('sums the users of a database', () => {
    const dbs = byDatabase([route('a', 'd1', { xacts: 3, queryUs: 10 }), route('b', 'd1', { xacts: 4, queryUs: 5 }), route('a', 'd2', { waits: 1 })]);
    expect(dbs.get('d1')).toMatchObject({ xacts: 7, queryUs: 15, waits: 0 });
    expect(dbs.get('d2')).toMatchObject({ xacts: 0, waits: 1 });
  });

  it('averages are those of the last whole period: per second for counts and bytes, per transaction / query / wait for times; 0 before a period has passed', () => {
    const p = new StatsPeriods(60_000);
    let totals = [route('u', 'db', { xacts: 100, queries: 200, bytesFromClients: 6000, bytesToClients: 12000, xactUs: 1000, queryUs: 500, waitUs: 0, waits: 0 })];
    p.tick(0, () => totals);
    expect(p.average('db')).toMatchObject({ xactsPerSecond: 0, xactUs: 0 });
    totals = [route('u', 'db', { xacts: 100 + 600, queries: 200 + 1200, bytesFromClients: 6000 + 60_000, bytesToClients: 12000 + 120_000, xactUs: 1000 + 600 * 250, queryUs: 500 + 1200 * 100, waitUs: 3 * 2000, waits: 3 })];
    p.tick(30_000, () => totals); // within the period: nothing changes
    expect(p.average('db').xactsPerSecond).toBe(0);
    p.tick(60_000, () => totals);
    expect(p.average('db')).toEqual({ database: 'db', xactsPerSecond: 10, queriesPerSecond: 20, receivedPerSecond: 1000, sentPerSecond: 2000, xactUs: 250, queryUs: 100, waitUs: 2000 });
    // a quiet period: averages of nothing are 0, not NaN
    p.tick(120_000, () => totals);
    expect(p.average('db')).toEqual({ database: 'db', xactsPerSecond: 0, queriesPerSecond: 0, receivedPerSecond: 0, sentPerSecond: 0, xactUs: 0, queryUs: 0, waitUs: 0 });
    expect(p.average('other').xactsPerSecond).toBe(0);
  });

  it("a client's clocks: a query runs until everything sent is answered; a transaction until ReadyForQuery 'I'", async () => {
    const c = zeroCounts();
    const clock = new RequestClock();
    clock.sent();
    await new Promise((r) => setTimeout(r, 30));
    clock.sent(); // pipelined: the clock keeps its start
    clock.ready(c, false, false); // one of two answered: still running
    expect(c).toMatchObject({ queries: 1, xacts: 0, queryUs: 0 });
    clock.ready(c, false, true); // BEGIN … answered, in a transaction
    expect(c.queryUs).toBeGreaterThanOrEqual(29_000);
    expect(c.xactUs).toBe(0);
    await new Promise((r) => setTimeout(r, 30)); // idle in transaction
    clock.sent();
    clock.ready(c, true, true);
    expect(c.queries).toBe(3);
    expect(c.xacts).toBe(1);
    expect(c.xactUs - c.queryUs).toBeGreaterThanOrEqual(29_000);
  });
});

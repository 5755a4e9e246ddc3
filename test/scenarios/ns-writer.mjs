// A writer that runs INSIDE a node's network namespace (two-proxies.test.ts, step c): it writes
// straight to that node's PostgreSQL on the namespace's own loopback, one row per transaction, and
// appends every outcome to a file as it happens (so a kill loses nothing already known):
//   ack <id> <ms>        the COMMIT was acknowledged at <ms> (Date.now())
//   err <id> <ms> <text> the attempt failed (connect refused, timeout, …): not acknowledged
// Usage: node ns-writer.mjs PORT OUTFILE MODE FIRST_ID   (MODE: sync = the server's own
// synchronous_commit, local = SET synchronous_commit = local: acknowledged without any standby)
import { appendFileSync } from 'node:fs';
import pg from 'pg';

const [port, out, mode, firstId] = process.argv.slice(2);
let id = Number(firstId);
let running = true;
process.on('SIGTERM', () => {
  running = false;
});
const note = (line) => appendFileSync(out, `${line}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let client = null;
while (running) {
  const n = ++id;
  try {
    if (!client) {
      client = new pg.Client({ host: '127.0.0.1', port: Number(port), user: 'postgres', database: 'postgres', connectionTimeoutMillis: 1000, query_timeout: 2000 });
      client.on('error', () => undefined);
      await client.connect();
      if (mode === 'local') await client.query('SET synchronous_commit = local');
    }
    await client.query('INSERT INTO ns_writes (id, mode) VALUES ($1, $2)', [n, mode]);
    note(`ack ${n} ${Date.now()}`);
    await sleep(20);
  } catch (e) {
    note(`err ${n} ${Date.now()} ${String(e.message).replace(/\s+/g, ' ').slice(0, 100)}`);
    const c = client;
    client = null;
    c?.end().catch(() => undefined);
    await sleep(50);
  }
}
await client?.end().catch(() => undefined);

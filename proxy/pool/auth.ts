/**
 * Who may log in through the pool and with what secret: PgBouncer's userlist.txt (`"user"
 * "secret"` per line, `""` for a quote inside a field, the rest of a line ignored; `;`/`#`
 * comments), else an auth query run on the primary as --auth-user (PgBouncer's auth_query), whose
 * answers are kept for a minute. A SCRAM secret alone cannot log in to a server: the ClientKey a
 * client proves during its own SCRAM login is kept (as PgBouncer does) and used for the servers.
 */
import { readFileSync } from 'node:fs';
import pg from 'pg';
import type { BackendAddress } from '../backend/connect.js';
import { parseSecret, type Secret } from './secrets.js';

export class AuthFileError extends Error {}

export interface UserEntry {
  user: string;
  secret: Secret;
  /** recovered from a client's SCRAM proof: lets the proxy log in to servers with a SCRAM secret */
  clientKey?: Buffer;
}

/** one field in double quotes at `i`: [value, index after the closing quote] or null */
function quoted(line: string, i: number): [string, number] | null {
  if (line[i] !== '"') return null;
  let out = '';
  let j = i + 1;
  for (;;) {
    if (j >= line.length) return null;
    if (line[j] === '"') {
      if (line[j + 1] === '"') {
        out += '"';
        j += 2;
        continue;
      }
      return [out, j + 1];
    }
    out += line[j++];
  }
}

export function parseAuthFile(text: string, path: string): Map<string, UserEntry> {
  const users = new Map<string, UserEntry>();
  text.split(/\r?\n/).forEach((raw, n) => {
    const line = raw.trim();
    if (line === '' || line.startsWith(';') || line.startsWith('#')) return;
    const where = `${path}:${n + 1}`;
    const u = quoted(line, 0);
    if (!u) throw new AuthFileError(`${where}: expected "user" "password" (each in double quotes), got ${JSON.stringify(line.slice(0, 60))}`);
    let i = u[1];
    while (line[i] === ' ' || line[i] === '\t') i++;
    const p = quoted(line, i);
    if (!p) throw new AuthFileError(`${where}: expected "user" "password" (each in double quotes), got ${JSON.stringify(line.slice(0, 60))}`);
    if (!u[0]) throw new AuthFileError(`${where}: empty user name`);
    try {
      users.set(u[0], { user: u[0], secret: parseSecret(p[0]) });
    } catch (e) {
      throw new AuthFileError(`${where}: ${(e as Error).message}`);
    }
  });
  return users;
}

export function readAuthFile(path: string): Map<string, UserEntry> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new AuthFileError(`--auth-file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return parseAuthFile(text, path);
}

export interface AuthQueryOptions {
  sql: string;
  user: string;
  /** where to run it: the current primary */
  target: () => BackendAddress | null;
  ssl: boolean;
  timeoutMs: number;
}

const QUERY_TTL_MS = 60_000;
/** auth query answers kept at most (see Authenticator.remember) */
export const QUERY_CACHE_MAX = 10_000;

export class Authenticator {
  /** user → the auth query's answer and when it came (oldest first) */
  private readonly fromQuery = new Map<string, { entry: UserEntry | null; at: number }>();

  constructor(
    private file: Map<string, UserEntry>,
    private readonly query: AuthQueryOptions | null,
    /** auth query answers kept at most */
    private readonly cacheMax = QUERY_CACHE_MAX,
  ) {
    if (query && !file.has(query.user)) throw new AuthFileError(`--auth-user ${query.user} is not in the --auth-file (its password logs the auth query in)`);
  }

  /**
   * read the auth file again (console RELOAD, SIGHUP): logins from now on use its entries, logged-in
   * clients and open server connections are left as they are, and the auth query's answers are
   * asked again. A file that cannot be read or parsed changes nothing (AuthFileError).
   */
  reload(path: string): number {
    const next = readAuthFile(path);
    if (this.query) {
      const au = next.get(this.query.user);
      if (!au) throw new AuthFileError(`${path}: --auth-user ${this.query.user} is no longer in it (its password logs the auth query in); nothing changed`);
      if (au.secret.kind !== 'plain') throw new AuthFileError(`${path}: --auth-user ${this.query.user} needs a plain password (a hash cannot log the auth query in); nothing changed`);
    }
    // a ClientKey recovered from a client's proof stays with an unchanged SCRAM secret
    for (const [name, e] of next) {
      const old = this.file.get(name);
      if (old?.clientKey && old.secret.kind === 'scram' && e.secret.kind === 'scram' && old.secret.text === e.secret.text) e.clientKey = old.clientKey;
    }
    this.file = next;
    this.fromQuery.clear();
    return next.size;
  }

  /** auth query answers kept now (at most cacheMax) */
  get cachedAnswers(): number {
    return this.fromQuery.size;
  }

  /** the entry of a user, or null when none is known (the client then fails as PostgreSQL fails it: 28P01) */
  async lookup(user: string, database: string): Promise<UserEntry | null> {
    const e = this.file.get(user);
    if (e || !this.query) return e ?? null;
    const cached = this.fromQuery.get(user);
    if (cached && Date.now() - cached.at < QUERY_TTL_MS) return cached.entry;
    const entry = await this.runQuery(user, database);
    // keep a recovered ClientKey across refreshes of the same secret
    if (entry && cached?.entry?.clientKey && cached.entry.secret.kind === 'scram' && entry.secret.kind === 'scram' && cached.entry.secret.text === entry.secret.text) entry.clientKey = cached.entry.clientKey;
    this.remember(user, entry);
    return entry;
  }

  /**
   * keep an auth query's answer for QUERY_TTL_MS. Every name a client tries is asked once and kept
   * (unknown ones too, so that a flood of them does not become a flood of queries): answers past
   * their time are dropped, and the oldest beyond cacheMax, so that names made up by clients
   * cannot grow it without end.
   */
  private remember(user: string, entry: UserEntry | null): void {
    const now = Date.now();
    this.fromQuery.delete(user);
    // a Map iterates in insertion order and every answer is inserted anew: oldest first
    for (const [k, v] of this.fromQuery) {
      if (now - v.at < QUERY_TTL_MS && this.fromQuery.size < this.cacheMax) break;
      this.fromQuery.delete(k);
    }
    this.fromQuery.set(user, { entry, at: now });
  }

  private async runQuery(user: string, database: string): Promise<UserEntry | null> {
    const q = this.query!;
    const target = q.target();
    if (!target) throw new Error('no primary to run the auth query on');
    const au = this.file.get(q.user)!;
    if (au.secret.kind !== 'plain') throw new Error(`--auth-user ${q.user} needs a plain password in the --auth-file (a hash cannot log the auth query in)`);
    const c = new pg.Client({ host: target.host, port: target.port, user: q.user, password: au.secret.password, database, ssl: q.ssl ? { rejectUnauthorized: false } : false, connectionTimeoutMillis: q.timeoutMs, application_name: 'pgha-proxy auth_query' });
    c.on('error', () => undefined);
    await c.connect();
    try {
      const r = await c.query({ text: q.sql, values: [user], rowMode: 'array' });
      const row = r.rows[0] as unknown[] | undefined;
      if (!row || typeof row[1] !== 'string' || row[1] === '') return null;
      return { user, secret: parseSecret(row[1]) };
    } finally {
      await c.end().catch(() => undefined);
    }
  }
}

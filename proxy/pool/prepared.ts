/**
 * Protocol-level prepared statements across pooled server connections (transaction mode), as
 * PgBouncer 1.21's max_prepared_statements does: a client's named Parse is kept, its statement
 * gets a server-side name that is the same for the same query text and parameter types everywhere
 * (so one server connection prepares a statement once for all clients), Bind/Describe/Close are
 * renamed, and a statement is prepared again on whatever server connection a client lands on.
 */
import { createHash } from 'node:crypto';
import { cstring, message } from './framer.js';

/** a cache of names (the name is a hash of the text: forgetting one only costs hashing it again) */
const names = new Map<string, string>();
const NAMES_KEPT = 10_000;

/**
 * the server-side name of a statement: one per distinct (query, parameter types) — `pgha_` and 24
 * hex digits of SHA-256, the name native/src/pool_relay.rs gives it too
 */
export function serverName(query: Buffer): string {
  const k = query.toString('latin1');
  let n = names.get(k);
  if (!n) {
    n = `pgha_${createHash('sha256').update(query).digest('hex').slice(0, 24)}`;
    if (names.size >= NAMES_KEPT) names.clear();
    names.set(k, n);
  }
  return n;
}

export interface ClientStatement {
  server: string;
  /** the Parse message under the server-side name */
  parse: Buffer;
}

/** a Parse ('P'): its statement name and the rest (query, parameter types) */
export function parseOf(msg: Buffer): { name: string; rest: Buffer } {
  const [name, at] = cstring(msg, 5);
  return { name, rest: msg.subarray(at) };
}

export function renamedParse(serverName: string, rest: Buffer): Buffer {
  return message(0x50, Buffer.concat([Buffer.from(`${serverName}\0`, 'utf8'), rest]));
}

/** Bind ('B'): portal, statement, the rest */
export function bindOf(msg: Buffer): { portal: Buffer; statement: string; rest: Buffer } {
  const [, at] = cstring(msg, 5);
  const [statement, at2] = cstring(msg, at);
  return { portal: msg.subarray(5, at), statement, rest: msg.subarray(at2) };
}

export function renamedBind(portal: Buffer, serverName: string, rest: Buffer): Buffer {
  return message(0x42, Buffer.concat([portal, Buffer.from(`${serverName}\0`, 'utf8'), rest]));
}

/** Describe ('D') / Close ('C'): kind S or P, and the name */
export function targetOf(msg: Buffer): { kind: number; name: string } {
  return { kind: msg[5], name: cstring(msg, 6)[0] };
}

export function renamedTarget(type: number, kind: number, name: string): Buffer {
  return message(type, Buffer.concat([Buffer.from([kind]), Buffer.from(`${name}\0`, 'utf8')]));
}

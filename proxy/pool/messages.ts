/**
 * Server-side messages the pool answers with itself (pg-protocol serializes only a client's side):
 * authentication, the session's parameters and key, ReadyForQuery, the synthetic ParseComplete /
 * CloseComplete of statements the pool keeps prepared, and simple-query results of the console.
 */
import { message } from './framer.js';

const int32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n, 0);
  return b;
};
const cstr = (s: string): Buffer => Buffer.from(`${s}\0`, 'utf8');

export const AUTH_OK = message(0x52, int32(0));
export const PARSE_COMPLETE = message(0x31, Buffer.alloc(0));
export const CLOSE_COMPLETE = message(0x33, Buffer.alloc(0));

export function authSasl(mechanisms: string[]): Buffer {
  return message(0x52, Buffer.concat([int32(10), ...mechanisms.map(cstr), Buffer.from([0])]));
}
export const authSaslContinue = (data: string): Buffer => message(0x52, Buffer.concat([int32(11), Buffer.from(data, 'utf8')]));
export const authSaslFinal = (data: string): Buffer => message(0x52, Buffer.concat([int32(12), Buffer.from(data, 'utf8')]));
export const authMd5 = (salt: Buffer): Buffer => message(0x52, Buffer.concat([int32(5), salt]));

export const parameterStatus = (name: string, value: string): Buffer => message(0x53, Buffer.concat([cstr(name), cstr(value)]));
export const backendKeyData = (pid: number, key: number): Buffer => message(0x4b, Buffer.concat([int32(pid), int32(key)]));
export const readyForQuery = (status: 'I' | 'T' | 'E'): Buffer => message(0x5a, Buffer.from(status));
export const commandComplete = (tag: string): Buffer => message(0x43, cstr(tag));
export const emptyQuery = (): Buffer => message(0x49, Buffer.alloc(0));

const TEXT_OID = 25;
const INT8_OID = 20;

/** RowDescription + DataRows + CommandComplete for a console result (numbers as int8, the rest text) */
export function resultSet(columns: string[], rows: Array<Array<string | number | null>>, tag = `SHOW`): Buffer {
  const types = columns.map((_, i) => (rows.length > 0 && rows.every((r) => typeof r[i] === 'number' || r[i] === null) && rows.some((r) => typeof r[i] === 'number') ? INT8_OID : TEXT_OID));
  const desc: Buffer[] = [Buffer.from([columns.length >> 8, columns.length & 0xff])];
  columns.forEach((c, i) => {
    const f = Buffer.alloc(18);
    f.writeInt32BE(0, 0); // table
    f.writeInt16BE(0, 4); // column
    f.writeInt32BE(types[i], 6);
    f.writeInt16BE(types[i] === INT8_OID ? 8 : -1, 10);
    f.writeInt32BE(-1, 12); // typmod
    f.writeInt16BE(0, 16); // text
    desc.push(cstr(c), f);
  });
  const out: Buffer[] = [message(0x54, Buffer.concat(desc))];
  for (const r of rows) {
    const parts: Buffer[] = [Buffer.from([r.length >> 8, r.length & 0xff])];
    for (const v of r) {
      if (v === null) parts.push(int32(-1));
      else {
        const t = Buffer.from(String(v), 'utf8');
        parts.push(int32(t.length), t);
      }
    }
    out.push(message(0x44, Buffer.concat(parts)));
  }
  out.push(commandComplete(tag));
  return Buffer.concat(out);
}

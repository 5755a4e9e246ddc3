/**
 * The few server-side messages the proxy sends itself (pg-protocol serializes only what a client
 * sends), and decoding of the server messages it inspects through pg-protocol's own Parser.
 */
import { Parser } from 'pg-protocol/dist/parser.js';
import type { BackendMessage, DatabaseError } from 'pg-protocol/dist/messages.js';

export const SSL_ACCEPTED = Buffer.from('S');
export const SSL_REFUSED = Buffer.from('N');

export interface ErrorFields {
  severity: 'FATAL' | 'ERROR';
  code: string;
  message: string;
  detail?: string;
  hint?: string;
}

/** ErrorResponse ('E'): S/V severity, C SQLSTATE, M message, D detail, H hint, each NUL-terminated */
export function errorResponse(f: ErrorFields): Buffer {
  const parts: Array<[string, string]> = [
    ['S', f.severity],
    ['V', f.severity],
    ['C', f.code],
    ['M', f.message],
  ];
  if (f.detail) parts.push(['D', f.detail]);
  if (f.hint) parts.push(['H', f.hint]);
  const body = Buffer.concat([...parts.map(([k, v]) => Buffer.from(`${k}${v}\0`, 'utf8')), Buffer.from([0])]);
  const head = Buffer.alloc(5);
  head[0] = 0x45;
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

/** decode one complete server message (type + body) with pg-protocol */
export function decodeBackendMessage(type: number, body: Buffer): BackendMessage {
  const head = Buffer.alloc(5);
  head[0] = type;
  head.writeInt32BE(body.length + 4, 1);
  let out: BackendMessage | undefined;
  new Parser().parse(Buffer.concat([head, body]), (m) => (out = m));
  if (!out) throw new Error(`pg-protocol did not decode message type ${String.fromCharCode(type)}`);
  return out;
}

export function decodeError(body: Buffer): DatabaseError {
  return decodeBackendMessage(0x45, body) as DatabaseError;
}

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

/** the fields of an ErrorResponse or NoticeResponse body by their one-letter codes (a truncated body yields what is complete) */
export function noticeFields(body: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < body.length && body[i] !== 0) {
    const end = body.indexOf(0, i + 1);
    const stop = end < 0 ? body.length : end;
    out[String.fromCharCode(body[i])] = body.toString('utf8', i + 1, stop);
    i = stop + 1;
  }
  return out;
}

/**
 * The severity that decides what an ErrorResponse means: the non-localized `V` when the server sent
 * one (9.6 and later always do), else `S` — which is translated with lc_messages (`SCHWERWIEGEND`,
 * `FATAL`…). The native relay (native/src/relay.rs, error_fields) applies the same rule.
 */
export function errorSeverity(f: Record<string, string>): string {
  return f.V ? f.V : (f.S ?? '');
}

/** severity, SQLSTATE and message of an ErrorResponse that ends the session (FATAL or PANIC), else null */
export function backendFatal(body: Buffer): { severity: string; code: string; message: string } | null {
  const f = noticeFields(body);
  const severity = errorSeverity(f);
  return severity === 'FATAL' || severity === 'PANIC' ? { severity, code: f.C ?? '', message: f.M ?? '' } : null;
}

/** an error in protocol 2's form ('E', text, NUL), as PostgreSQL answers a client asking for protocol 1 or 2 */
export function errorResponseV2(message: string): Buffer {
  return Buffer.concat([Buffer.from('E'), Buffer.from(`FATAL:  ${message}\n`, 'utf8'), Buffer.from([0])]);
}

/**
 * AuthenticationSASL ('R', code 10) without SCRAM-SHA-256-PLUS: channel binding binds the client's
 * TLS channel, which ends at this proxy, while the server binds its own. Returns `msg` itself when
 * there is nothing to remove. `msg` is a whole message, type byte and length word included.
 */
export const SCRAM_PLUS = 'SCRAM-SHA-256-PLUS';
export function withoutScramPlus(msg: Buffer): Buffer {
  if (msg.length < 9 || msg[0] !== BACKEND_AUTHENTICATION || msg.readInt32BE(5) !== AUTH_SASL) return msg;
  const names: string[] = [];
  let i = 9;
  while (i < msg.length && msg[i] !== 0) {
    const end = msg.indexOf(0, i);
    if (end < 0) return msg;
    names.push(msg.toString('utf8', i, end));
    i = end + 1;
  }
  const kept = names.filter((n) => n !== SCRAM_PLUS);
  if (kept.length === names.length) return msg;
  const body = Buffer.concat([Buffer.from([0, 0, 0, AUTH_SASL]), ...kept.map((n) => Buffer.from(`${n}\0`, 'utf8')), Buffer.from([0])]);
  const head = Buffer.alloc(5);
  head[0] = BACKEND_AUTHENTICATION;
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

const BACKEND_AUTHENTICATION = 0x52; // 'R'
const AUTH_SASL = 10;

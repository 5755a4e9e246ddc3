/**
 * The client's startup phase, framed by us (pg-protocol only parses what a server sends): SSLRequest,
 * GSSENCRequest, CancelRequest and StartupMessage, as ProcessStartupPacket() in PostgreSQL's
 * backend_startup.c reads them. Bounded (8 ≤ length ≤ MAX_STARTUP_PACKET_LENGTH) and safe against a
 * packet split at any byte: nothing is decided until a whole packet is here.
 */
import {
  CANCEL_REQUEST_CODE,
  GSSENC_REQUEST_CODE,
  MAX_STARTUP_PACKET_LENGTH,
  MIN_STARTUP_PACKET_LENGTH,
  SSL_REQUEST_CODE,
  TLS_HANDSHAKE_BYTE,
} from './codes.js';
import { ProtocolError } from './errors.js';

export type StartupPacket =
  | { kind: 'ssl-request' }
  | { kind: 'gssenc-request' }
  /** key = BackendKeyData's secret bytes (4 in protocol 3.0, up to 256 in 3.2) */
  | { kind: 'cancel'; pid: number; key: Buffer }
  | { kind: 'startup'; raw: Buffer; major: number; minor: number; params: Record<string, string> }
  /** PG 17 sslnegotiation=direct: the client opened with a TLS ClientHello */
  | { kind: 'direct-tls' };

/** the longest cancel key PostgreSQL 18 sends (protocol 3.2) */
const MAX_CANCEL_KEY = 256;

export class StartupReader {
  private buf: Buffer = Buffer.alloc(0);
  /** bytes of the client's stream consumed by complete packets */
  private consumed = 0;

  /** append bytes; the caller pauses the socket while it acts on a packet, so this stays small */
  push(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
  }

  /** bytes received after the last complete packet (handed on to the next phase) */
  takeRest(): Buffer {
    const rest = this.buf;
    this.buf = Buffer.alloc(0);
    return rest;
  }

  get buffered(): number {
    return this.buf.length;
  }

  /** the next complete packet, or null when more bytes are needed */
  next(): StartupPacket | null {
    if (this.buf.length >= 1 && this.consumed === 0 && this.buf[0] === TLS_HANDSHAKE_BYTE) return { kind: 'direct-tls' };
    if (this.buf.length < 4) return null;
    const len = this.buf.readInt32BE(0);
    if (len < MIN_STARTUP_PACKET_LENGTH || len > MAX_STARTUP_PACKET_LENGTH) {
      this.fail(`invalid length of startup packet: ${len} (expected ${MIN_STARTUP_PACKET_LENGTH}..${MAX_STARTUP_PACKET_LENGTH})`);
    }
    if (this.buf.length < len) return null;
    const packet = this.buf.subarray(0, len);
    this.buf = this.buf.subarray(len);
    const at = this.consumed;
    this.consumed += len;
    return decodePacket(packet, at);
  }

  private fail(message: string): never {
    throw new ProtocolError(message, this.consumed);
  }
}

function decodePacket(p: Buffer, at: number): StartupPacket {
  const code = p.readUInt32BE(4);
  switch (code) {
    case SSL_REQUEST_CODE:
    case GSSENC_REQUEST_CODE:
      if (p.length !== 8) throw new ProtocolError(`invalid length of ${code === SSL_REQUEST_CODE ? 'SSLRequest' : 'GSSENCRequest'}: ${p.length} (expected 8)`, at);
      return { kind: code === SSL_REQUEST_CODE ? 'ssl-request' : 'gssenc-request' };
    case CANCEL_REQUEST_CODE: {
      if (p.length < 16 || p.length > 12 + MAX_CANCEL_KEY) throw new ProtocolError(`invalid length of CancelRequest: ${p.length} (expected 16..${12 + MAX_CANCEL_KEY})`, at);
      return { kind: 'cancel', pid: p.readInt32BE(8), key: Buffer.from(p.subarray(12)) };
    }
  }
  const major = code >>> 16;
  const minor = code & 0xffff;
  if (major !== 3) {
    throw new ProtocolError(`unsupported frontend protocol ${major}.${minor}: the proxy speaks 3.x`, at, '0A000');
  }
  const params: Record<string, string> = {};
  let i = 8;
  for (;;) {
    const keyEnd = p.indexOf(0, i);
    if (keyEnd < 0) throw new ProtocolError('invalid startup packet layout: expected terminator as last byte', at + i);
    if (keyEnd === i) {
      if (keyEnd !== p.length - 1) throw new ProtocolError('invalid startup packet layout: expected terminator as last byte', at + i);
      break;
    }
    const valEnd = p.indexOf(0, keyEnd + 1);
    if (valEnd < 0) throw new ProtocolError('invalid startup packet layout: expected terminator as last byte', at + keyEnd);
    params[p.toString('utf8', i, keyEnd)] = p.toString('utf8', keyEnd + 1, valEnd);
    i = valEnd + 1;
  }
  if (!params.user) throw new ProtocolError('no PostgreSQL user name specified in startup packet', at, '28000');
  return { kind: 'startup', raw: Buffer.from(p), major, minor, params };
}

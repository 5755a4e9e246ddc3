/**
 * The client's startup phase, framed by us (pg-protocol only parses what a server sends): SSLRequest,
 * GSSENCRequest, CancelRequest and StartupMessage, as ProcessStartupPacket() in PostgreSQL's
 * postmaster.c (backend_startup.c from 17 on) reads them. Bounded as it bounds them (8 ≤ length ≤
 * MAX_STARTUP_PACKET_LENGTH + 4) and safe against a packet split at any byte: nothing is decided
 * until a whole packet is here. Errors carry PostgreSQL's answer: a bad length is only logged and
 * the connection closed without a reply; a bad protocol version, layout or missing user is a FATAL.
 */
import {
  CANCEL_REQUEST_CODE,
  GSSENC_REQUEST_CODE,
  MAX_STARTUP_PACKET_TOTAL,
  MIN_STARTUP_PACKET_LENGTH,
  SQLSTATE,
  SSL_REQUEST_CODE,
  TLS_HANDSHAKE_BYTE,
} from './codes.js';
import { ProtocolError } from './errors.js';

export type StartupPacket =
  | { kind: 'ssl-request' }
  | { kind: 'gssenc-request' }
  /**
   * key = BackendKeyData's secret bytes (4 in protocol 3.0, up to 256 in 3.2); null for a packet of
   * another size (PostgreSQL answers no CancelRequest, well-formed or not: nothing is forwarded)
   */
  | { kind: 'cancel'; pid: number; key: Buffer | null }
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
    if (len < MIN_STARTUP_PACKET_LENGTH || len > MAX_STARTUP_PACKET_TOTAL) {
      // COMMERROR in PostgreSQL: logged, and the connection closed without a reply
      throw new ProtocolError(`invalid length of startup packet: ${len} (expected ${MIN_STARTUP_PACKET_LENGTH}..${MAX_STARTUP_PACKET_TOTAL})`, this.consumed, SQLSTATE.protocolViolation, 'none');
    }
    if (this.buf.length < len) return null;
    const packet = this.buf.subarray(0, len);
    this.buf = this.buf.subarray(len);
    const at = this.consumed;
    this.consumed += len;
    return decodePacket(packet, at);
  }
}

function decodePacket(p: Buffer, at: number): StartupPacket {
  const code = p.readUInt32BE(4);
  switch (code) {
    // PostgreSQL looks only at the code of these (their length is anything from 8 on)
    case SSL_REQUEST_CODE:
      return { kind: 'ssl-request' };
    case GSSENC_REQUEST_CODE:
      return { kind: 'gssenc-request' };
    case CANCEL_REQUEST_CODE: {
      const ok = p.length >= 16 && p.length <= 12 + MAX_CANCEL_KEY;
      return { kind: 'cancel', pid: p.length >= 12 ? p.readInt32BE(8) : 0, key: ok ? Buffer.from(p.subarray(12)) : null };
    }
  }
  const major = code >>> 16;
  const minor = code & 0xffff;
  if (major !== 3) throw unsupportedProtocol(major, minor, at);
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
  if (!params.user) throw new ProtocolError('no PostgreSQL user name specified in startup packet', at, SQLSTATE.invalidAuthorizationSpecification);
  return { kind: 'startup', raw: Buffer.from(p), major, minor, params };
}

/**
 * FATAL 0A000, as PostgreSQL says it; to a client asking for protocol 1 or 2 in that protocol's own
 * error format (PostgreSQL 14+ still answers an old client that way)
 */
export function unsupportedProtocol(major: number, minor: number, at: number): ProtocolError {
  return new ProtocolError(`unsupported frontend protocol ${major}.${minor}: the proxy speaks 3.x`, at, SQLSTATE.featureNotSupported, major < 3 ? 'fatal-v2' : 'fatal');
}

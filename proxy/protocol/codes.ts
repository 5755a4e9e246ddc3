/**
 * Protocol constants from PostgreSQL's src/include/libpq/pqcomm.h and protocol.h.
 */

/** StartupMessage protocol 3.0: (3 << 16) | 0 */
export const PROTOCOL_3_0 = 196608;
/** NEGOTIATE_SSL_CODE = PG_PROTOCOL(1234, 5679) */
export const SSL_REQUEST_CODE = 80877103;
/** NEGOTIATE_GSS_CODE = PG_PROTOCOL(1234, 5680) */
export const GSSENC_REQUEST_CODE = 80877104;
/** CANCEL_REQUEST_CODE = PG_PROTOCOL(1234, 5678) */
export const CANCEL_REQUEST_CODE = 80877102;
/** MAX_STARTUP_PACKET_LENGTH in pqcomm.h: the largest startup packet body (not counting the length word) */
export const MAX_STARTUP_PACKET_LENGTH = 10000;
/** the smallest startup packet: length word + protocol code */
export const MIN_STARTUP_PACKET_LENGTH = 8;
/** the largest startup packet length word: ProcessStartupPacket checks len − 4 ≤ MAX_STARTUP_PACKET_LENGTH */
export const MAX_STARTUP_PACKET_TOTAL = MAX_STARTUP_PACKET_LENGTH + 4;
/** PQ_LARGE_MESSAGE_LIMIT (MaxAllocSize - 1): the largest message the server accepts from a client */
export const PQ_LARGE_MESSAGE_LIMIT = 0x3fffffff - 1;
/** first byte of a TLS handshake record: a client using PG 17's sslnegotiation=direct */
export const TLS_HANDSHAKE_BYTE = 0x16;

/** SQLSTATEs the proxy itself reports */
export const SQLSTATE = {
  protocolViolation: '08P01',
  connectionFailure: '08006',
  cannotConnectNow: '57P03',
  adminShutdown: '57P01',
  featureNotSupported: '0A000',
  tooManyConnections: '53300',
  invalidAuthorizationSpecification: '28000',
  configFileError: 'F0000',
} as const;

/** backend message types the relay looks at */
export const BACKEND = {
  readyForQuery: 0x5a, // 'Z'
  backendKeyData: 0x4b, // 'K'
  errorResponse: 0x45, // 'E'
  authentication: 0x52, // 'R'
} as const;

/** frontend message types the relay looks at */
export const FRONTEND = {
  terminate: 0x58, // 'X'
} as const;

/**
 * How PostgreSQL answers a broken startup phase: some problems are only logged and the connection
 * is closed without a byte (ereport(COMMERROR) in ProcessStartupPacket: a bad length, an incomplete
 * packet, a startup timeout), others get a FATAL ErrorResponse (unsupported protocol, no user name,
 * bad layout), and a protocol-2 client gets its FATAL in the old protocol-2 form.
 */
export type ProtocolReply = 'fatal' | 'none' | 'fatal-v2';

/** A client or backend broke the wire protocol: what was expected and where. */
export class ProtocolError extends Error {
  constructor(
    message: string,
    /** byte offset in the peer's stream where the bad data starts */
    readonly offset: number,
    readonly sqlstate = '08P01',
    /** what the client is told: a FATAL ErrorResponse (default), nothing, or a protocol-2 error */
    readonly reply: ProtocolReply = 'fatal',
  ) {
    super(message);
    this.name = 'ProtocolError';
  }
}

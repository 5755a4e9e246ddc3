/** A client or backend broke the wire protocol: what was expected and where. */
export class ProtocolError extends Error {
  constructor(
    message: string,
    /** byte offset in the peer's stream where the bad data starts */
    readonly offset: number,
    readonly sqlstate = '08P01',
  ) {
    super(message);
    this.name = 'ProtocolError';
  }
}

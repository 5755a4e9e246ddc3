/**
 * The server's messages during authentication, on their way to the client: every Authentication
 * ('R') message is gathered whole and AuthenticationSASL loses SCRAM-SHA-256-PLUS (see
 * withoutScramPlus); everything else passes as it came. Used only until the first ReadyForQuery,
 * so it costs nothing afterwards. Safe against a message split at any byte.
 */
import { withoutScramPlus } from './backend-messages.js';

const AUTHENTICATION = 0x52; // 'R'
/** an Authentication message longer than this is passed on untouched (none is this long) */
const MAX_HELD = 64 * 1024;

export class SaslOfferFilter {
  private readonly header = Buffer.alloc(5);
  private headerFill = 0;
  private remaining = 0;
  /** the Authentication message being gathered (header included), or null */
  private held: Buffer[] | null = null;

  /** the bytes to send to the client for this chunk of the server's stream (possibly none yet) */
  feed(chunk: Buffer): Buffer {
    const out: Buffer[] = [];
    const n = chunk.length;
    let i = 0;
    while (i < n) {
      if (this.remaining > 0) {
        const take = Math.min(this.remaining, n - i);
        const part = chunk.subarray(i, i + take);
        if (this.held) this.held.push(part);
        else out.push(part);
        i += take;
        this.remaining -= take;
        if (this.remaining === 0 && this.held) this.release(out);
        continue;
      }
      const take = Math.min(5 - this.headerFill, n - i);
      chunk.copy(this.header, this.headerFill, i, i + take);
      this.headerFill += take;
      i += take;
      if (this.headerFill < 5) break;
      this.headerFill = 0;
      const head = Buffer.from(this.header);
      const length = head.readInt32BE(1);
      // a bad length is the walker's to report; pass the bytes on
      this.remaining = Math.max(0, length - 4);
      if (head[0] === AUTHENTICATION && length >= 8 && length <= MAX_HELD) {
        this.held = [head];
        if (this.remaining === 0) this.release(out);
      } else out.push(head);
    }
    return out.length === 1 ? out[0] : Buffer.concat(out);
  }

  private release(out: Buffer[]): void {
    out.push(withoutScramPlus(Buffer.concat(this.held!)));
    this.held = null;
  }
}

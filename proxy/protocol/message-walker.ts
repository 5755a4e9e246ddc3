/**
 * Follows message boundaries in a relayed byte stream without copying it: every message is a type
 * byte and an Int32 length that counts itself (the protocol's framing after startup). Only the few
 * small messages the proxy acts on are gathered (ReadyForQuery, BackendKeyData, ErrorResponse…,
 * into one buffer the walker reuses);
 * everything else is skipped over by length. Safe against a header or body split at any byte.
 */
import { ProtocolError } from './errors.js';

/** `body` is valid only during the call (the walker reuses its memory): copy what must be kept */
export type MessageHandler = (type: number, body: Buffer) => void;

export interface WalkerOptions {
  /** largest allowed length word (counting itself) */
  maxLength: number;
  /** which message types to hand to onMessage, with their body */
  wanted: (type: number) => boolean;
  /** bodies longer than this are not collected even when wanted */
  maxCollect?: number;
  onMessage: MessageHandler;
  /** what the stream is, for error messages ("client", "backend 10.0.0.1:5432") */
  peer: string;
}

export class MessageWalker {
  private readonly header = Buffer.alloc(5);
  private headerFill = 0;
  private remaining = 0;
  private type = 0;
  /** bodies of wanted messages are gathered here, reused from one message to the next */
  private scratch = Buffer.alloc(64);
  private collecting = false;
  private collectFill = 0;
  /** bytes of the stream walked so far */
  offset = 0;
  /** messages completed so far */
  messages = 0;

  constructor(private readonly opts: WalkerOptions) {}

  /** true between two messages: a message of our own may be inserted here */
  get atBoundary(): boolean {
    return this.headerFill === 0 && this.remaining === 0;
  }

  feed(chunk: Buffer): void {
    const n = chunk.length;
    let i = 0;
    while (i < n) {
      if (this.remaining > 0) {
        const take = Math.min(this.remaining, n - i);
        if (this.collecting) {
          chunk.copy(this.scratch, this.collectFill, i, i + take);
          this.collectFill += take;
        }
        i += take;
        this.remaining -= take;
        if (this.remaining === 0) this.finish();
        continue;
      }
      let type: number;
      let length: number;
      if (this.headerFill === 0 && n - i >= 5) {
        type = chunk[i];
        length = chunk.readInt32BE(i + 1);
        i += 5;
      } else {
        const take = Math.min(5 - this.headerFill, n - i);
        chunk.copy(this.header, this.headerFill, i, i + take);
        this.headerFill += take;
        i += take;
        if (this.headerFill < 5) break;
        this.headerFill = 0;
        type = this.header[0];
        length = this.header.readInt32BE(1);
      }
      const at = this.offset + i - 5;
      if (length < 4 || length > this.opts.maxLength) {
        throw new ProtocolError(
          `${this.opts.peer}: invalid message length ${length >>> 0} for message type 0x${type.toString(16).padStart(2, '0')} at byte ${at} (expected 4..${this.opts.maxLength})`,
          at,
        );
      }
      this.type = type;
      this.remaining = length - 4;
      this.collecting = this.opts.wanted(type) && this.remaining <= (this.opts.maxCollect ?? 1 << 20);
      if (this.collecting) {
        if (this.scratch.length < this.remaining) this.scratch = Buffer.alloc(Math.max(this.remaining, this.scratch.length * 2));
        this.collectFill = 0;
      }
      if (this.remaining === 0) this.finish();
    }
    this.offset += n;
  }

  private finish(): void {
    this.messages++;
    if (this.collecting) {
      this.collecting = false;
      this.opts.onMessage(this.type, this.scratch.subarray(0, this.collectFill));
    }
  }
}

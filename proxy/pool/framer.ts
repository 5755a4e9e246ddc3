/**
 * Whole protocol messages out of a byte stream (type byte + Int32 length counting itself), as views
 * into the chunk they arrived in: only a message split across chunks is copied. The pool reads
 * every message in both directions (it must know where transactions end and rewrite statement
 * names), so this is its hot path. Out collects what goes on to the other side, merging views that
 * follow each other in the same chunk so a chunk of untouched messages is one write.
 */
import { ProtocolError } from '../protocol/errors.js';

export type OnMessage = (type: number, msg: Buffer) => void;

/** a message at least this long may be sent on as it arrives once its start is here (native/src/pool_protocol.rs STREAM_ABOVE) */
export const STREAM_ABOVE = 256 * 1024;
/** how much of such a message's start is gathered first (STREAM_HEAD there) */
export const STREAM_HEAD = 16 * 1024;

/** where a long message goes as it arrives, when the owner of the Framer says it may (start) */
export interface StreamHooks {
  /** the start of a message of `length` bytes (head: type, length word, part of the body): true to take the rest through part() */
  start(type: number, head: Buffer, length: number): boolean;
  part(bytes: Buffer): void;
}

export class Framer {
  /** the start of a message split across chunks, in the pieces it came in (joined once it is whole) */
  private partial: Buffer[] = [];
  private partialBytes = 0;
  /** bytes of the split message (type byte and length word included), once its length word is here */
  private partialNeeds = 0;
  /** bytes of the stream framed so far (for error offsets) */
  offset = 0;
  /** long messages sent on as they arrive (null: every message is delivered whole) */
  streamTo: StreamHooks | null = null;
  /** bytes still to come of a message being sent on as it arrives, and its whole length */
  private streamRest = 0;
  private streamLength = 0;

  constructor(
    private readonly peer: string,
    private readonly maxLength: number,
  ) {}

  /** true between two messages */
  get atBoundary(): boolean {
    return this.partialBytes === 0 && this.streamRest === 0;
  }

  feed(chunk: Buffer, on: OnMessage): void {
    let buf = chunk;
    if (this.streamRest > 0) {
      const k = Math.min(this.streamRest, buf.length);
      this.streamRest -= k;
      this.streamTo!.part(buf.subarray(0, k));
      if (this.streamRest > 0) return;
      this.offset += this.streamLength;
      buf = buf.subarray(k);
      if (buf.length === 0) return;
    }
    if (this.partialBytes > 0) {
      // a long message comes in many chunks: kept as they are until it is whole (joining them at
      // every chunk would copy it over and over), or sent on once its start is here
      if (this.partialNeeds > 0 && this.partialBytes + buf.length < this.partialNeeds) {
        this.partial.push(Buffer.from(buf));
        this.partialBytes += buf.length;
        if (this.partialNeeds >= STREAM_ABOVE && this.partialBytes >= STREAM_HEAD && this.streamTo) {
          // asked with the first piece, joined once to at least STREAM_HEAD bytes (a start declined
          // now may be taken at a later chunk: nothing is joined again for that); the pieces after
          // it follow through part()
          if (this.partial[0].length < STREAM_HEAD) this.partial = [Buffer.concat(this.partial)];
          const head = this.partial[0];
          if (this.streamTo.start(head[0], head, this.partialNeeds)) {
            for (let k = 1; k < this.partial.length; k++) this.streamTo.part(this.partial[k]);
            this.streamRest = this.partialNeeds - this.partialBytes;
            this.streamLength = this.partialNeeds;
            this.partial = [];
            this.partialBytes = 0;
            this.partialNeeds = 0;
          }
        }
        return;
      }
      // (offset is where the split message starts: it counts whole messages only)
      buf = Buffer.concat([...this.partial, buf]);
      this.partial = [];
      this.partialBytes = 0;
      this.partialNeeds = 0;
    }
    let i = 0;
    const n = buf.length;
    while (n - i >= 5) {
      const len = buf.readInt32BE(i + 1);
      if (len < 4 || len > this.maxLength) {
        throw new ProtocolError(`${this.peer}: invalid message length ${len >>> 0} for message type 0x${buf[i].toString(16).padStart(2, '0')} at byte ${this.offset + i} (expected 4..${this.maxLength})`, this.offset + i);
      }
      if (n - i < len + 1) break;
      on(buf[i], buf.subarray(i, i + 1 + len));
      i += 1 + len;
    }
    this.offset += i;
    if (i < n) {
      const needs = n - i >= 5 ? 1 + buf.readInt32BE(i + 1) : 0;
      if (needs >= STREAM_ABOVE && n - i >= STREAM_HEAD && this.streamTo?.start(buf[i], buf.subarray(i), needs)) {
        this.streamRest = needs - (n - i);
        this.streamLength = needs;
        return;
      }
      this.partial = [Buffer.from(buf.subarray(i))];
      this.partialBytes = n - i;
      this.partialNeeds = needs;
    }
  }
}

/** what goes to one socket for one chunk: contiguous views merged (one view made per run, at the end) */
export class Out {
  private parts: Buffer[] = [];
  private base: Buffer | null = null;
  private start = 0;
  private end = 0;

  add(b: Buffer): void {
    if (this.base !== null) {
      if (this.base.buffer === b.buffer && this.end === b.byteOffset) {
        this.end += b.length;
        return;
      }
      this.parts.push(this.run());
    }
    this.base = b;
    this.start = b.byteOffset;
    this.end = b.byteOffset + b.length;
  }

  private run(): Buffer {
    const b = this.base!;
    return b.byteOffset === this.start && b.length === this.end - this.start ? b : Buffer.from(b.buffer, this.start, this.end - this.start);
  }

  get empty(): boolean {
    return this.base === null;
  }

  /** everything collected, as one buffer (nothing: null); the collector is empty afterwards */
  take(): Buffer | null {
    if (this.base === null) return null;
    const last = this.run();
    this.base = null;
    if (this.parts.length === 0) return last;
    this.parts.push(last);
    const all = Buffer.concat(this.parts);
    this.parts = [];
    return all;
  }
}

/** a message: type byte, length, body */
export function message(type: number, body: Buffer): Buffer {
  const b = Buffer.allocUnsafe(5 + body.length);
  b[0] = type;
  b.writeInt32BE(body.length + 4, 1);
  body.copy(b, 5);
  return b;
}

/** a NUL-terminated string in a message at `at`: [text, the offset after the NUL] */
export function cstring(msg: Buffer, at: number): [string, number] {
  const end = msg.indexOf(0, at);
  if (end < 0) throw new ProtocolError(`message type ${String.fromCharCode(msg[0])}: string not terminated`, at);
  return [msg.toString('utf8', at, end), end + 1];
}

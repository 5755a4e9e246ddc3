import { FormatError, type FormatKind } from './errors.js';

/**
 * A bounded little-endian cursor over `bytes[start, end)`. Every read checks the bound and throws a
 * FormatError with the absolute offset (base + position) on overrun, so hostile sizes can never read
 * past the structure they belong to.
 */
export class ByteReader {
  private readonly view: DataView;
  pos: number;

  constructor(
    readonly bytes: Uint8Array,
    readonly start = 0,
    readonly end = bytes.length,
    /** offset of bytes[0] in the file, for error messages */
    readonly base = 0,
    readonly kind: FormatKind = 'file',
    readonly what = 'structure',
  ) {
    if (start < 0 || end > bytes.length || start > end) throw new RangeError(`bad reader bounds [${start}, ${end}) of ${bytes.length}`);
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = start;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  /** absolute file offset of the cursor */
  get offset(): number {
    return this.base + this.pos;
  }

  private need(n: number): number {
    const at = this.pos;
    if (n < 0 || at + n > this.end) {
      throw new FormatError(this.kind, `${this.what} truncated: need ${n} more bytes`, {
        offset: this.base + at,
        expected: `${n} bytes`,
        got: `${Math.max(0, this.end - at)}`,
      });
    }
    this.pos = at + n;
    return at;
  }

  u8(): number {
    return this.bytes[this.need(1)];
  }
  u16(): number {
    return this.view.getUint16(this.need(2), true);
  }
  u32(): number {
    return this.view.getUint32(this.need(4), true);
  }
  i32(): number {
    return this.view.getInt32(this.need(4), true);
  }
  u64(): bigint {
    return this.view.getBigUint64(this.need(8), true);
  }
  i64(): bigint {
    return this.view.getBigInt64(this.need(8), true);
  }
  f64(): number {
    return this.view.getFloat64(this.need(8), true);
  }
  bool(): boolean {
    return this.u8() !== 0;
  }
  /** a view (no copy) of the next n bytes */
  bytesView(n: number): Uint8Array {
    const at = this.need(n);
    return this.bytes.subarray(at, at + n);
  }
  /** fixed-size NUL-padded name (PostgreSQL NameData) */
  name(size: number): string {
    const field = this.bytesView(size);
    let len = field.indexOf(0);
    if (len < 0) len = size;
    return Buffer.from(field.buffer, field.byteOffset, len).toString('utf8');
  }
  skip(n: number): void {
    this.need(n);
  }
  seek(pos: number): void {
    if (pos < this.start || pos > this.end) throw new RangeError(`seek to ${pos} outside [${this.start}, ${this.end})`);
    this.pos = pos;
  }
}

/** Little-endian writer into a fixed buffer, for serializing structures back byte-identically. */
export class ByteWriter {
  private readonly view: DataView;
  constructor(readonly bytes: Uint8Array, public pos = 0) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  u8(v: number): void {
    this.view.setUint8(this.pos, v);
    this.pos += 1;
  }
  u16(v: number): void {
    this.view.setUint16(this.pos, v, true);
    this.pos += 2;
  }
  u32(v: number): void {
    this.view.setUint32(this.pos, v >>> 0, true);
    this.pos += 4;
  }
  u64(v: bigint): void {
    this.view.setBigUint64(this.pos, v, true);
    this.pos += 8;
  }
  bool(v: boolean): void {
    this.u8(v ? 1 : 0);
  }
  /** NameData: NUL-padded to size; the name must leave room for the terminating NUL */
  name(v: string, size: number): void {
    const enc = Buffer.from(v, 'utf8');
    if (enc.length >= size) throw new RangeError(`name "${v}" is ${enc.length} bytes; at most ${size - 1} fit`);
    this.bytes.fill(0, this.pos, this.pos + size);
    this.bytes.set(enc, this.pos);
    this.pos += size;
  }
}

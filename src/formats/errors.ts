/**
 * Typed errors for every file format pgha reads. Each carries the file (when known), the absolute
 * byte offset, and what was expected versus what was found, so the CLI can print one precise line.
 */
export type FormatKind = 'wal' | 'history' | 'slot' | 'control' | 'lsn' | 'file';

export class FormatError extends Error {
  readonly kind: FormatKind;
  file: string | undefined;
  readonly offset: number | undefined;
  readonly expected: string | undefined;
  readonly got: string | undefined;

  constructor(
    kind: FormatKind,
    message: string,
    details: { file?: string; offset?: number; expected?: string; got?: string } = {},
  ) {
    super(message);
    this.name = new.target.name;
    this.kind = kind;
    this.file = details.file;
    this.offset = details.offset;
    this.expected = details.expected;
    this.got = details.got;
  }

  /** Attach a file name to an error raised by a parser that only saw bytes. */
  withFile(file: string): this {
    if (this.file === undefined) this.file = file;
    return this;
  }

  /** One line: `file: offset N: message (expected X, got Y)`. */
  describe(): string {
    const parts: string[] = [];
    if (this.file !== undefined) parts.push(this.file);
    if (this.offset !== undefined) parts.push(`offset ${this.offset}`);
    let text = this.message;
    if (this.expected !== undefined || this.got !== undefined) {
      text += ` (expected ${this.expected ?? '?'}, got ${this.got ?? '?'})`;
    }
    parts.push(text);
    return parts.join(': ');
  }
}

export class WalFormatError extends FormatError {
  readonly lsn: bigint | undefined;
  constructor(message: string, details: { file?: string; offset?: number; lsn?: bigint; expected?: string; got?: string } = {}) {
    super('wal', message, details);
    this.lsn = details.lsn;
  }
}

export class HistoryFormatError extends FormatError {
  readonly line: number | undefined;
  constructor(message: string, details: { file?: string; offset?: number; line?: number; expected?: string; got?: string } = {}) {
    super('history', details.line !== undefined ? `line ${details.line}: ${message}` : message, details);
    this.line = details.line;
  }
}

export class SlotStateError extends FormatError {
  constructor(message: string, details: { file?: string; offset?: number; expected?: string; got?: string } = {}) {
    super('slot', message, details);
  }
}

export class ControlFileError extends FormatError {
  constructor(message: string, details: { file?: string; offset?: number; expected?: string; got?: string } = {}) {
    super('control', message, details);
  }
}

export class LsnFormatError extends FormatError {
  constructor(message: string, details: { expected?: string; got?: string } = {}) {
    super('lsn', message, details);
  }
}

/**
 * The path is not a regular file (a FIFO, a device such as /dev/zero, a socket…): pgha reads
 * PostgreSQL's own files only, and such a path could block or never end.
 */
export class NotRegularFileError extends FormatError {
  constructor(file: string) {
    super('file', 'not a regular file', { file });
  }
}

/** A file larger than its format allows: refused before it is read. */
export class FileTooLargeError extends FormatError {
  constructor(kind: FormatKind, what: string, details: { file: string; max: number; size: number }) {
    super(kind, `${what} too large`, { file: details.file, offset: details.max, expected: `at most ${details.max} bytes`, got: `${details.size} bytes` });
  }
}

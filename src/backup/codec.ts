/**
 * Compression of repository objects with Node's own zlib: gzip (the default: any machine can read
 * an object back with `gunzip`, even without pgha) or brotli; `none` stores the bytes as they are.
 * The codec is written in the key's extension (`.gz`, `.br`), so a reader never guesses.
 */
import { createHash, type Hash } from 'node:crypto';
import { PassThrough, Transform, type TransformCallback } from 'node:stream';
import { promisify } from 'node:util';
import zlib from 'node:zlib';

export type Compression = 'gzip' | 'brotli' | 'none';
export const COMPRESSIONS: readonly Compression[] = ['gzip', 'brotli', 'none'];
export const COMPRESSION_EXT: Record<Compression, string> = { gzip: '.gz', brotli: '.br', none: '' };
/** gzip level 1: half the time of level 6 for 8 % more bytes (bench/backup.ts); brotli quality 4 */
export const DEFAULT_LEVEL: Record<Compression, number> = { gzip: 1, brotli: 4, none: 0 };

export function compressionOfKey(key: string): Compression {
  if (key.endsWith('.gz')) return 'gzip';
  if (key.endsWith('.br')) return 'brotli';
  return 'none';
}

export function parseCompression(text: string): Compression {
  if (!(COMPRESSIONS as readonly string[]).includes(text)) throw new Error(`unknown compression "${text}": expected gzip, brotli or none`);
  return text as Compression;
}

export function compressStream(c: Compression, level = DEFAULT_LEVEL[c]): Transform {
  if (c === 'gzip') return zlib.createGzip({ level });
  if (c === 'brotli') return zlib.createBrotliCompress({ params: { [zlib.constants.BROTLI_PARAM_QUALITY]: level } });
  return new PassThrough();
}

export function decompressStream(c: Compression): Transform {
  if (c === 'gzip') return zlib.createGunzip();
  if (c === 'brotli') return zlib.createBrotliDecompress();
  return new PassThrough();
}

const gzip = promisify(zlib.gzip);
const gunzip = promisify(zlib.gunzip);
const brotli = promisify(zlib.brotliCompress);
const unbrotli = promisify(zlib.brotliDecompress);

/** compress on the thread pool */
export async function compressBuffer(buf: Buffer, c: Compression, level = DEFAULT_LEVEL[c]): Promise<Buffer> {
  if (c === 'gzip') return gzip(buf, { level });
  if (c === 'brotli') return brotli(buf, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: level, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: buf.length } });
  return buf;
}

/** decompress on the thread pool, never to more than `maxBytes` */
export async function decompressBuffer(buf: Buffer, c: Compression, maxBytes: number): Promise<Buffer> {
  if (c === 'gzip') return gunzip(buf, { maxOutputLength: maxBytes });
  if (c === 'brotli') return unbrotli(buf, { maxOutputLength: maxBytes });
  return buf;
}

export const sha256 = (buf: Uint8Array): string => createHash('sha256').update(buf).digest('hex');

/** a pass-through that hashes and counts what flows through it */
export class HashingStream extends Transform {
  private readonly hash: Hash = createHash('sha256');
  bytes = 0;
  private digestHex: string | null = null;
  constructor(private readonly onBytes?: (n: number) => void) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    this.onBytes?.(this.bytes);
    cb(null, chunk);
  }
  /** the sha256 of everything that passed (once the stream ended) */
  get sha256(): string {
    this.digestHex ??= this.hash.digest('hex');
    return this.digestHex;
  }
}

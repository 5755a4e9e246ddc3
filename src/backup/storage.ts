/**
 * Where a backup repository keeps its objects: a small key/value interface (put atomically, get,
 * stat, list, delete) that an object store could implement later, and its local-directory
 * implementation. Keys are '/'-separated relative names of [A-Za-z0-9._-] parts (never '..').
 *
 * LocalStorage writes every object as a temp file in the target's directory (owned like the
 * repository's root when run as root, so `archive push` run by the server's user can write beside
 * files `backup create` wrote as root), fsyncs it, renames (or, for `ifAbsent`, hard-links) it into
 * place and fsyncs the directory: an object is either whole or absent, also after a crash.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, type Stats } from 'node:fs';
import { chown, link, lstat, mkdir, open, readdir, rename, rm, rmdir, stat, unlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';

export interface StoredObject {
  key: string;
  size: number;
  mtimeMs: number;
}

export interface PutResult {
  /** false when `ifAbsent` found the key already there (nothing was written) */
  created: boolean;
  size: number;
}

export interface Storage {
  /** where it is, for messages */
  readonly location: string;
  /** write the whole body under `key`, atomically; `ifAbsent`: never replace an existing object */
  put(key: string, body: Buffer | AsyncIterable<Buffer | Uint8Array>, opts?: { ifAbsent?: boolean }): Promise<PutResult>;
  /** the object's bytes as a stream; StorageNotFound when absent */
  get(key: string): Promise<Readable>;
  stat(key: string): Promise<StoredObject | null>;
  /** every object under `prefix` (a key prefix ending in '/', or '' for all), sorted by key */
  list(prefix: string): Promise<StoredObject[]>;
  /** remove the object (absent is fine) */
  delete(key: string): Promise<void>;
}

export class StorageNotFound extends Error {
  constructor(readonly key: string, location: string) {
    super(`${location}/${key}: not in the repository`);
  }
}

const KEY = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;
const TEMP_PREFIX = '.pgha-tmp.';

export function checkKey(key: string): void {
  if (!KEY.test(key) || key.split('/').some((p) => p === '.' || p === '..' || p.startsWith(TEMP_PREFIX))) {
    throw new Error(`invalid repository key ${JSON.stringify(key)}`);
  }
}

export class LocalStorage implements Storage {
  readonly location: string;
  private owner: { uid: number; gid: number } | null | undefined;

  constructor(root: string) {
    this.location = resolve(root);
  }

  private path(key: string): string {
    checkKey(key);
    return join(this.location, ...key.split('/'));
  }

  /** uid/gid of the repository root when we run as root (new files and directories get them) */
  private async rootOwner(): Promise<{ uid: number; gid: number } | null> {
    if (this.owner !== undefined) return this.owner;
    if (process.getuid?.() !== 0) return (this.owner = null);
    const st = await stat(this.location);
    return (this.owner = st.uid === 0 && st.gid === 0 ? null : { uid: st.uid, gid: st.gid });
  }

  private async mkdirs(dir: string): Promise<void> {
    const owner = await this.rootOwner();
    const created = await mkdir(dir, { recursive: true, mode: 0o750 });
    if (created && owner) {
      // chown every directory mkdir created, from the first one down
      for (let d = dir; d.length >= created.length; d = dirname(d)) {
        await chown(d, owner.uid, owner.gid);
        if (d === created) break;
      }
    }
  }

  async put(key: string, body: Buffer | AsyncIterable<Buffer | Uint8Array>, opts: { ifAbsent?: boolean } = {}): Promise<PutResult> {
    const target = this.path(key);
    const dir = dirname(target);
    await this.mkdirs(dir);
    const tmp = join(dir, `${TEMP_PREFIX}${key.split('/').pop()}.${process.pid}.${randomBytes(6).toString('hex')}`);
    const fh = await open(tmp, 'wx', 0o640);
    let size = 0;
    let placed = false;
    try {
      const owner = await this.rootOwner();
      if (owner) await fh.chown(owner.uid, owner.gid);
      const write = async (chunk: Buffer | Uint8Array) => {
        for (let off = 0; off < chunk.length; ) off += (await fh.write(chunk, off, chunk.length - off)).bytesWritten;
        size += chunk.length;
      };
      if (Buffer.isBuffer(body)) await write(body);
      else for await (const chunk of body) await write(chunk);
      await fh.sync();
      await fh.close();
      if (opts.ifAbsent) {
        try {
          await link(tmp, target);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
          return { created: false, size };
        }
      } else await rename(tmp, target);
      placed = true;
      await fsyncDir(dir);
      return { created: true, size };
    } finally {
      await fh.close().catch(() => undefined);
      if (!placed || opts.ifAbsent) await unlink(tmp).catch(() => undefined);
    }
  }

  async get(key: string): Promise<Readable> {
    const path = this.path(key);
    let st: Stats;
    try {
      st = await stat(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new StorageNotFound(key, this.location);
      throw e;
    }
    if (!st.isFile()) throw new Error(`${path}: not a regular file`);
    return createReadStream(path, { highWaterMark: 1 << 20 });
  }

  async stat(key: string): Promise<StoredObject | null> {
    try {
      const st = await stat(this.path(key));
      return st.isFile() ? { key, size: st.size, mtimeMs: st.mtimeMs } : null;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  async list(prefix: string): Promise<StoredObject[]> {
    if (prefix !== '' && !prefix.endsWith('/')) throw new Error(`list prefix must end with '/': ${prefix}`);
    const base = prefix === '' ? this.location : this.path(prefix.slice(0, -1));
    const out: StoredObject[] = [];
    const walk = async (dir: string, keyPrefix: string): Promise<void> => {
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return;
        throw e;
      }
      for (const n of names) {
        if (n.startsWith(TEMP_PREFIX) || !/^[A-Za-z0-9._-]+$/.test(n)) continue;
        const p = join(dir, n);
        const st = await lstat(p).catch(() => null);
        if (!st) continue;
        if (st.isDirectory()) await walk(p, `${keyPrefix}${n}/`);
        else if (st.isFile()) out.push({ key: `${keyPrefix}${n}`, size: st.size, mtimeMs: st.mtimeMs });
      }
    };
    await walk(base, prefix);
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async delete(key: string): Promise<void> {
    const path = this.path(key);
    await rm(path, { force: true });
    // drop directories left empty (never the root)
    for (let d = dirname(path); d.length > this.location.length; d = dirname(d)) {
      try {
        await rmdir(d);
      } catch {
        break; // not empty
      }
    }
  }

  /** temp files a killed writer left behind (older than `olderThanMs`): removed, their names returned */
  async removeStaleTemp(olderThanMs: number): Promise<string[]> {
    const removed: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      for (const n of await readdir(dir).catch(() => [] as string[])) {
        const p = join(dir, n);
        const st = await lstat(p).catch(() => null);
        if (!st) continue;
        if (st.isDirectory()) await walk(p);
        else if (n.startsWith(TEMP_PREFIX) && Date.now() - st.mtimeMs > olderThanMs) {
          await unlink(p).catch(() => undefined);
          removed.push(p);
        }
      }
    };
    await walk(this.location);
    return removed;
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

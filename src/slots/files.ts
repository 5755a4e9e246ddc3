/**
 * Slot state files in a data directory: read every `pg_replslot/<slot>/state` with pgwal's parser,
 * and install one the way the server itself saves it (state.tmp, fsync, rename, fsync directories),
 * owned by the data directory's owner. Installing requires the server to be stopped: slots are only
 * read at start-up.
 */
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError } from '../formats/errors.js';
import { parseSlotState, type SlotState } from '../formats/replslot.js';
import { fsyncPath, ownLikeDirectory } from '../ship/files.js';

/** a slot name PostgreSQL would refuse ('bad-name'), or a state file for another slot than asked ('wrong-slot') */
export class SlotFileError extends Error {
  constructor(
    message: string,
    readonly reason: 'bad-name' | 'wrong-slot',
  ) {
    super(message);
  }
}

/** ReplicationSlotValidateName: lower-case letters, digits and underscores, at most 63 bytes */
export function checkSlotName(name: string): void {
  if (!/^[a-z0-9_]{1,63}$/.test(name)) throw new SlotFileError(`invalid replication slot name ${JSON.stringify(name)}`, 'bad-name');
}

export interface SlotFile {
  name: string;
  path: string;
  state: SlotState | null;
  error: string | null;
}

export function readSlotFiles(pgdata: string): SlotFile[] {
  const dir = join(pgdata, 'pg_replslot');
  if (!existsSync(dir)) return [];
  const out: SlotFile[] = [];
  for (const name of readdirSync(dir).sort()) {
    if (name.endsWith('.tmp') || !statSync(join(dir, name)).isDirectory()) continue;
    const path = join(dir, name, 'state');
    try {
      out.push({ name, path, state: parseSlotState(readFileSync(path), { file: path, allowBadChecksum: true }), error: null });
    } catch (e) {
      out.push({ name, path, state: null, error: e instanceof FormatError ? e.describe() : (e as Error).message });
    }
  }
  return out;
}

/** Write a verified slot state file into `pgdata` (the server must be stopped). */
export function installSlotFile(pgdata: string, bytes: Uint8Array, expectedName?: string): SlotState {
  const state = parseSlotState(bytes, { file: 'uploaded slot state' });
  checkSlotName(state.name);
  if (expectedName !== undefined && state.name !== expectedName) {
    throw new SlotFileError(`the file is for slot ${state.name}, not ${expectedName}`, 'wrong-slot');
  }
  const root = join(pgdata, 'pg_replslot');
  const dir = join(root, state.name);
  if (!existsSync(dir)) {
    mkdirSync(dir, { mode: 0o700 });
    ownLikeDirectory(dir, root);
  }
  const tmp = join(dir, 'state.tmp');
  const fd = openSync(tmp, 'w', 0o600);
  try {
    for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  ownLikeDirectory(tmp, root);
  renameSync(tmp, join(dir, 'state'));
  fsyncPath(dir);
  fsyncPath(root);
  return state;
}

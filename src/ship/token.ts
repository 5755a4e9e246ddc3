/**
 * The agents' shared bearer token for the command-line tools: from a file (`--token-file`), else
 * $PGHA_TOKEN, else `--token` — the last one is visible to every user in `ps`. A token file or an
 * agent config file that group or others may read gets a one-line warning on stderr.
 */
import { statSync } from 'node:fs';
import { readBoundedFile } from '../wal/bounded-read.js';

export type Warn = (line: string) => void;
export const warnOnStderr: Warn = (line) => void process.stderr.write(`${line}\n`);

/** a token file holds one token: a few KiB at most */
const MAX_TOKEN_FILE_BYTES = 4096;

/** Warn (one line) when `path` is readable by group or others; never an error. */
export function warnIfExposed(path: string, what: string, warn: Warn = warnOnStderr): void {
  let mode: number;
  try {
    const st = statSync(path);
    if (!st.isFile()) return; // reading it will say what is wrong
    mode = st.mode;
  } catch {
    return;
  }
  if (mode & 0o044) {
    warn(`pgha: warning: ${what} ${path} is readable by group or others (mode ${(mode & 0o777).toString(8).padStart(4, '0')}); it holds the agents' token: chmod 600 ${path}`);
  }
}

/** The token in a file (surrounding whitespace and the final newline dropped). */
export function readTokenFile(path: string, warn: Warn = warnOnStderr): string {
  warnIfExposed(path, 'token file', warn);
  const token = readBoundedFile(path, MAX_TOKEN_FILE_BYTES, { kind: 'file', name: 'token file' }).toString('utf8').trim();
  if (!token) throw new Error(`${path}: token file is empty`);
  return token;
}

export const TOKEN_HELP = 'The token is read from --token-file FILE, else $PGHA_TOKEN, else --token (which other users can see in ps).';

/** --token-file, else $PGHA_TOKEN, else --token; an error when none is given. */
export function resolveToken(o: { tokenFile?: string; token?: string }, env: NodeJS.ProcessEnv = process.env, warn: Warn = warnOnStderr): string {
  if (o.tokenFile) return readTokenFile(o.tokenFile, warn);
  if (env.PGHA_TOKEN) return env.PGHA_TOKEN;
  if (o.token) return o.token;
  throw new Error('no token: give --token-file FILE, set PGHA_TOKEN, or pass --token');
}

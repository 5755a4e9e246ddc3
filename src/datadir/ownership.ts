/** Files written as root into a data directory must belong to its owner, or the server cannot read them. */
import { chownSync, statSync } from 'node:fs';

/** give `path` the owner and group of `dir` (only when running as root) */
export function ownLikeDirectory(path: string, dir: string): void {
  if (process.getuid?.() !== 0) return;
  const st = statSync(dir);
  chownSync(path, st.uid, st.gid);
}

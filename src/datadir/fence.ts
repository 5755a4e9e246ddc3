/**
 * The fence marker: `pgha.fenced` in the data directory, written (with `standby.signal`) when a node
 * is fenced after a failover, so that neither a restart nor the agent brings it back as a primary.
 * A successful rejoin (pgha rejoin, POST instance/slave, the agent's automatic rejoin) removes it.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ownLikeDirectory } from './ownership.js';

/** written into the data directory by node/fence; removed by a successful rejoin */
export const FENCE_MARKER = 'pgha.fenced';

export interface FenceInfo {
  at: string | null;
  reason: string;
}

export function fenceMarkerPath(pgdata: string): string {
  return join(pgdata, FENCE_MARKER);
}

export function isFenced(pgdata: string): boolean {
  return existsSync(fenceMarkerPath(pgdata));
}

/** the marker's content, or null when the node is not fenced */
export function readFence(pgdata: string): FenceInfo | null {
  let text: string;
  try {
    text = readFileSync(fenceMarkerPath(pgdata), 'utf8').trim();
  } catch {
    return null;
  }
  try {
    const j = JSON.parse(text) as { at?: string; reason?: string };
    return { at: j.at ?? null, reason: String(j.reason ?? text) };
  } catch {
    return { at: null, reason: text };
  }
}

/** the marker's text as written (for messages) */
export function fenceText(pgdata: string): string {
  try {
    return readFileSync(fenceMarkerPath(pgdata), 'utf8').trim();
  } catch {
    return '';
  }
}

/**
 * Fence the data directory: `standby.signal` (a restart comes up in recovery) and the marker, both
 * owned like the directory. Stopping the server is the caller's part.
 */
export function writeFence(pgdata: string, reason: string): FenceInfo {
  const info = { at: new Date().toISOString(), reason };
  writeFileSync(join(pgdata, 'standby.signal'), '');
  writeFileSync(fenceMarkerPath(pgdata), JSON.stringify(info) + '\n');
  for (const f of ['standby.signal', FENCE_MARKER]) ownLikeDirectory(join(pgdata, f), pgdata);
  return info;
}

/** remove the marker (a rejoined node follows the new primary: it is no longer fenced) */
export function clearFence(pgdata: string): boolean {
  const had = isFenced(pgdata);
  rmSync(fenceMarkerPath(pgdata), { force: true });
  return had;
}

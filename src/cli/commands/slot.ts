import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError, NotRegularFileError } from '../../formats/errors.js';
import { readSlotStateBytes } from '../../wal/bounded-read.js';
import { parseSlotState } from '../../formats/replslot.js';
import { slotView } from '../../inspect/views.js';
import { describeError, EXIT_NEGATIVE, EXIT_OK, keyValues, printJson, table } from '../output.js';

/** A slot state file, or every `pg_replslot/<slot>/state` of a data directory. */
export function slotFiles(path: string): string[] {
  const st = statSync(path);
  if (!st.isDirectory()) {
    if (!st.isFile()) throw new NotRegularFileError(path);
    return [path];
  }
  const dir = existsSync(join(path, 'pg_replslot')) ? join(path, 'pg_replslot') : path;
  return readdirSync(dir)
    .filter((n) => !n.endsWith('.tmp') && statSync(join(dir, n)).isDirectory())
    .sort()
    .map((n) => join(dir, n, 'state'));
}

export function slotCommand(action: 'show' | 'verify', path: string, opts: { json?: boolean }): number {
  const files = slotFiles(path);
  const views: Array<Record<string, unknown>> = [];
  let bad = 0;
  for (const file of files) {
    try {
      const s = parseSlotState(readSlotStateBytes(file), { file, allowBadChecksum: true });
      const v: Record<string, unknown> = { ...slotView(file, s), valid: s.checksumValid };
      if (!s.checksumValid) {
        bad++;
        v.error = `${file}: offset 4: checksum mismatch for replication slot file (expected 0x${s.computedChecksum.toString(16).padStart(8, '0')}, got 0x${s.checksum.toString(16).padStart(8, '0')})`;
      }
      views.push(v);
    } catch (e) {
      // a FIFO or a device in place of a state file is an error (exit 2), not a bad slot file
      if (e instanceof NotRegularFileError || (!(e instanceof FormatError) && (e as NodeJS.ErrnoException).code !== 'ENOENT')) throw e;
      bad++;
      views.push({ kind: 'slot', path: file, valid: false, checksumValid: false, error: describeError(e) });
    }
  }
  if (opts.json) printJson(statSync(path).isDirectory() ? views : views[0]);
  else if (action === 'verify') {
    for (const v of views) process.stdout.write(v.valid ? `${v.path}: ok (slot "${v.name}", PostgreSQL ${(v.possibleVersions as number[]).join('/')} layout)\n` : `${v.error}\n`);
    if (views.length === 0) process.stdout.write(`${path}: no replication slots\n`);
  } else if (views.length > 1 || statSync(path).isDirectory()) {
    process.stdout.write(
      table(
        views.map((v) => [String(v.name ?? '?'), String(v.slotType ?? '?'), String(v.plugin ?? ''), Number(v.database ?? 0), String(v.restartLsn ?? '-'), String(v.confirmedFlush ?? '-'), Number(v.catalogXmin ?? 0), v.valid ? 'ok' : 'INVALID']),
        ['slot', 'type', 'plugin', 'database', 'restart_lsn', 'confirmed_flush', 'catalog_xmin', 'file'],
      ),
    );
    for (const v of views) if (!v.valid) process.stderr.write(`${v.error}\n`);
  } else {
    const v = views[0];
    if (v.valid || v.name !== undefined) process.stdout.write(keyValues(v));
    else process.stderr.write(`${v.error}\n`);
  }
  return bad > 0 ? EXIT_NEGATIVE : EXIT_OK;
}

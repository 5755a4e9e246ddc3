/**
 * The layering of ARCHITECTURE.md, checked on every import of src/ and proxy/: a part imports only
 * the parts below it. A new import that breaks a rule fails here with the file and the import.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

const LIBRARY = ['src/formats', 'src/native', 'src/wal', 'src/datadir', 'src/pg', 'src/inspect', 'src/ship', 'src/rejoin', 'src/slots', 'src/config'];
/** part → the parts it may import (besides itself) */
const ALLOWED: Record<string, string[]> = {
  'src/log': [],
  'src/formats': [],
  'src/config': [],
  'src/native': ['src/formats'],
  'src/wal': ['src/formats', 'src/native'],
  'src/datadir': ['src/formats', 'src/native', 'src/wal'],
  'src/pg': ['src/formats', 'src/datadir'],
  'src/inspect': ['src/formats', 'src/native', 'src/wal', 'src/datadir'],
  'src/ship': ['src/formats', 'src/native', 'src/wal', 'src/datadir', 'src/pg', 'src/inspect'],
  'src/rejoin': LIBRARY,
  'src/slots': LIBRARY,
  // backups and the WAL archive: bytes, the scanner, PostgreSQL's tools; no HA part
  'src/backup': ['src/formats', 'src/native', 'src/wal', 'src/datadir', 'src/pg'],
  'src/dcs': LIBRARY,
  'src/agent': [...LIBRARY, 'src/dcs'],
  'src/demo': [...LIBRARY, 'src/dcs', 'src/agent'],
  'src/init': [...LIBRARY],
  'src/cli': [...LIBRARY, 'src/dcs', 'src/agent', 'src/demo', 'src/init', 'src/backup'],
  proxy: ['src/formats', 'src/native', 'src/ship', 'src/dcs', 'src/slots/member-slot.ts', 'src/config'],
};

function partOf(file: string): string | null {
  const rel = relative(ROOT, file).replace(/\\/g, '/');
  if (rel.startsWith('proxy/')) return 'proxy';
  const m = /^src\/([^/]+)\//.exec(rel);
  return m ? `src/${m[1]}` : null;
}

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? tsFiles(p) : p.endsWith('.ts') && !p.endsWith('.d.ts') ? [p] : [];
  });
}

interface Import {
  file: string;
  target: string;
  typeOnly: boolean;
}

function importsOf(file: string): Import[] {
  const text = readFileSync(file, 'utf8');
  const out: Import[] = [];
  const re = /^\s*(import|export)\s+(type\s+)?(?:[^'";]*?\s+from\s+)?['"]([^'"]+)['"]/gm;
  for (const m of text.matchAll(re)) {
    if (!m[3].startsWith('.')) continue;
    out.push({ file, target: resolve(dirname(file), m[3]).replace(/\.js$/, '.ts'), typeOnly: Boolean(m[2]) });
  }
  // dynamic imports count too
  for (const m of text.matchAll(/import\(\s*['"](\.[^'"]+)['"]\s*\)/g)) out.push({ file, target: resolve(dirname(file), m[1]).replace(/\.js$/, '.ts'), typeOnly: false });
  return out;
}

function allowed(from: string, imp: Import): boolean {
  const to = partOf(imp.target);
  if (to === null || to === from) return true;
  // the logger setup (src/log) is for every part that runs, not for the pure parsers
  if (to === 'src/log') return from !== 'src/formats';
  if ((from === 'src/cli' || from === 'src/demo') && to === 'proxy') return imp.typeOnly; // shells read the proxy's JSON shapes
  const rel = relative(ROOT, imp.target).replace(/\\/g, '/');
  return ALLOWED[from].some((a) => a === to || a === rel);
}

describe('layers point one way (ARCHITECTURE.md)', () => {
  const files = [...tsFiles(join(ROOT, 'src')), ...tsFiles(join(ROOT, 'proxy'))];

  it('every part of src/ and proxy/ is in the table', () => {
    const parts = new Set(files.map(partOf));
    for (const p of parts) expect(ALLOWED, `part ${p}`).toHaveProperty([p!]);
  });

  it('no import breaks a rule', () => {
    const broken: string[] = [];
    let checked = 0;
    for (const f of files) {
      const from = partOf(f)!;
      for (const imp of importsOf(f)) {
        checked++;
        if (!allowed(from, imp)) broken.push(`${relative(ROOT, f)} imports ${relative(ROOT, imp.target)} (${from} may import ${ALLOWED[from].join(', ') || 'nothing else'})`);
      }
    }
    expect(checked).toBeGreaterThan(200);
    expect(broken).toEqual([]);
  });

  it('the check itself sees a broken rule', () => {
    const fake: Import = { file: join(ROOT, 'src/formats/lsn.ts'), target: join(ROOT, 'src/native/index.ts'), typeOnly: false };
    expect(allowed('src/formats', fake)).toBe(false);
    expect(allowed('src/agent', { file: '', target: join(ROOT, 'src/cli/output.ts'), typeOnly: false })).toBe(false);
    expect(allowed('src/cli', { file: '', target: join(ROOT, 'proxy/server.ts'), typeOnly: true })).toBe(true);
    expect(allowed('src/cli', { file: '', target: join(ROOT, 'proxy/server.ts'), typeOnly: false })).toBe(false);
  });
});

describe('one record API (src/formats/wal/record.ts)', () => {
  it('no part outside the scanner reads packed record entries or decodes record layouts by hand', () => {
    const files = [...tsFiles(join(ROOT, 'src')), ...tsFiles(join(ROOT, 'proxy'))].filter((f) => !relative(ROOT, f).replace(/\\/g, '/').startsWith('src/formats/wal/'));
    const byHand = files.filter((f) => /\b(RECORD_ENTRY_SIZE|checkRecordLayout)\b/.test(readFileSync(f, 'utf8'))).map((f) => relative(ROOT, f));
    expect(byHand).toEqual([]);
  });
});

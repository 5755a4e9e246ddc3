/**
 * psycopg2's own test suite (from its PyPI sdist) run against a server, with per-test results.
 * The suite and a virtualenv with the psycopg2-binary wheel of the same version are fetched from
 * PyPI into .cache/client-suites/ on first use.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './cli.js';

export const PSYCOPG2_VERSION = '2.9.10';
const cache = join(ROOT, '.cache', 'client-suites');
const sdist = join(cache, `psycopg2-${PSYCOPG2_VERSION}`);
const venv = join(cache, `venv-psycopg2-${PSYCOPG2_VERSION}`);
const python = join(venv, 'bin', 'python');

export function preparePsycopg2Suite(): void {
  mkdirSync(cache, { recursive: true });
  if (!existsSync(python)) {
    execFileSync('python3', ['-m', 'venv', venv], { stdio: 'inherit' });
    execFileSync(python, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', `psycopg2-binary==${PSYCOPG2_VERSION}`], { stdio: 'inherit' });
  }
  if (!existsSync(join(sdist, 'tests', '__init__.py'))) {
    execFileSync(python, ['-m', 'pip', 'download', '--quiet', '--disable-pip-version-check', '--no-deps', '--no-binary', ':all:', `psycopg2==${PSYCOPG2_VERSION}`, '-d', cache], { stdio: 'inherit' });
    execFileSync('tar', ['xzf', join(cache, `psycopg2-${PSYCOPG2_VERSION}.tar.gz`), '-C', cache]);
  }
}

export type Outcome = 'ok' | 'FAIL' | 'ERROR' | 'skipped' | 'expected failure' | 'unexpected success';

export interface SuiteRun {
  results: Map<string, Outcome>;
  output: string;
  exitCode: number | null;
}

/** run the whole suite against host:port as user postgres, database psycopg2_test (`extraEnv`: PGPASSWORD…) */
export function runPsycopg2Suite(host: string, port: number, extraEnv: NodeJS.ProcessEnv = {}): Promise<SuiteRun> {
  const env = {
    ...process.env,
    ...extraEnv,
    PSYCOPG2_TESTDB: 'psycopg2_test',
    PSYCOPG2_TESTDB_HOST: host,
    PSYCOPG2_TESTDB_PORT: String(port),
    PSYCOPG2_TESTDB_USER: 'postgres',
    // replication tests too: a logical and a physical replication connection through the same address
    PSYCOPG2_TEST_REPL_DSN: '',
    PGSSLMODE: 'disable',
  };
  const code = 'import sys, unittest, tests; r = unittest.TextTestRunner(verbosity=2).run(tests.test_suite()); sys.exit(0 if r.wasSuccessful() else 1)';
  return new Promise((resolve, reject) => {
    const child = spawn(python, ['-c', code], { cwd: sdist, env });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('close', (exitCode) => {
      const results = new Map<string, Outcome>();
      // "test_name (tests.test_mod.Class.test_name) ... ok" (the outcome may follow on a later line)
      const re = /^(\w+) \(([\w.]+)\)(?:\n[^\n]*?)*? \.\.\. (ok|FAIL|ERROR|skipped|expected failure|unexpected success)/gm;
      for (const m of output.matchAll(re)) results.set(`${m[2]}`, m[3] as Outcome);
      resolve({ results, output, exitCode });
    });
  });
}

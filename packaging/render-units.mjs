#!/usr/bin/env node
// Writes packaging/systemd/*.service from the one renderer (src/init/systemd.ts, built into dist/):
// the units `pgha init --systemd` writes for a cluster are made by the same code.
// Run after `npx tsc -p tsconfig.json`; test/cli/init-units.test.ts checks the files are its output.
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const { packagedUnits } = await import(join(here, '..', 'dist', 'src', 'init', 'systemd.js'));
for (const [name, text] of Object.entries(packagedUnits())) {
  writeFileSync(join(here, 'systemd', name), text);
  process.stdout.write(`packaging/systemd/${name}\n`);
}

/** the version in the package's package.json (dist/src/config → ../../../package.json): what --version and the proxy console's SHOW VERSION print */
import { readFileSync } from 'node:fs';

export function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

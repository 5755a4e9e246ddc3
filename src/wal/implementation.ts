/** The scanner the CLI uses: the native addon when it is loaded, else the TypeScript twin. */
import { activeImplementation } from '../native/index.js';
import type { ScanImplementation } from './stream.js';

export function walImplementation(): ScanImplementation {
  return activeImplementation();
}

import { nodeLsn } from '../../datadir/node-state.js';
import { activeImplementation } from '../../native/index.js';
import { EXIT_OK, keyValues, printJson } from '../output.js';

export async function lsnCommand(opts: { pgdata: string; json?: boolean; verbose?: boolean }): Promise<number> {
  const detail = await nodeLsn(opts.pgdata, activeImplementation());
  if (opts.json) {
    printJson(opts.verbose ? { ...detail.json, state: detail.control.state, endReason: detail.scan.endReason, endMessage: detail.scan.endMessage } : detail.json);
  } else {
    process.stdout.write(keyValues({ ...detail.json, state: detail.control.state, endReason: `${detail.scan.endReason}: ${detail.scan.endMessage}` }));
  }
  return EXIT_OK;
}

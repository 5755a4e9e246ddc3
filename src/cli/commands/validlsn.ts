import { basename } from 'node:path';
import { parseTimelineId } from '../../formats/lsn.js';
import { parseHistory, validLsnAnswer, type TimelineHistory } from '../../formats/timeline-history.js';
import { parseWalFileName } from '../../formats/lsn.js';
import { readNodeHistory } from '../../datadir/node-state.js';
import { readHistoryBytes } from '../../wal/bounded-read.js';
import { EXIT_NEGATIVE, EXIT_OK, printJson, UsageError } from '../output.js';

export interface ValidLsnOptions {
  pgdata?: string;
  history?: string;
  json?: boolean;
}

/** The answer object, shared with the agent's GET validLsn/:tli/:lsn (it lives with the parser). */
export { validLsnAnswer };

export function parseTli(text: string): number {
  try {
    return parseTimelineId(text);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export function validLsnCommand(tliText: string, lsnText: string, opts: ValidLsnOptions): number {
  const tli = parseTli(tliText);
  if (!!opts.pgdata === !!opts.history) throw new UsageError('give exactly one of --pgdata DIR or --history FILE');
  let history: TimelineHistory;
  if (opts.pgdata) history = readNodeHistory(opts.pgdata);
  else {
    const file = opts.history!;
    const info = parseWalFileName(basename(file));
    history = parseHistory(readHistoryBytes(file), info?.kind === 'history' ? info.tli : undefined, file);
  }
  const { json, answer } = validLsnAnswer(history, tli, lsnText);
  if (opts.json) printJson(json);
  else process.stdout.write(`${json.msg}: ${answer.reason} (timeline switches at or after ${lsnText}: ${json.cnt})\n`);
  return answer.valid ? EXIT_OK : EXIT_NEGATIVE;
}

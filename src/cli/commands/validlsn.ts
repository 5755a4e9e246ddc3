import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { parseLsn } from '../../formats/lsn.js';
import { parseHistory, validLsn, type TimelineHistory } from '../../formats/timeline-history.js';
import { parseWalFileName } from '../../formats/lsn.js';
import { readNodeHistory } from '../../datadir/node-state.js';
import { EXIT_NEGATIVE, EXIT_OK, printJson, UsageError } from '../output.js';

export interface ValidLsnOptions {
  pgdata?: string;
  history?: string;
  json?: boolean;
}

/** The answer object, shared with the agent's GET validLsn/:tli/:lsn. */
export function validLsnAnswer(history: TimelineHistory, tli: number, lsnText: string) {
  const answer = validLsn(history, tli, parseLsn(lsnText));
  return {
    json: { code: answer.valid ? 0 : 1, msg: answer.valid ? 'Valid lsn' : 'Invalid lsn', cnt: answer.switchesAfter },
    answer,
  };
}

export function parseTli(text: string): number {
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > 0xffffffff) {
    throw new UsageError(`invalid timeline ID "${text}": expected a decimal number from 1 to 4294967295`);
  }
  return Number(text);
}

export function validLsnCommand(tliText: string, lsnText: string, opts: ValidLsnOptions): number {
  const tli = parseTli(tliText);
  if (!!opts.pgdata === !!opts.history) throw new UsageError('give exactly one of --pgdata DIR or --history FILE');
  let history: TimelineHistory;
  if (opts.pgdata) history = readNodeHistory(opts.pgdata);
  else {
    const file = opts.history!;
    const info = parseWalFileName(basename(file));
    history = parseHistory(readFileSync(file), info?.kind === 'history' ? info.tli : undefined, file);
  }
  const { json, answer } = validLsnAnswer(history, tli, lsnText);
  if (opts.json) printJson(json);
  else process.stdout.write(`${json.msg}: ${answer.reason} (timeline switches at or after ${lsnText}: ${json.cnt})\n`);
  return answer.valid ? EXIT_OK : EXIT_NEGATIVE;
}

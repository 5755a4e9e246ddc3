/**
 * One logger setup for the daemons (pgha agent, pgha-proxy) and the CLI: pino, as JSON lines when
 * the output is a file or a pipe (what log collectors read), pretty and human when it is a
 * terminal (pino-pretty, in-process: no worker thread). `--log-format json|pretty` or
 * $PGHA_LOG_FORMAT forces one; the level comes from the caller (--log-level, $PGHA_LOG_LEVEL).
 */
import pino, { type Logger, type LoggerOptions } from 'pino';
import pretty from 'pino-pretty';

export type LogFormat = 'json' | 'pretty';
export const LOG_FORMATS: readonly LogFormat[] = ['json', 'pretty'];

export class LogFormatError extends Error {}

/** the format asked for (flag, then $PGHA_LOG_FORMAT), else pretty on a terminal and JSON otherwise */
export function logFormat(flag?: string, env: NodeJS.ProcessEnv = process.env, out: { isTTY?: boolean } = process.stdout): LogFormat {
  const asked = flag ?? env.PGHA_LOG_FORMAT;
  if (asked !== undefined && asked !== '') {
    if (!LOG_FORMATS.includes(asked as LogFormat)) throw new LogFormatError(`--log-format must be json or pretty, got "${asked}"`);
    return asked as LogFormat;
  }
  return out.isTTY ? 'pretty' : 'json';
}

export interface LoggerSetup {
  level?: string;
  /** fields on every line, e.g. { svc: 'pgha-proxy' } */
  base?: Record<string, unknown>;
  /** default: logFormat() (terminal or not) */
  format?: LogFormat;
  /** where lines go (default stdout) */
  destination?: NodeJS.WritableStream & { isTTY?: boolean };
}

export function createLogger(o: LoggerSetup = {}): Logger {
  const out = o.destination ?? process.stdout;
  const format = o.format ?? logFormat(undefined, process.env, out);
  const opts: LoggerOptions = { level: o.level ?? process.env.PGHA_LOG_LEVEL ?? 'info', base: o.base ?? null };
  if (format === 'json') return o.destination ? pino(opts, o.destination) : pino(opts);
  return pino(
    opts,
    pretty({
      destination: out,
      colorize: Boolean(out.isTTY),
      translateTime: 'SYS:HH:MM:ss.l',
      ignore: 'pid,hostname,svc,node,reqId,req,res',
      singleLine: true,
      sync: true,
    }),
  );
}

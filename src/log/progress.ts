/**
 * Progress bars for people watching a terminal (cli-progress, on stderr): the WAL a rejoin fetches,
 * a base backup or pg_rewind copying, slots carried over. Nothing at all when stderr is not a
 * terminal or the caller prints JSON: scripts and log files never see a bar.
 */
import cliProgress from 'cli-progress';

export interface Progress {
  /** the bar's position, and its total when it became known or grew */
  update(value: number, total?: number): void;
  increment(by?: number): void;
  stop(): void;
}

const NONE: Progress = { update: () => undefined, increment: () => undefined, stop: () => undefined };

export interface ProgressOptions {
  /** what is counted, e.g. 'fetching WAL' */
  label: string;
  total: number;
  /** files (a count) or kB (sizes as PostgreSQL's --progress reports them) */
  unit: 'files' | 'kB' | 'slots';
  /** false: no bar (JSON output, or the caller's own choice) */
  enabled?: boolean;
  stream?: NodeJS.WriteStream;
}

/** a bar on a terminal, else an object that does nothing */
export function progress(o: ProgressOptions): Progress {
  const stream = o.stream ?? process.stderr;
  if (o.enabled === false || !stream.isTTY) return NONE;
  const unit = o.unit === 'kB' ? ' kB' : ` ${o.unit}`;
  const bar = new cliProgress.SingleBar(
    { format: `${o.label} [{bar}] {percentage}% {value}/{total}${unit}`, stream, hideCursor: true, clearOnComplete: false, fps: 10 },
    cliProgress.Presets.shades_classic,
  );
  bar.start(Math.max(o.total, 1), 0);
  let total = Math.max(o.total, 1);
  let stopped = false;
  return {
    update(value, t) {
      if (stopped) return;
      if (t !== undefined && t !== total) bar.setTotal((total = Math.max(t, value, 1)));
      else if (value > total) bar.setTotal((total = value));
      bar.update(value);
    },
    increment(by = 1) {
      if (!stopped) bar.increment(by);
    },
    stop() {
      if (stopped) return;
      stopped = true;
      bar.stop();
    },
  };
}

/**
 * The sizes in a PostgreSQL tool's --progress output (pg_basebackup "1234/5678 kB (21%), …",
 * pg_rewind "1234/5678 kB (21%) copied"): the last done/total pair in a chunk of stderr, or null.
 */
export function parseToolProgress(chunk: string): { done: number; total: number } | null {
  const all = [...chunk.matchAll(/(\d+)\/(\d+) kB/g)];
  const m = all.at(-1);
  return m ? { done: Number(m[1]), total: Number(m[2]) } : null;
}

/**
 * Life-cycle jobs of the agent (a rejoin, a start as primary, the automatic rejoin): one at a time,
 * run in the background with a state that can be polled (GET jobs, GET jobs/:id). The history keeps
 * the newest jobs only; each keeps the last lines of its log.
 */
import { AgentApiError } from './api-error.js';

export type JobState = 'running' | 'succeeded' | 'failed';

export interface JobView {
  id: string;
  kind: string;
  state: JobState;
  startedAt: string;
  endedAt: string | null;
  result?: unknown;
  error?: string;
  log: string[];
}

interface Job extends JobView {
  done: Promise<unknown>;
}

export class Jobs {
  private readonly history: Job[] = [];
  private running: Job | null = null;
  private seq = 0;

  constructor(
    private readonly keep = 20,
    private readonly logLines = 100,
  ) {}

  /** the running job, if any */
  get current(): JobView | null {
    return this.running && view(this.running);
  }

  busy(): boolean {
    return this.running !== null;
  }

  /** 409 BUSY while a job runs */
  assertIdle(what: string): void {
    const r = this.running;
    if (r) throw new AgentApiError(`${what}: job ${r.id} (${r.kind}) is running; poll GET /api/pg/v1/jobs/${r.id}`, 409, 'BUSY');
  }

  /**
   * Start `fn` as a job (409 BUSY when one runs). `done` settles as the job ends: with fn's value, or
   * rejecting with fn's error (the job is then "failed").
   */
  start<T>(kind: string, fn: (log: (msg: string) => void) => Promise<T>, what = kind): { id: string; done: Promise<T> } {
    this.assertIdle(what);
    const id = `${Date.now().toString(36)}-${++this.seq}`;
    const job = { id, kind, state: 'running', startedAt: new Date().toISOString(), endedAt: null, log: [] } as unknown as Job;
    const log = (msg: string) => {
      job.log.push(`${new Date().toISOString()} ${msg}`);
      if (job.log.length > this.logLines) job.log.splice(0, job.log.length - this.logLines);
    };
    this.running = job;
    this.history.unshift(job);
    if (this.history.length > this.keep) this.history.splice(this.keep);
    const done = (async () => {
      // after the caller has its id, never synchronously
      await Promise.resolve();
      try {
        const result = await fn(log);
        job.result = result;
        job.state = 'succeeded';
        return result;
      } catch (e) {
        job.error = (e as Error).message ?? String(e);
        job.state = 'failed';
        log(`failed: ${job.error}`);
        throw e;
      } finally {
        job.endedAt = new Date().toISOString();
        if (this.running === job) this.running = null;
      }
    })();
    job.done = done;
    // a job nobody awaits must not become an unhandled rejection
    done.catch(() => undefined);
    return { id, done };
  }

  /** newest first */
  list(): JobView[] {
    return this.history.map(view);
  }

  /** the newest job (running or ended), for /health */
  latest(): JobView | null {
    return this.history[0] ? view(this.history[0]) : null;
  }

  get(id: string): JobView | null {
    const j = this.history.find((x) => x.id === id);
    return j ? view(j) : null;
  }

  /** wait (at most timeoutMs) for the running job to end */
  async settle(timeoutMs: number): Promise<void> {
    const r = this.running;
    if (!r) return;
    let t: NodeJS.Timeout | undefined;
    await Promise.race([r.done.catch(() => undefined), new Promise((res) => (t = setTimeout(res, timeoutMs)))]);
    clearTimeout(t);
  }
}

function view(j: Job): JobView {
  const v: JobView = { id: j.id, kind: j.kind, state: j.state, startedAt: j.startedAt, endedAt: j.endedAt, log: [...j.log] };
  if (j.state === 'succeeded') v.result = j.result;
  if (j.state === 'failed') v.error = j.error;
  return v;
}

/**
 * What the agent's routes answer when they refuse: an HTTP status and a JSON `{error, message}`.
 * The agent's own refusals are AgentApiError; WAL shipping's (ShipError: a name, a body, a peer)
 * carry the status they are answered with; a slot file's library error is mapped here.
 */
import { ShipError } from '../ship/files.js';
import { SlotFileError } from '../slots/files.js';

/** a refusal of one of the agent's routes: answered with `status` and `{error: code, message}` */
export class AgentApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
  ) {
    super(message);
  }
}

/** the HTTP answer of an error the agent knows, or null (then it is a failure of the agent itself) */
export function apiAnswer(err: unknown): { status: number; code: string; message: string } | null {
  if (err instanceof AgentApiError || err instanceof ShipError) return { status: err.status, code: err.code, message: err.message };
  if (err instanceof SlotFileError) return { status: err.reason === 'bad-name' ? 400 : 422, code: err.reason === 'bad-name' ? 'BAD_SLOT_NAME' : 'BAD_SLOT_FILE', message: err.message };
  return null;
}

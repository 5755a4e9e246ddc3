/**
 * What an HTTP daemon logs about its requests: reads that answered (GET/HEAD below 400 — the
 * proxies' and peers' polls of /health, /alive, state, /metrics) at debug, everything else (actions,
 * refusals, errors) at info, one line per request with method, URL, status and milliseconds.
 */
import { LogController } from 'fastify';
import type { FastifyReply, FastifyRequest } from 'fastify';

export function isRoutine(method: string, status: number): boolean {
  return (method === 'GET' || method === 'HEAD') && status < 400;
}

export class RoutineAtDebug extends LogController {
  override incomingRequest(request: FastifyRequest): void {
    request.log.debug({ method: request.method, url: request.url }, 'incoming request');
  }

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (error) return super.requestCompleted(error, request, reply);
    const fields = { method: request.method, url: request.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime * 10) / 10 };
    if (isRoutine(request.method, reply.statusCode)) reply.log.debug(fields, 'request completed');
    else reply.log.info(fields, 'request completed');
  }
}

/**
 * Talks to a peer's agent: JSON resources with the bearer token, and file downloads verified
 * against the sha256 the peer lists, written atomically into a local directory.
 */
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { receiveFile, ShipError, type FileDigest } from './files.js';

export class AgentClient {
  constructor(
    readonly baseUrl: string,
    private readonly token: string,
    private readonly timeoutMs = 30_000,
  ) {}

  private url(path: string): string {
    return `${this.baseUrl.replace(/\/+$/, '')}/api/pg/v1/${path}`;
  }

  private async request(method: string, path: string, body?: unknown): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(this.url(path), {
        method,
        headers: { authorization: `Bearer ${this.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body !== undefined ? JSON.stringify(body) : undefined,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (e) {
      throw new ShipError(`${this.baseUrl}: ${method} ${path}: ${(e as Error).message}`, 502, 'PEER_UNREACHABLE');
    }
    if (!res.ok) {
      const text = await res.text().catch(() => '');
      throw new ShipError(`${this.baseUrl}: ${method} ${path}: HTTP ${res.status} ${text.slice(0, 300)}`, res.status, 'PEER_ERROR');
    }
    return res;
  }

  async get<T>(path: string): Promise<T> {
    return (await (await this.request('GET', path)).json()) as T;
  }

  async getText(path: string): Promise<string> {
    return (await this.request('GET', path)).text();
  }

  async post<T>(path: string, body: unknown = {}): Promise<T> {
    return (await (await this.request('POST', path, body)).json()) as T;
  }

  /**
   * Download `name` into `dir` atomically, verified against `expect` (from a walFiles listing) or
   * else against the X-Checksum and Content-Length the peer sends with the file.
   */
  async download(name: string, dir: string, expect?: { sha256: string; size: number }): Promise<FileDigest> {
    const res = await this.request('GET', `walFile/${encodeURIComponent(name)}`);
    if (!res.body) throw new ShipError(`${this.baseUrl}: empty body for ${name}`, 502, 'PEER_ERROR');
    const header = /^sha256:([0-9a-f]{64})$/.exec(res.headers.get('x-checksum') ?? '');
    const sha256 = expect?.sha256 ?? header?.[1];
    if (!sha256) throw new ShipError(`${this.baseUrl}: no X-Checksum for ${name}`, 502, 'PEER_ERROR');
    const length = res.headers.get('content-length');
    const size = expect?.size ?? (length !== null ? Number(length) : undefined);
    return receiveFile(dir, name, Readable.fromWeb(res.body as unknown as WebReadableStream<Uint8Array>), { sha256, size });
  }
}

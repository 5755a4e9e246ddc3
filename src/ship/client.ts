/**
 * Talks to a peer's agent: JSON resources with the bearer token, and file downloads verified
 * against the sha256 the peer lists, written atomically into a local directory.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
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

  async getBytes(path: string): Promise<Buffer> {
    return Buffer.from(await (await this.request('GET', path)).arrayBuffer());
  }

  async put(path: string, body: Uint8Array, sha256: string): Promise<unknown> {
    let res: Response;
    try {
      res = await fetch(this.url(path), {
        method: 'PUT',
        headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/octet-stream', 'x-checksum': `sha256:${sha256}` },
        body: new Uint8Array(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (e) {
      throw new ShipError(`${this.baseUrl}: PUT ${path}: ${(e as Error).message}`, 502, 'PEER_UNREACHABLE');
    }
    const text = await res.text();
    if (!res.ok) throw new ShipError(`${this.baseUrl}: PUT ${path}: HTTP ${res.status} ${text.slice(0, 300)}`, res.status, 'PEER_ERROR');
    return JSON.parse(text);
  }

  async delete<T>(path: string): Promise<T> {
    return (await (await this.request('DELETE', path)).json()) as T;
  }

  async getText(path: string): Promise<string> {
    return (await this.request('GET', path)).text();
  }

  async post<T>(path: string, body: unknown = {}): Promise<T> {
    return (await (await this.request('POST', path, body)).json()) as T;
  }

  /**
   * Download `name` into `dir` atomically, verified against `expect` (from a walFiles listing) or
   * else against the X-Checksum and Content-Length the peer sends with the file. Uses node:http
   * directly: streaming a large body through fetch's web streams is several times slower.
   */
  async download(name: string, dir: string, expect?: { sha256: string; size: number }): Promise<FileDigest> {
    const url = new URL(this.url(`walFile/${encodeURIComponent(name)}`));
    const get = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = get(url, { headers: { authorization: `Bearer ${this.token}` }, timeout: this.timeoutMs }, resolve);
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.on('error', (e) => reject(new ShipError(`${this.baseUrl}: GET walFile/${name}: ${e.message}`, 502, 'PEER_UNREACHABLE')));
      req.end();
    });
    if (res.statusCode !== 200) {
      let text = '';
      for await (const c of res) text += String(c);
      throw new ShipError(`${this.baseUrl}: GET walFile/${name}: HTTP ${res.statusCode} ${text.slice(0, 300)}`, res.statusCode ?? 502, 'PEER_ERROR');
    }
    const header = /^sha256:([0-9a-f]{64})$/.exec(String(res.headers['x-checksum'] ?? ''));
    const sha256 = expect?.sha256 ?? header?.[1];
    if (!sha256) {
      res.destroy();
      throw new ShipError(`${this.baseUrl}: no X-Checksum for ${name}`, 502, 'PEER_ERROR');
    }
    const length = res.headers['content-length'];
    const size = expect?.size ?? (length !== undefined ? Number(length) : undefined);
    try {
      return await receiveFile(dir, name, res, { sha256, size });
    } catch (e) {
      res.destroy();
      throw e;
    }
  }
}

/**
 * Talks to a peer's agent over HTTP or HTTPS: JSON resources with the bearer token, and file
 * downloads verified against the sha256 the peer lists, written atomically into a local directory.
 * node:http/https rather than fetch: one transport for JSON and streamed files, with the agents' CA.
 */
import { readFileSync } from 'node:fs';
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { receiveFile, ShipError, type FileDigest } from './files.js';

/**
 * The CA that agents' certificates are checked against when they serve HTTPS (`pgha agent
 * --tls-cert`): set by a daemon's `--agent-ca FILE`, else read from $PGHA_AGENT_CA, else the
 * system's trust store. One setting per process: every agent of a cluster uses the same CA.
 */
let agentCa: Buffer | null | undefined;

export function setAgentCa(path: string | null): void {
  agentCa = path ? readFileSync(path) : null;
}

function caForAgents(): Buffer | undefined {
  if (agentCa === undefined) agentCa = process.env.PGHA_AGENT_CA ? readFileSync(process.env.PGHA_AGENT_CA) : null;
  return agentCa ?? undefined;
}

interface Answer {
  status: number;
  body: Buffer;
}

export class AgentClient {
  constructor(
    readonly baseUrl: string,
    private readonly token: string,
    private readonly timeoutMs = 30_000,
  ) {}

  private url(path: string): string {
    return `${this.baseUrl.replace(/\/+$/, '')}/api/pg/v1/${path}`;
  }

  /** start a request to the agent: http or https (checked against the agents' CA), bounded in time */
  private open(method: string, path: string, headers: Record<string, string>, onResponse: (res: IncomingMessage) => void): ClientRequest {
    const url = new URL(this.url(path));
    const opts = { method, headers: { authorization: `Bearer ${this.token}`, ...headers }, timeout: this.timeoutMs };
    const req = url.protocol === 'https:' ? httpsRequest(url, { ...opts, ca: caForAgents() }, onResponse) : httpRequest(url, opts, onResponse);
    req.on('timeout', () => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)));
    return req;
  }

  /** one request with a small body, the whole answer read (JSON resources, slot files) */
  private call(method: string, path: string, body?: Buffer, headers: Record<string, string> = {}): Promise<Answer> {
    return new Promise<Answer>((resolve, reject) => {
      const req = this.open(method, path, { ...headers, ...(body ? { 'content-length': String(body.length) } : {}) }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', (e) => reject(e));
      });
      req.on('error', (e) => reject(new ShipError(`${this.baseUrl}: ${method} ${path}: ${e.message}`, 502, 'PEER_UNREACHABLE')));
      req.end(body);
    });
  }

  private async request(method: string, path: string, body?: unknown): Promise<Answer> {
    const json = body !== undefined ? Buffer.from(JSON.stringify(body)) : undefined;
    const res = await this.call(method, path, json, json ? { 'content-type': 'application/json' } : {});
    if (res.status < 200 || res.status >= 300) {
      throw new ShipError(`${this.baseUrl}: ${method} ${path}: HTTP ${res.status} ${res.body.toString('utf8').slice(0, 300)}`, res.status, 'PEER_ERROR');
    }
    return res;
  }

  async get<T>(path: string): Promise<T> {
    return JSON.parse((await this.request('GET', path)).body.toString('utf8')) as T;
  }

  async getBytes(path: string): Promise<Buffer> {
    return (await this.request('GET', path)).body;
  }

  async put(path: string, body: Uint8Array, sha256: string): Promise<unknown> {
    const res = await this.call('PUT', path, Buffer.from(body), { 'content-type': 'application/octet-stream', 'x-checksum': `sha256:${sha256}` });
    const text = res.body.toString('utf8');
    if (res.status < 200 || res.status >= 300) throw new ShipError(`${this.baseUrl}: PUT ${path}: HTTP ${res.status} ${text.slice(0, 300)}`, res.status, 'PEER_ERROR');
    return JSON.parse(text);
  }

  async delete<T>(path: string): Promise<T> {
    return JSON.parse((await this.request('DELETE', path)).body.toString('utf8')) as T;
  }

  async getText(path: string): Promise<string> {
    return (await this.request('GET', path)).body.toString('utf8');
  }

  async post<T>(path: string, body: unknown = {}): Promise<T> {
    return JSON.parse((await this.request('POST', path, body)).body.toString('utf8')) as T;
  }

  /**
   * Download `name` into `dir` atomically, verified against `expect` (from a walFiles listing) or
   * else against the X-Checksum and Content-Length the peer sends with the file. Uses node:http
   * directly: streaming a large body through fetch's web streams is several times slower.
   */
  async download(name: string, dir: string, expect?: { sha256: string; size: number }): Promise<FileDigest> {
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = this.open('GET', `walFile/${encodeURIComponent(name)}`, {}, resolve);
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

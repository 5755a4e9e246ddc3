/**
 * Passwords as the pool keeps them, and the SCRAM-SHA-256 (RFC 5802/7677) and MD5 arithmetic of
 * PostgreSQL's password methods, on both sides: the proxy verifies clients itself and logs in to
 * servers with the same entries. An entry is a plain password, an MD5 hash (`md5` + 32 hex) or a
 * SCRAM secret (`SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`), as PostgreSQL stores them
 * and as PgBouncer's userlist.txt holds them.
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';

export interface ScramKeys {
  iterations: number;
  salt: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

export type Secret =
  | { kind: 'plain'; password: string }
  | { kind: 'md5'; hash: string }
  | { kind: 'scram'; keys: ScramKeys; text: string };

const SCRAM_RE = /^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$/;

/** what an auth file or pg_authid holds, read as a secret (throws with why it is not one) */
export function parseSecret(text: string): Secret {
  if (/^md5[0-9a-f]{32}$/.test(text)) return { kind: 'md5', hash: text };
  const m = SCRAM_RE.exec(text);
  if (m) {
    const keys = { iterations: Number(m[1]), salt: Buffer.from(m[2], 'base64'), storedKey: Buffer.from(m[3], 'base64'), serverKey: Buffer.from(m[4], 'base64') };
    if (keys.storedKey.length !== 32 || keys.serverKey.length !== 32 || keys.iterations < 1) throw new Error('malformed SCRAM-SHA-256 secret (expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, 32-byte keys)');
    return { kind: 'scram', keys, text };
  }
  if (text.startsWith('SCRAM-SHA-256$')) throw new Error('malformed SCRAM-SHA-256 secret (expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)');
  return { kind: 'plain', password: text };
}

export const sha256 = (b: Buffer | string): Buffer => createHash('sha256').update(b).digest();
export const hmac = (key: Buffer, data: Buffer | string): Buffer => createHmac('sha256', key).update(data).digest();
export const md5hex = (b: Buffer | string): string => createHash('md5').update(b).digest('hex');

export function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.alloc(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] ^ b[i];
  return out;
}

export function saltedPassword(password: string, salt: Buffer, iterations: number): Buffer {
  // SASLprep is the identity for the ASCII passwords this is used with; PostgreSQL falls back to
  // the raw bytes when SASLprep fails, which is what this does for the rest
  return pbkdf2Sync(Buffer.from(password, 'utf8'), salt, iterations, 32, 'sha256');
}

export function scramKeysFromPassword(password: string, salt: Buffer, iterations: number): ScramKeys & { clientKey: Buffer } {
  const sp = saltedPassword(password, salt, iterations);
  const clientKey = hmac(sp, 'Client Key');
  return { iterations, salt, storedKey: sha256(clientKey), serverKey: hmac(sp, 'Server Key'), clientKey };
}

/** md5 + md5(password || user): the MD5 secret PostgreSQL stores */
export const md5Secret = (password: string, user: string): string => `md5${md5hex(password + user)}`;

/** the answer to AuthenticationMD5Password: md5 + md5(md5hex(password || user) || salt) */
export function md5Response(secret: string, salt: Buffer): string {
  return `md5${md5hex(Buffer.concat([Buffer.from(secret.slice(3)), salt]))}`;
}

export function constantTimeEqual(a: Buffer | string, b: Buffer | string): boolean {
  const x = Buffer.isBuffer(a) ? a : Buffer.from(a);
  const y = Buffer.isBuffer(b) ? b : Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export const nonce = (): string => randomBytes(18).toString('base64');

/** RFC 5802 attribute list "a=v,b=w" → map (first occurrence wins) */
export function scramAttributes(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const part of text.split(',')) {
    if (part.length >= 2 && part[1] === '=' && !m.has(part[0])) m.set(part[0], part.slice(2));
  }
  return m;
}

/**
 * The proxy's own framing of what clients send (startup phase and the message stream after it) and
 * its message-boundary walker over what servers send: the same answers whatever the chunking, down
 * to one byte at a time; bounded lengths; primary_conninfo rewriting.
 */
import fc from 'fast-check';
import { serialize } from 'pg-protocol';
import { describe, expect, it } from 'vitest';
import { MessageWalker } from '../../proxy/protocol/message-walker.js';
import { StartupReader, type StartupPacket } from '../../proxy/protocol/startup.js';
import { ProtocolError } from '../../proxy/protocol/errors.js';
import { decodeError, errorResponse, withoutScramPlus } from '../../proxy/protocol/backend-messages.js';
import { SaslOfferFilter } from '../../proxy/protocol/sasl-offer.js';
import { parseConninfo, retarget } from '../../proxy/backend/conninfo.js';
import { Framer, STREAM_ABOVE, STREAM_HEAD } from '../../proxy/pool/framer.js';

/** split `buf` at the given cut points */
function chunks(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let at = 0;
  for (const p of points) {
    out.push(buf.subarray(at, p));
    at = p;
  }
  out.push(buf.subarray(at));
  return out;
}

function readAll(parts: Buffer[]): StartupPacket[] {
  const r = new StartupReader();
  const got: StartupPacket[] = [];
  for (const p of parts) {
    r.push(p);
    for (let x = r.next(); x; x = r.next()) {
      got.push(x);
      if (x.kind === 'startup' || x.kind === 'direct-tls') return got;
    }
  }
  return got;
}

const sslRequest = serialize.requestSsl();
const startup = serialize.startup({ user: 'alice', database: 'db1', application_name: 'app', options: '-c search_path=x' });

describe('StartupReader', () => {
  it('the same packets at every split, one byte at a time included', () => {
    const stream = Buffer.concat([sslRequest, Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]), startup]);
    const whole = readAll([stream]);
    expect(whole.map((p) => p.kind)).toEqual(['ssl-request', 'gssenc-request', 'startup']);
    expect(whole[2]).toMatchObject({ major: 3, minor: 0, params: { user: 'alice', database: 'db1', application_name: 'app', options: '-c search_path=x' } });
    expect(readAll([...stream].map((b) => Buffer.from([b])))).toEqual(whole);
    fc.assert(fc.property(fc.array(fc.nat(), { maxLength: 12 }), (cuts) => {
      expect(readAll(chunks(stream, cuts))).toEqual(whole);
    }));
  });

  it('CancelRequest with a 4-byte key (3.0) and a longer one (3.2)', () => {
    const c = serialize.cancel(1234, -5);
    expect(readAll([c])).toEqual([{ kind: 'cancel', pid: 1234, key: Buffer.from([0xff, 0xff, 0xff, 0xfb]) }]);
    const long = Buffer.alloc(12 + 32, 7);
    long.writeInt32BE(long.length, 0);
    long.writeInt32BE(80877102, 4);
    long.writeInt32BE(99, 8);
    expect(readAll([long])).toEqual([{ kind: 'cancel', pid: 99, key: Buffer.alloc(32, 7) }]);
  });

  it('refuses bad lengths as soon as the length word is in (to be closed without a reply, as PostgreSQL does), and never holds more than one packet', () => {
    for (const len of [-1, 0, 7, 10005, 0x7fffffff, 0x58000000 /* a Terminate before any startup packet */]) {
      const r = new StartupReader();
      const b = Buffer.alloc(4);
      b.writeInt32BE(len, 0);
      r.push(b);
      expect(() => r.next(), String(len)).toThrow(ProtocolError);
      expect(() => r.next(), String(len)).toThrow(/invalid length of startup packet/);
      try {
        r.next();
      } catch (e) {
        expect((e as ProtocolError).reply, String(len)).toBe('none');
      }
    }
    const r = new StartupReader();
    r.push(Buffer.from([0, 0, 0x27, 0x14])); // 10004 (a body of MAX_STARTUP_PACKET_LENGTH): allowed, waits for the bytes
    expect(r.next()).toBeNull();
  });

  it('direct TLS is recognised from the first byte; SSLRequest of any size is one (as PostgreSQL reads it), a Cancel of a wrong size carries no key', () => {
    expect(readAll([Buffer.from([0x16, 0x03, 0x01])])).toEqual([{ kind: 'direct-tls' }]);
    const longSsl = Buffer.from([0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2f, 0, 0, 0, 0]);
    expect(readAll([longSsl])).toEqual([{ kind: 'ssl-request' }]);
    const shortCancel = Buffer.from([0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1]);
    expect(readAll([shortCancel])).toEqual([{ kind: 'cancel', pid: 1, key: null }]);
  });

  it('startup packets with no user, no terminator, or protocol 2 are refused with the right SQLSTATE', () => {
    const pkt = (body: string, code = 196608) => {
      const b = Buffer.alloc(8 + body.length);
      b.writeInt32BE(b.length, 0);
      b.writeInt32BE(code, 4);
      b.write(body, 8, 'latin1');
      return b;
    };
    const err = (b: Buffer) => {
      try {
        readAll([b]);
      } catch (e) {
        return [(e as ProtocolError).sqlstate, (e as Error).message, (e as ProtocolError).reply];
      }
      return null;
    };
    expect(err(pkt('database\0d\0\0'))).toEqual(['28000', 'no PostgreSQL user name specified in startup packet', 'fatal']);
    expect(err(pkt('user\0u\0'))?.[1]).toMatch(/expected terminator as last byte/);
    expect(err(pkt('user\0u\0\0x'))?.[1]).toMatch(/expected terminator as last byte/);
    // protocol 2 is answered in protocol 2's own error format, 4 in 3's
    expect(err(pkt('user\0u\0\0', 2 << 16))).toEqual(['0A000', 'unsupported frontend protocol 2.0: the proxy speaks 3.x', 'fatal-v2']);
    expect(err(pkt('user\0u\0\0', 4 << 16))).toEqual(['0A000', 'unsupported frontend protocol 4.0: the proxy speaks 3.x', 'fatal']);
  });
});

describe('MessageWalker', () => {
  const messages = Buffer.concat([
    serialize.query('SELECT 1'),
    serialize.parse({ text: 'SELECT $1', types: [] }),
    serialize.bind({ values: ['x'.repeat(3000)] }),
    serialize.execute(),
    serialize.sync(),
    serialize.flush(),
    serialize.end(),
  ]);

  const walk = (parts: Buffer[]) => {
    const seen: Array<[number, string]> = [];
    const w = new MessageWalker({ peer: 'test', maxLength: 1 << 20, wanted: (t) => t !== 0x42, onMessage: (t, b) => seen.push([t, b.toString('hex')]) });
    for (const p of parts) {
      w.feed(p);
    }
    return { seen, messages: w.messages, offset: w.offset, atEnd: w.atBoundary };
  };

  it('the same messages and bodies at every split', () => {
    const whole = walk([messages]);
    expect(whole.messages).toBe(7);
    expect(whole.seen.map(([t]) => String.fromCharCode(t))).toEqual(['Q', 'P', 'E', 'S', 'H', 'X']);
    expect(whole.atEnd).toBe(true);
    expect(walk([...messages].map((b) => Buffer.from([b])))).toEqual(whole);
    fc.assert(fc.property(fc.array(fc.nat(), { maxLength: 20 }), (cuts) => {
      expect(walk(chunks(messages, cuts))).toEqual(whole);
    }));
  });

  it('is at a boundary only between messages', () => {
    const w = new MessageWalker({ peer: 't', maxLength: 1 << 20, wanted: () => false, onMessage: () => undefined });
    const q = serialize.query('SELECT 1');
    w.feed(q.subarray(0, 3));
    expect(w.atBoundary).toBe(false);
    w.feed(q.subarray(3, q.length - 1));
    expect(w.atBoundary).toBe(false);
    w.feed(q.subarray(q.length - 1));
    expect(w.atBoundary).toBe(true);
  });

  it('refuses lengths below 4 and above the cap, with type and offset', () => {
    const w = new MessageWalker({ peer: 'client 1.2.3.4:5', maxLength: 1000, wanted: () => false, onMessage: () => undefined });
    w.feed(serialize.sync());
    const bad = Buffer.from([0x51, 0x80, 0, 0, 0]);
    expect(() => w.feed(bad)).toThrow('client 1.2.3.4:5: invalid message length 2147483648 for message type 0x51 at byte 5 (expected 4..1000)');
    const w2 = new MessageWalker({ peer: 'c', maxLength: 1000, wanted: () => false, onMessage: () => undefined });
    expect(() => w2.feed(Buffer.from([0x51, 0, 0, 0, 3]))).toThrow(/invalid message length 3/);
    const w3 = new MessageWalker({ peer: 'c', maxLength: 1000, wanted: () => false, onMessage: () => undefined });
    expect(() => w3.feed(Buffer.from([0x51, 0, 0, 0x03, 0xe9]))).toThrow(/invalid message length 1001/);
  });
});

describe("the pool's Framer", () => {
  const frame = (type: string, body: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeInt32BE(body.length + 4);
    return Buffer.concat([Buffer.from(type), len, body]);
  };
  const messages = [frame('Q', Buffer.from('SELECT 1\0')), frame('S', Buffer.alloc(0)), frame('B', Buffer.alloc(300_000, 7)), frame('d', Buffer.alloc(70_000, 1)), frame('X', Buffer.alloc(0))];
  const stream = Buffer.concat(messages);
  /** where each message ends in the stream */
  const ends = messages.reduce<number[]>((acc, m) => [...acc, (acc.at(-1) ?? 0) + m.length], []);

  it('the same whole messages at every chunking, long ones split across hundreds of chunks; at a boundary only between messages', () => {
    fc.assert(
      fc.property(fc.array(fc.nat(stream.length), { maxLength: 40 }), fc.integer({ min: 500, max: 20_000 }), (cuts, step) => {
        // random cut points, and a fixed step that splits the long messages into many pieces
        const parts = chunks(stream, [...cuts, ...Array.from({ length: Math.floor(stream.length / step) }, (_, i) => (i + 1) * step)]);
        const f = new Framer('client', 0x3ffffffe);
        const got: Buffer[] = [];
        let fed = 0;
        for (const p of parts) {
          f.feed(p, (_t, msg) => got.push(Buffer.from(msg)));
          fed += p.length;
          expect(f.atBoundary).toBe(fed === 0 || ends.includes(fed));
        }
        expect(got.map((m) => m.length)).toEqual(messages.map((m) => m.length));
        expect(got.every((m, i) => m.equals(messages[i]))).toBe(true);
        expect(f.offset).toBe(stream.length);
      }),
      { numRuns: 40 },
    );
  });

  it('with stream hooks: long messages go out as they arrive, the rest whole; the same bytes in the same order at every chunking', () => {
    fc.assert(
      fc.property(fc.array(fc.nat(stream.length), { maxLength: 40 }), fc.integer({ min: 500, max: 20_000 }), fc.boolean(), (cuts, step, refuseFirst) => {
        const parts = chunks(stream, [...cuts, ...Array.from({ length: Math.floor(stream.length / step) }, (_, i) => (i + 1) * step)]);
        const f = new Framer('client', 0x3ffffffe);
        const out: Buffer[] = [];
        const streamed: number[] = [];
        let refused = false;
        f.streamTo = {
          start: (type, head, length) => {
            // once refused (as a client does while messages before it wait), asked again at the next chunk
            if (refuseFirst && !refused) return (refused = true) && false;
            expect(length).toBeGreaterThanOrEqual(STREAM_ABOVE);
            expect(head.length).toBeGreaterThanOrEqual(STREAM_HEAD);
            streamed.push(type);
            out.push(Buffer.from(head));
            return true;
          },
          part: (b) => out.push(Buffer.from(b)),
        };
        let fed = 0;
        for (const p of parts) {
          f.feed(p, (_t, msg) => out.push(Buffer.from(msg)));
          fed += p.length;
          expect(f.atBoundary).toBe(fed === 0 || ends.includes(fed));
        }
        expect(Buffer.concat(out).equals(stream)).toBe(true);
        // the 300 000-byte Bind goes out as it arrives (chunks are at most 20 000 bytes); the 70 000-byte CopyData is short
        expect(streamed).toEqual([0x42]);
        expect(f.offset).toBe(stream.length);
      }),
      { numRuns: 40 },
    );
  });

  it('a long message whose start is declined at every chunk is asked about with its first 16 KiB or so, not with all of it again (no copy of the message per chunk)', () => {
    const f = new Framer('client', 0x3ffffffe);
    const heads: number[] = [];
    f.streamTo = {
      start: (_t, head) => {
        heads.push(head.length);
        return false;
      },
      part: () => undefined,
    };
    const got: Buffer[] = [];
    const long = messages[2];
    for (let i = 0; i < long.length; i += 1000) f.feed(long.subarray(i, i + 1000), (_t, m) => got.push(Buffer.from(m)));
    expect(got).toHaveLength(1);
    expect(got[0].equals(long)).toBe(true);
    expect(heads.length).toBeGreaterThan(250);
    expect(Math.max(...heads)).toBeLessThan(STREAM_HEAD + 1000);
  });

  it('a bad length word is refused as soon as it is in, with the byte it is at, even after a long message in pieces', () => {
    const f = new Framer('client', 1_000_000);
    const bad = Buffer.from([0x51, 0x7f, 0xff, 0xff, 0xff]);
    const all = Buffer.concat([messages[2], bad]);
    const seen: number[] = [];
    expect(() => {
      for (let i = 0; i < all.length; i += 1000) f.feed(all.subarray(i, i + 1000), (t) => seen.push(t));
    }).toThrow(new RegExp(`invalid message length ${0x7fffffff} for message type 0x51 at byte ${messages[2].length} `));
    expect(seen).toEqual([0x42]);
  });
});

describe('ErrorResponse', () => {
  it('what the proxy sends decodes with pg-protocol to the same fields', () => {
    const e = errorResponse({ severity: 'FATAL', code: '57P01', message: 'terminating connection because of failover: ü', hint: 'Reconnect.' });
    const d = decodeError(e.subarray(5));
    expect([d.severity, d.code, d.message, d.hint]).toEqual(['FATAL', '57P01', 'terminating connection because of failover: ü', 'Reconnect.']);
    expect(e.readInt32BE(1)).toBe(e.length - 1);
  });
});

describe('the SASL offer on its way to the client', () => {
  const auth = (code: number, rest: Buffer = Buffer.alloc(0)) => {
    const body = Buffer.concat([Buffer.from([0, 0, 0, code]), rest]);
    const head = Buffer.alloc(5);
    head[0] = 0x52;
    head.writeInt32BE(body.length + 4, 1);
    return Buffer.concat([head, body]);
  };
  const sasl = (...names: string[]) => auth(10, Buffer.from(names.map((n) => `${n}\0`).join('') + '\0'));
  const notice = Buffer.concat([Buffer.from([0x4e, 0, 0, 0, 13]), Buffer.from('SNOTICE\0\0')]);

  it('SCRAM-SHA-256-PLUS is taken out of AuthenticationSASL, nothing else changes', () => {
    expect(withoutScramPlus(sasl('SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256'))).toEqual(sasl('SCRAM-SHA-256'));
    const plain = sasl('SCRAM-SHA-256');
    expect(withoutScramPlus(plain)).toBe(plain);
    const md5 = auth(5, Buffer.from([1, 2, 3, 4]));
    expect(withoutScramPlus(md5)).toBe(md5);
  });

  it('the filtered stream is the same at every split, one byte at a time included', () => {
    const stream = Buffer.concat([notice, sasl('SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256'), auth(11, Buffer.from('r=abc,s=xyz,i=4096')), auth(0), notice, Buffer.from([0x5a, 0, 0, 0, 5, 0x49])]);
    const want = Buffer.concat([notice, sasl('SCRAM-SHA-256'), auth(11, Buffer.from('r=abc,s=xyz,i=4096')), auth(0), notice, Buffer.from([0x5a, 0, 0, 0, 5, 0x49])]);
    const through = (parts: Buffer[]) => {
      const f = new SaslOfferFilter();
      return Buffer.concat(parts.map((p) => f.feed(p)));
    };
    expect(through([stream])).toEqual(want);
    expect(through([...stream].map((b) => Buffer.from([b])))).toEqual(want);
    fc.assert(fc.property(fc.array(fc.nat(), { maxLength: 12 }), (cuts) => {
      expect(through(chunks(stream, cuts))).toEqual(want);
    }));
  });
});

describe('primary_conninfo rewriting', () => {
  it('only host and port change; quoting and escapes survive', () => {
    const ci = "user=postgres passfile='/root/.pgpass' channel_binding=prefer host=127.0.0.1 port=5432 application_name='s 1' password='it\\'s'";
    const out = retarget(ci, '10.0.0.2', 6543);
    expect(Object.fromEntries(parseConninfo(out))).toEqual({ host: '10.0.0.2', port: '6543', user: 'postgres', passfile: '/root/.pgpass', channel_binding: 'prefer', application_name: 's 1', password: "it's" });
    expect(retarget('postgresql://rep@old:5432/db?application_name=s1', 'new', 7000)).toBe('postgresql://rep@new:7000/db?application_name=s1');
    expect(() => parseConninfo("host='x")).toThrow(/unterminated/);
  });
});

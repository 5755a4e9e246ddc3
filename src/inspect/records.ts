import { formatLsnPadded, formatLsn, type Lsn } from '../formats/lsn.js';
import { FORK_NAMES } from '../formats/wal/constants.js';
import { checkRecordLayout, type DecodedFragments } from '../formats/wal/layout.js';
import { recordTypeName, rmgrName } from '../formats/wal/rmgr.js';
import { RECORD_ENTRY_SIZE } from '../formats/wal/contract.js';
import { recordBytes } from '../wal/record-bytes.js';
import type { SegmentVisit } from '../wal/stream.js';

export interface RecordView {
  lsn: string;
  prev: string;
  rmgr: string;
  type: string;
  xid: number;
  totalLength: number;
  recordLength: number;
  fpiLength: number;
  info: number;
  spansPages: boolean;
  spansSegments: boolean;
  mainDataLength: number | null;
  /** commit/abort time of Transaction COMMIT/ABORT(_PREPARED) records (xact_time), ISO 8601 with µs */
  time?: string;
  blocks: Array<{
    id: number;
    rel: string;
    fork: string;
    block: number;
    willInit: boolean;
    dataLength: number;
    fpi: null | { length: number; holeOffset: number; holeLength: number; apply: boolean; compression: string };
  }> | null;
}

/** Decode the record entries of one scanned segment into views (block refs from the buffers). */
export function recordViews(visit: SegmentVisit, major: number, blockSize: number): RecordView[] {
  const { result } = visit;
  const views: RecordView[] = [];
  const ranges = visit.prev ? [visit.prev, { buf: visit.buf, bufLsn: visit.bufLsn }] : [{ buf: visit.buf, bufLsn: visit.bufLsn }];
  const e = result.records;
  for (let i = 0; i < result.count; i++) {
    const at = i * RECORD_ENTRY_SIZE;
    const lsn: Lsn = e.readBigUInt64LE(at);
    const totLen = e.readUInt32LE(at + 16);
    const fpiLen = e.readUInt32LE(at + 24);
    const rmid = e[at + 28];
    const info = e[at + 29];
    const flags = e[at + 31];
    const bytes = recordBytes(ranges, lsn, totLen, blockSize);
    let frags: DecodedFragments | null = null;
    if (bytes) {
      frags = { blocks: [], mainDataLength: 0, mainDataOffset: 0 };
      checkRecordLayout(bytes, major, blockSize, frags);
    }
    // Transaction COMMIT/PREPARE/ABORT/COMMIT_PREPARED/ABORT_PREPARED start with xact_time (µs since 2000-01-01)
    let time: string | undefined;
    const op = info & 0x70;
    if (rmid === 1 && bytes && frags && frags.mainDataLength >= 8 && op !== 0x10 && op <= 0x40) {
      const us = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigInt64(frags.mainDataOffset, true);
      const secs = us / 1_000_000n - (us % 1_000_000n < 0n ? 1n : 0n);
      const micro = us - secs * 1_000_000n;
      time = new Date(Number(secs) * 1000 + 946_684_800_000).toISOString().replace(/\.\d{3}Z$/, `.${String(micro).padStart(6, '0')}Z`);
    }
    views.push({
      lsn: formatLsn(lsn),
      prev: formatLsn(e.readBigUInt64LE(at + 8)),
      rmgr: rmgrName(rmid),
      type: recordTypeName(rmid, info, major),
      xid: e.readUInt32LE(at + 20),
      totalLength: totLen,
      recordLength: totLen - fpiLen,
      fpiLength: fpiLen,
      info,
      spansPages: (flags & 1) !== 0,
      spansSegments: (flags & 2) !== 0,
      mainDataLength: frags ? frags.mainDataLength : null,
      ...(time !== undefined ? { time } : {}),
      blocks: frags
        ? frags.blocks.map((b) => ({
            id: b.id,
            rel: `${b.spcNode}/${b.dbNode}/${b.relNode}`,
            fork: FORK_NAMES[b.forkNumber] ?? String(b.forkNumber),
            block: b.block,
            willInit: b.willInit,
            dataLength: b.dataLength,
            fpi: b.image ?? null,
          }))
        : null,
    });
  }
  return views;
}

/** One line per record, in pg_waldump's layout. */
export function formatRecordLine(r: RecordView): string {
  const lsnPad = (t: string) => formatLsnPadded(BigInt('0x' + t.split('/')[0]) << 32n | BigInt('0x' + t.split('/')[1]));
  let line =
    `rmgr: ${r.rmgr.padEnd(11)} len (rec/tot): ${String(r.recordLength).padStart(6)}/${String(r.totalLength).padStart(6)}, ` +
    `tx: ${String(r.xid).padStart(10)}, lsn: ${lsnPad(r.lsn)}, prev ${lsnPad(r.prev)}, desc: ${r.type}${r.time ? ` ${r.time}` : ''}`;
  for (const b of r.blocks ?? []) {
    line += `, blkref #${b.id}: rel ${b.rel}${b.fork === 'main' ? '' : ` fork ${b.fork}`} blk ${b.block}`;
    if (b.fpi) line += b.fpi.apply ? ' FPW' : ' FPI';
  }
  return line;
}

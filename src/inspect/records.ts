import { formatLsnPadded, formatLsn } from '../formats/lsn.js';
import { FORK_NAMES } from '../formats/wal/constants.js';
import { recordTypeName, rmgrName } from '../formats/wal/rmgr.js';
import { decodeRecord, recordEntries } from '../formats/wal/record.js';
import { visitedRanges, type SegmentVisit } from '../wal/stream.js';

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
  const ranges = visitedRanges(visit);
  const views: RecordView[] = [];
  for (const entry of recordEntries(visit.result)) {
    const rec = decodeRecord(ranges, entry, major, blockSize);
    // Transaction COMMIT/PREPARE/ABORT/COMMIT_PREPARED/ABORT_PREPARED start with xact_time (µs since 2000-01-01)
    let time: string | undefined;
    const op = entry.info & 0x70;
    if (entry.rmid === 1 && rec && rec.mainDataLength >= 8 && op !== 0x10 && op <= 0x40) {
      const us = new DataView(rec.mainData.buffer, rec.mainData.byteOffset, rec.mainData.byteLength).getBigInt64(0, true);
      const secs = us / 1_000_000n - (us % 1_000_000n < 0n ? 1n : 0n);
      const micro = us - secs * 1_000_000n;
      time = new Date(Number(secs) * 1000 + 946_684_800_000).toISOString().replace(/\.\d{3}Z$/, `.${String(micro).padStart(6, '0')}Z`);
    }
    views.push({
      lsn: formatLsn(entry.lsn),
      prev: formatLsn(entry.prev),
      rmgr: rmgrName(entry.rmid),
      type: recordTypeName(entry.rmid, entry.info, major),
      xid: entry.xid,
      totalLength: entry.totLen,
      recordLength: entry.totLen - entry.fpiLen,
      fpiLength: entry.fpiLen,
      info: entry.info,
      spansPages: entry.spansPages,
      spansSegments: entry.spansSegments,
      mainDataLength: rec ? rec.mainDataLength : null,
      ...(time !== undefined ? { time } : {}),
      blocks: rec
        ? rec.blockRefs.map((b) => ({
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

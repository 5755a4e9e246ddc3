/** A scan result in a form `toEqual` compares byte for byte (hex buffers, plain end and carry). */
import type { ScanResult } from '../../src/formats/wal/contract.js';

export function comparable(r: ScanResult) {
  return {
    count: r.count,
    records: r.records.toString('hex'),
    stats: Buffer.from(r.stats).toString('hex'),
    end: r.end ? { lsn: r.end.lsn, reason: r.end.reason, message: r.end.message } : null,
    reachedEndLsn: r.reachedEndLsn,
    carry: { ...r.carry, partial: r.carry.partial ? Buffer.from(r.carry.partial).toString('hex') : null },
    first: r.firstRecordLsn,
    last: r.lastRecordLsn,
    lastEnd: r.lastRecordEndLsn,
  };
}

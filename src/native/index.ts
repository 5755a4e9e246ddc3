// PROVISIONAL (lead): replaced by the native loader
import { crc32c as tsCrc32c } from '../formats/crc32c.js';
import { scanWal as tsScanWal } from '../formats/wal/scan.js';
import type { ScanOptions, ScanResult } from './contract.js';
export const crc32c = tsCrc32c;
export const scanWal = tsScanWal;
export async function scanWalAsync(buf: Uint8Array, o: ScanOptions): Promise<ScanResult> { return tsScanWal(buf, o); }
export function nativeStatus(): { native: boolean; reason?: string } { return { native: false, reason: 'provisional' }; }

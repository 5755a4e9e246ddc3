//! A run of WAL segment files scanned for statistics on several threads, the way `pgwal inspect
//! --stats DIR` reads a whole directory: the run is cut into pieces of consecutive files, worker
//! threads take pieces in order from a shared counter (so a piece of big records and a piece of
//! small ones even out), and each piece is scanned from a fresh start at its first file (as
//! xlogreader's XLogFindNextRecord would: a record continued from the file before is skipped, the
//! first record's prev-link checked as random access). The pieces are then joined in order on the
//! calling thread: the start of each piece's first file is scanned again with the state the pieces
//! before it ended in, up to and including the record the piece began with — where the two agree,
//! the piece's own result continues the sequence; where they do not (damaged WAL, or a record that
//! covers a whole file), the rest of the run is scanned sequentially. The result is the one
//! sequential pass would give (test/unit/stream-parallel.test.ts compares both on damaged WAL).
//!
//! Files are mapped read-only one at a time per thread, without pre-populating the page tables:
//! the kernel's fault-around maps page-cache pages in batches as the scan reaches them, which costs
//! less than MAP_POPULATE's page-by-page walk followed by the unmap (measured on 1 GiB: map+unmap
//! 30–40 ms against 115–135 ms). Memory use is bounded by threads × one segment of shared
//! page-cache pages, whatever the size of the run.

use crate::wal_scan::{
    scan_wal, Carry, End, ScanParams, RECORD_ENTRY_SIZE, STATS_ENTRY_SIZE, STATS_SLOTS,
};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// pieces per thread: the last pieces run while other threads may have nothing left to take, so
/// smaller pieces waste less at the end; each boundary costs one short re-scan when joining
const PIECES_PER_THREAD: usize = 8;

/// index of 'truncated' in END_REASONS (src/formats/wal/contract.ts): the file ended early
pub const END_TRUNCATED: u32 = 10;

pub struct SegmentInput {
    pub path: String,
    /// LSN of the file's first byte
    pub buf_lsn: u64,
}

/// What scanning a run of files found (the Rust twin of stream.ts's ChainResult).
#[derive(Debug)]
pub struct RunResult {
    pub count: u64,
    /// per record type (rmid × 16 + info >> 4): count, record bytes without images, image bytes
    pub stats: Vec<[u64; 3]>,
    pub first: Option<u64>,
    pub last: Option<u64>,
    pub carry: Option<Carry>,
    /// end of valid WAL inside the run, or the file that was too short
    pub end: Option<End>,
    pub files_scanned: u32,
    pub bytes_scanned: u64,
}

impl RunResult {
    fn empty(carry: Option<Carry>) -> Self {
        RunResult {
            count: 0,
            stats: vec![[0; 3]; STATS_SLOTS],
            first: None,
            last: None,
            carry,
            end: None,
            files_scanned: 0,
            bytes_scanned: 0,
        }
    }

    fn add_stats_bytes(&mut self, stats: &[u8]) {
        for (slot, e) in self
            .stats
            .iter_mut()
            .zip(stats.chunks_exact(STATS_ENTRY_SIZE))
        {
            let count = u64::from_le_bytes(e[0..8].try_into().unwrap());
            if count == 0 {
                continue;
            }
            slot[0] += count;
            slot[1] += u64::from_le_bytes(e[8..16].try_into().unwrap());
            slot[2] += u64::from_le_bytes(e[16..24].try_into().unwrap());
        }
    }

    /// `b` continues `self`
    fn merge(mut self, b: RunResult) -> RunResult {
        for (x, y) in self.stats.iter_mut().zip(&b.stats) {
            x[0] += y[0];
            x[1] += y[1];
            x[2] += y[2];
        }
        RunResult {
            count: self.count + b.count,
            stats: self.stats,
            first: self.first.or(b.first),
            last: b.last.or(self.last),
            carry: b.carry.or(self.carry),
            end: b.end,
            files_scanned: self.files_scanned + b.files_scanned,
            bytes_scanned: self.bytes_scanned + b.bytes_scanned,
        }
    }

    /// the statistics as ScanResult.stats bytes (STATS_SLOTS × STATS_ENTRY_SIZE, little-endian)
    pub fn stats_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; STATS_SLOTS * STATS_ENTRY_SIZE];
        for (s, e) in self
            .stats
            .iter()
            .zip(out.chunks_exact_mut(STATS_ENTRY_SIZE))
        {
            if s[0] == 0 {
                continue;
            }
            e[0..8].copy_from_slice(&s[0].to_le_bytes());
            e[8..16].copy_from_slice(&s[1].to_le_bytes());
            e[16..24].copy_from_slice(&s[2].to_le_bytes());
        }
        out
    }
}

/// A file's first `usable` bytes, mapped read-only (None for an empty range).
fn map_usable(
    f: &SegmentInput,
    segment_size: u32,
    block_size: u32,
) -> Result<(Option<memmap2::Mmap>, u64), String> {
    let file = std::fs::File::open(&f.path).map_err(|e| format!("{}: {e}", f.path))?;
    let len = file
        .metadata()
        .map_err(|e| format!("{}: {e}", f.path))?
        .len()
        .min(segment_size as u64);
    let usable = len - len % block_size as u64;
    if usable == 0 {
        return Ok((None, len));
    }
    // SAFETY: WAL segment files are only read here; PostgreSQL recycles them by rename, never by
    // truncating in place.
    let map = unsafe { memmap2::MmapOptions::new().len(usable as usize).map(&file) }
        .map_err(|e| format!("{}: mmap failed: {e}", f.path))?;
    Ok((Some(map), len))
}

/// Scan `files` in order from `initial` (None: a fresh start at the first file); stops at the end
/// of valid WAL or at a file shorter than a segment, as stream.ts's runChain does.
pub fn scan_run(
    files: &[SegmentInput],
    segment_size: u32,
    block_size: u32,
    initial: Option<Carry>,
    progress: &AtomicU64,
) -> Result<RunResult, String> {
    let mut out = RunResult::empty(initial);
    for f in files {
        let (map, got) = map_usable(f, segment_size, block_size)?;
        let bytes: &[u8] = map.as_deref().unwrap_or(&[]);
        let usable = bytes.len() as u64;
        let params = ScanParams {
            buf_lsn: f.buf_lsn,
            records_mode: false,
            start_lsn: 0,
            end_lsn: 0,
        };
        let r = scan_wal(bytes, &params, out.carry.take())?;
        drop(map);
        out.files_scanned += 1;
        out.bytes_scanned += usable;
        progress.fetch_add(usable, Ordering::Relaxed);
        if r.count > 0 {
            out.first = out.first.or(Some(r.first_record_lsn));
            out.last = Some(r.last_record_lsn);
            out.count += r.count as u64;
            out.add_stats_bytes(&r.stats);
        }
        let next_record = r.carry.next_record_lsn;
        out.carry = Some(r.carry);
        if r.end.is_some() {
            out.end = r.end;
            break;
        }
        if got < segment_size as u64 {
            let name = Path::new(&f.path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| f.path.clone());
            out.end = Some(End {
                lsn: if next_record != 0 {
                    next_record
                } else {
                    f.buf_lsn + usable
                },
                reason: END_TRUNCATED,
                message: format!("file {name} ends after {got} of {segment_size} bytes"),
            });
            break;
        }
    }
    Ok(out)
}

/// `b` (a fresh start at files[0]) continues `a`: re-scan the start of files[0] with a's state up
/// to and including b's first record; the joined result, or None when they do not line up.
fn join(
    a: RunResult,
    b: RunResult,
    first_file: &SegmentInput,
    segment_size: u32,
    block_size: u32,
) -> Result<Result<RunResult, RunResult>, String> {
    if a.end.is_some() || a.carry.is_none() {
        return Ok(Ok(a)); // valid WAL ended before b
    }
    let Some(b_first) = b.first else {
        return Ok(Err(a));
    };
    let (map, _) = map_usable(first_file, segment_size, block_size)?;
    let bytes: &[u8] = map.as_deref().unwrap_or(&[]);
    let params = ScanParams {
        buf_lsn: first_file.buf_lsn,
        records_mode: true,
        start_lsn: 0,
        end_lsn: b_first + 1,
    };
    let s = scan_wal(bytes, &params, a.carry.clone())?;
    if s.end.is_some() || !s.reached_end_lsn || s.last_record_lsn != b_first || s.count == 0 {
        return Ok(Err(a));
    }
    // the stitch's last record is b's first: count it once
    let entry = |i: usize| &s.records[i * RECORD_ENTRY_SIZE..(i + 1) * RECORD_ENTRY_SIZE];
    let last = entry(s.count as usize - 1);
    let tot_len = u32::from_le_bytes(last[16..20].try_into().unwrap()) as u64;
    let fpi = u32::from_le_bytes(last[24..28].try_into().unwrap()) as u64;
    let slot = last[28] as usize * 16 + (last[29] >> 4) as usize;
    let mut stitch = RunResult::empty(Some(s.carry.clone()));
    stitch.count = s.count as u64 - 1;
    stitch.add_stats_bytes(&s.stats);
    stitch.stats[slot][0] -= 1;
    stitch.stats[slot][1] -= tot_len - fpi;
    stitch.stats[slot][2] -= fpi;
    if s.count > 1 {
        stitch.first = Some(s.first_record_lsn);
        stitch.last = Some(u64::from_le_bytes(
            entry(s.count as usize - 2)[0..8].try_into().unwrap(),
        ));
    }
    Ok(Ok(a.merge(stitch).merge(b)))
}

/// Scan a run of consecutive segment files (stats only) with `threads` threads; the result equals
/// one sequential `scan_run` over all of them.
pub fn scan_files(
    files: &[SegmentInput],
    segment_size: u32,
    block_size: u32,
    threads: usize,
    progress: &AtomicU64,
) -> Result<RunResult, String> {
    let n = files.len();
    // several pieces per thread so uneven pieces even out; at least two files per piece
    let pieces = if threads <= 1 || n < 4 { 1 } else { (threads * PIECES_PER_THREAD).min(n / 2) };
    if pieces == 1 {
        return scan_run(files, segment_size, block_size, None, progress);
    }
    let bounds: Vec<usize> = (0..=pieces).map(|j| n * j / pieces).collect();
    let results: Vec<Mutex<Option<Result<RunResult, String>>>> =
        (0..pieces).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    // the first piece that ended inside its files: pieces after it are not needed
    let ended_at = AtomicUsize::new(usize::MAX);
    let work = || loop {
        let j = next.fetch_add(1, Ordering::Relaxed);
        if j >= pieces || j > ended_at.load(Ordering::Relaxed) {
            return;
        }
        let r = scan_run(
            &files[bounds[j]..bounds[j + 1]],
            segment_size,
            block_size,
            None,
            progress,
        );
        if !matches!(&r, Ok(x) if x.end.is_none()) {
            ended_at.fetch_min(j, Ordering::Relaxed);
        }
        *results[j].lock().unwrap() = Some(r);
    };
    std::thread::scope(|sc| {
        for _ in 1..threads.min(pieces) {
            sc.spawn(work);
        }
        work();
    });
    let mut taken = results.into_iter().map(|m| m.into_inner().unwrap());
    let mut acc = taken
        .next()
        .flatten()
        .expect("the first piece is always scanned")?;
    for (j, piece) in taken.enumerate().map(|(i, p)| (i + 1, p)) {
        if acc.end.is_some() {
            break;
        }
        let k = bounds[j];
        // a piece that was not scanned, or failed, is scanned in sequence instead
        let joined = match piece {
            Some(Ok(b)) => join(acc, b, &files[k], segment_size, block_size)?,
            _ => Err(acc),
        };
        match joined {
            Ok(r) => acc = r,
            Err(a) => {
                let carry = a.carry.clone();
                let rest = scan_run(
                    &files[k..],
                    segment_size,
                    block_size,
                    carry,
                    &AtomicU64::new(0),
                )?;
                return Ok(a.merge(rest));
            }
        }
    }
    Ok(acc)
}

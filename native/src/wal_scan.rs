//! Whole-buffer WAL scanner: the native twin of src/formats/wal/scan.ts (contract in
//! src/formats/wal/contract.ts). Mirrors PostgreSQL's xlogreader.c reading forward: page headers are
//! validated before use, a record length is trusted only after the header checks, continuation
//! pages must carry XLP_FIRST_IS_CONTRECORD with an exact xlp_rem_len, then CRC, then the fragment
//! layout (DecodeXLogRecord). The first failed check is the end of valid WAL, never a panic.

use crate::crc32c::record_crc;

pub const RECORD_ENTRY_SIZE: usize = 32;
pub const STATS_SLOTS: usize = 256 * 16;
pub const STATS_ENTRY_SIZE: usize = 24;

// end reasons: indexes into END_REASONS of contract.ts
pub const END_ZEROED: u32 = 0;
pub const END_BAD_MAGIC: u32 = 1;
pub const END_BAD_PAGE_HEADER: u32 = 2;
pub const END_PAGEADDR_MISMATCH: u32 = 3;
pub const END_TLI_OUT_OF_SEQUENCE: u32 = 4;
pub const END_BAD_RECORD_HEADER: u32 = 5;
pub const END_PREV_MISMATCH: u32 = 6;
pub const END_BAD_CONTRECORD: u32 = 7;
pub const END_CRC_MISMATCH: u32 = 8;
pub const END_BAD_RECORD_BODY: u32 = 9;

const SIZE_OF_XLOG_SHORT_PHD: usize = 24;
const SIZE_OF_XLOG_LONG_PHD: usize = 40;
const SIZE_OF_XLOG_RECORD: usize = 24;
const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
const XLP_ALL_FLAGS: u16 = 0x000F;
const MAX_RECORD_LENGTH: u32 = 0x3FFF_FFFF;
const RM_MAX_BUILTIN_ID: u8 = 21;
const RM_MIN_CUSTOM_ID: u8 = 128;
const XLOG_SWITCH: u8 = 0x40;
const XL_CRC_COVERED: usize = 20;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Carry {
    pub next_page_lsn: u64,
    pub next_record_lsn: u64,
    pub prev_record_lsn: u64,
    pub last_page_tli: u32,
    pub page_magic: u16,
    pub system_id: u64,
    pub segment_size: u32,
    pub block_size: u32,
    pub partial: Option<Vec<u8>>,
    pub partial_tot_len: u32,
    pub random_access: bool,
    pub partial_crosses_segment: bool,
}

#[derive(Debug)]
pub struct End {
    pub lsn: u64,
    pub reason: u32,
    pub message: String,
}

#[derive(Debug)]
pub struct ScanOutput {
    pub count: u32,
    pub records: Vec<u8>,
    pub stats: Vec<u8>,
    pub end: Option<End>,
    pub reached_end_lsn: bool,
    pub carry: Carry,
    pub first_record_lsn: u64,
    pub last_record_lsn: u64,
    pub last_record_end_lsn: u64,
}

pub struct ScanParams {
    pub buf_lsn: u64,
    pub records_mode: bool,
    pub start_lsn: u64,
    pub end_lsn: u64,
}

fn major_from_magic(magic: u16) -> Option<u32> {
    match magic {
        0xD101 => Some(12),
        0xD106 => Some(13),
        0xD10D => Some(14),
        0xD110 => Some(15),
        0xD113 => Some(16),
        0xD116 => Some(17),
        0xD118 => Some(18),
        _ => None,
    }
}

#[inline]
fn maxalign(n: usize) -> usize {
    (n + 7) & !7
}
#[inline]
fn u16le(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
#[inline]
fn u32le(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
#[inline]
fn u64le(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
fn lsn_text(l: u64) -> String {
    LsnText(l).to_string()
}

/// An LSN printed as PostgreSQL prints it (`X/X`), formatted only when an error message is built.
#[derive(Clone, Copy)]
struct LsnText(u64);

impl std::fmt::Display for LsnText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

pub fn is_valid_rmid(rmid: u8, major: u32) -> bool {
    rmid <= RM_MAX_BUILTIN_ID || (major >= 15 && rmid >= RM_MIN_CUSTOM_ID)
}

/// Result of DecodeXLogRecord's checks over one complete record.
#[derive(Debug)]
pub struct Layout {
    pub blocks: u32,
    pub fpi_len: u32,
}

fn is_compressed(bimg_info: u8, major: u32) -> bool {
    if major >= 15 {
        bimg_info & (0x04 | 0x08 | 0x10) != 0
    } else {
        bimg_info & 0x02 != 0
    }
}

/// Walk the fragment headers of a complete record (`rec` = exactly xl_tot_len bytes).
pub fn check_record_layout(rec: &[u8], major: u32, block_size: u32) -> Result<Layout, String> {
    decode_layout(rec, major, block_size).map_err(|e| e.to_string())
}

/// What DecodeXLogRecord refuses, kept small so that the hot path carries no formatting; the
/// message (xlogreader.c's wording) is made only when a record is refused.
#[derive(Debug, Clone, Copy)]
pub enum LayoutError {
    Short,
    OutOfOrder(u8),
    DataFlagNoData,
    DataLenNoFlag(i64),
    HoleBad { hole_offset: i64, hole_length: i64, bimg_len: i64 },
    HoleMissing { hole_offset: i64, hole_length: i64 },
    CompressedFull(i64),
    NeitherHoleNorCompressed(i64),
    SameRelWithoutRel,
    InvalidBlockId(u8),
}

impl std::fmt::Display for LayoutError {
    #[cold]
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            LayoutError::Short => write!(f, "record with invalid length"),
            LayoutError::OutOfOrder(id) => write!(f, "out-of-order block_id {id}"),
            LayoutError::DataFlagNoData => write!(f, "BKPBLOCK_HAS_DATA set, but no data included"),
            LayoutError::DataLenNoFlag(n) => write!(f, "BKPBLOCK_HAS_DATA not set, but data length is {n}"),
            LayoutError::HoleBad { hole_offset, hole_length, bimg_len } => {
                write!(f, "BKPIMAGE_HAS_HOLE set, but hole offset {hole_offset} length {hole_length} block image length {bimg_len}")
            }
            LayoutError::HoleMissing { hole_offset, hole_length } => write!(f, "BKPIMAGE_HAS_HOLE not set, but hole offset {hole_offset} length {hole_length}"),
            LayoutError::CompressedFull(n) => write!(f, "BKPIMAGE_COMPRESSED set, but block image length {n}"),
            LayoutError::NeitherHoleNorCompressed(n) => write!(f, "neither BKPIMAGE_HAS_HOLE nor BKPIMAGE_COMPRESSED set, but block image length is {n}"),
            LayoutError::SameRelWithoutRel => write!(f, "BKPBLOCK_SAME_REL set but no previous rel"),
            LayoutError::InvalidBlockId(id) => write!(f, "invalid block_id {id}"),
        }
    }
}

#[inline(always)]
fn decode_layout(rec: &[u8], major: u32, block_size: u32) -> Result<Layout, LayoutError> {
    let tot_len = rec.len();
    let mut remaining = tot_len as i64 - SIZE_OF_XLOG_RECORD as i64;
    let mut datatotal: i64 = 0;
    let mut p = SIZE_OF_XLOG_RECORD;
    let mut max_block_id: i32 = -1;
    let mut have_rel = false;
    let mut blocks = 0u32;
    let mut fpi_len = 0u32;
    let short = || Err(LayoutError::Short);
    let bs = block_size as i64;
    while remaining > datatotal {
        let id = rec[p];
        p += 1;
        remaining -= 1;
        // block references first, the common case (an if-chain: no indirect jump to mispredict)
        if id <= 32 {
            if (id as i32) <= max_block_id {
                return Err(LayoutError::OutOfOrder(id));
            }
            max_block_id = id as i32;
            blocks += 1;
            if remaining < 3 {
                return short();
            }
            let fork_flags = rec[p];
            let data_len = u16le(rec, p + 1) as i64;
            p += 3;
            remaining -= 3;
            let has_data = fork_flags & 0x20 != 0;
            if has_data && data_len == 0 {
                return Err(LayoutError::DataFlagNoData);
            }
            if !has_data && data_len != 0 {
                return Err(LayoutError::DataLenNoFlag(data_len));
            }
            datatotal += data_len;
            if fork_flags & 0x10 != 0 {
                if remaining < 5 {
                    return short();
                }
                let bimg_len = u16le(rec, p) as i64;
                let hole_offset = u16le(rec, p + 2) as i64;
                let bimg_info = rec[p + 4];
                p += 5;
                remaining -= 5;
                let compressed = is_compressed(bimg_info, major);
                let has_hole = bimg_info & 0x01 != 0;
                let hole_length: i64;
                if compressed {
                    if has_hole {
                        if remaining < 2 {
                            return short();
                        }
                        hole_length = u16le(rec, p) as i64;
                        p += 2;
                        remaining -= 2;
                    } else {
                        hole_length = 0;
                    }
                } else {
                    hole_length = bs - bimg_len;
                }
                datatotal += bimg_len;
                fpi_len += bimg_len as u32;
                if has_hole && (hole_offset == 0 || hole_length == 0 || bimg_len == bs) {
                    return Err(LayoutError::HoleBad { hole_offset, hole_length, bimg_len });
                }
                if !has_hole && (hole_offset != 0 || hole_length != 0) {
                    return Err(LayoutError::HoleMissing { hole_offset, hole_length });
                }
                if compressed && bimg_len == bs {
                    return Err(LayoutError::CompressedFull(bimg_len));
                }
                if !has_hole && !compressed && bimg_len != bs {
                    return Err(LayoutError::NeitherHoleNorCompressed(bimg_len));
                }
            }
            if fork_flags & 0x80 == 0 {
                if remaining < 12 {
                    return short();
                }
                p += 12;
                remaining -= 12;
                have_rel = true;
            } else if !have_rel {
                return Err(LayoutError::SameRelWithoutRel);
            }
            if remaining < 4 {
                return short();
            }
            p += 4;
            remaining -= 4;
        } else if id == 255 {
            if remaining < 1 {
                return short();
            }
            datatotal += rec[p] as i64;
            remaining -= 1;
            break;
        } else if id == 254 {
            if remaining < 4 {
                return short();
            }
            datatotal += u32le(rec, p) as i64;
            remaining -= 4;
            break;
        } else if id == 253 {
            if remaining < 2 {
                return short();
            }
            p += 2;
            remaining -= 2;
        } else if id == 252 && major >= 14 {
            if remaining < 4 {
                return short();
            }
            p += 4;
            remaining -= 4;
        } else {
            return Err(LayoutError::InvalidBlockId(id));
        }
    }
    if remaining != datatotal {
        return short();
    }
    Ok(Layout { blocks, fpi_len })
}

struct EndOfWal {
    reason: u32,
    message: String,
}
type Step<T> = Result<T, EndOfWal>;
#[cold]
#[inline(never)]
fn crc_error(rec_lsn: u64) -> Step<()> {
    eow(END_CRC_MISMATCH, format!("incorrect resource manager data checksum in record at {}", lsn_text(rec_lsn)))
}

#[cold]
#[inline(never)]
fn layout_error(e: LayoutError, rec_lsn: u64) -> Step<()> {
    eow(END_BAD_RECORD_BODY, format!("{e} at {}", lsn_text(rec_lsn)))
}

#[cold]
fn eow<T>(reason: u32, message: String) -> Step<T> {
    Err(EndOfWal { reason, message })
}

struct Scanner<'a> {
    buf: &'a [u8],
    buf_lsn: u64,
    len: usize,
    page_magic: u16,
    major: u32,
    system_id: u64,
    segment_size: u32,
    block_size: u32,
    last_page_tli: u32,
    prev_record_lsn: u64,
    random_access: bool,
    rec_pos: usize,
    find_first: bool,
    partial: Vec<u8>,
    partial_active: bool,
    partial_tot_len: u32,
    partial_lsn: u64,
    partial_crosses_segment: bool,
    partial_header_checked: bool,
    records_mode: bool,
    records: Vec<u8>,
    count: u32,
    stats: Vec<[u64; 3]>,
    first_record_lsn: u64,
    last_record_lsn: u64,
    last_record_end_lsn: u64,
    start_lsn: u64,
    end_lsn: u64,
    reached_end_lsn: bool,
}

/// Scan one buffer. Err only for bad arguments (misaligned buffer, carry mismatch).
pub fn scan_wal(buf: &[u8], params: &ScanParams, carry: Option<Carry>) -> Result<ScanOutput, String> {
    let mut s = Scanner {
        buf,
        buf_lsn: params.buf_lsn,
        len: buf.len(),
        page_magic: 0,
        major: 0,
        system_id: 0,
        segment_size: 0,
        block_size: 0,
        last_page_tli: 0,
        prev_record_lsn: 0,
        random_access: true,
        rec_pos: 0,
        find_first: true,
        partial: Vec::new(),
        partial_active: false,
        partial_tot_len: 0,
        partial_lsn: 0,
        partial_crosses_segment: false,
        partial_header_checked: false,
        records_mode: params.records_mode,
        records: Vec::new(),
        count: 0,
        stats: vec![[0u64; 3]; STATS_SLOTS],
        first_record_lsn: 0,
        last_record_lsn: 0,
        last_record_end_lsn: 0,
        start_lsn: params.start_lsn,
        end_lsn: params.end_lsn,
        reached_end_lsn: false,
    };
    if params.records_mode {
        s.records.reserve(buf.len() / 100 * RECORD_ENTRY_SIZE / 2 + RECORD_ENTRY_SIZE * 64);
    }
    if let Some(c) = carry {
        if c.next_page_lsn != params.buf_lsn {
            return Err(format!(
                "scanWal: buffer starts at {} but the carry expects {}",
                lsn_text(params.buf_lsn),
                lsn_text(c.next_page_lsn)
            ));
        }
        s.page_magic = c.page_magic;
        s.major = major_from_magic(c.page_magic).unwrap_or(0);
        s.system_id = c.system_id;
        s.segment_size = c.segment_size;
        s.block_size = c.block_size;
        s.last_page_tli = c.last_page_tli;
        s.prev_record_lsn = c.prev_record_lsn;
        s.random_access = c.random_access;
        s.find_first = c.page_magic == 0 || c.next_record_lsn == 0;
        if c.next_record_lsn >= params.buf_lsn {
            s.rec_pos = (c.next_record_lsn - params.buf_lsn) as usize;
        }
        if let Some(p) = c.partial {
            s.partial_active = true;
            s.partial = p;
            s.partial_tot_len = c.partial_tot_len;
            s.partial_lsn = c.next_record_lsn;
            s.partial_crosses_segment = c.partial_crosses_segment;
            s.partial_header_checked = s.partial.len() >= SIZE_OF_XLOG_RECORD;
            s.rec_pos = 0;
        }
        if s.block_size > 0 && !s.len.is_multiple_of(s.block_size as usize) {
            return Err(format!(
                "scanWal: buffer length {} is not a multiple of the page size {}",
                s.len, s.block_size
            ));
        }
    }
    let end = match s.walk_dispatch() {
        Ok(()) => None,
        Err(EndOfWal { reason, message }) if reason == u32::MAX => return Err(message),
        Err(e) => Some(End {
            lsn: if s.partial_active { s.partial_lsn } else { s.lsn_at(s.rec_pos) },
            reason: e.reason,
            message: e.message,
        }),
    };
    Ok(s.finish(end))
}

/// argument errors travel through the same channel with this marker reason
fn arg_error<T>(message: String) -> Step<T> {
    Err(EndOfWal { reason: u32::MAX, message })
}

impl<'a> Scanner<'a> {
    #[inline]
    fn lsn_at(&self, off: usize) -> u64 {
        self.buf_lsn + off as u64
    }

    /// The walk compiled twice: once with SSE4.2 enabled, so that the record CRC's `crc32`
    /// instructions are inlined into the record loop (a `#[target_feature]` function cannot be
    /// inlined into code compiled without that feature), and once without, for other CPUs.
    fn walk_dispatch(&mut self) -> Step<()> {
        #[cfg(target_arch = "x86_64")]
        if crate::crc32c::have_sse42() {
            // SAFETY: the CPU has SSE4.2 (checked at run time)
            return unsafe { self.walk_sse42() };
        }
        self.walk()
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "sse4.2")]
    unsafe fn walk_sse42(&mut self) -> Step<()> {
        self.walk()
    }

    #[inline(always)]
    fn walk(&mut self) -> Step<()> {
        let mut page_off = 0usize;
        if self.len == 0 {
            return Ok(());
        }
        while page_off < self.len {
            if !self.find_first
                && !self.partial_active
                && self.block_size > 0
                && self.rec_pos >= page_off + self.block_size as usize
            {
                page_off += self.block_size as usize;
                continue;
            }
            if self.find_first && !self.partial_active {
                self.rec_pos = page_off;
            }
            let info = self.validate_page(page_off)?;
            let hdr = if info & XLP_LONG_HEADER != 0 { SIZE_OF_XLOG_LONG_PHD } else { SIZE_OF_XLOG_SHORT_PHD };
            let bs = self.block_size as usize;
            let page_end = page_off + bs;
            if page_end > self.len {
                return arg_error(format!(
                    "scanWal: buffer length {} is not a multiple of the page size {}",
                    self.len, bs
                ));
            }
            if self.find_first {
                if info & XLP_FIRST_IS_CONTRECORD != 0 {
                    let rem = u32le(self.buf, page_off + 16) as usize;
                    if maxalign(rem) >= bs - hdr {
                        page_off += bs;
                        continue;
                    }
                    self.rec_pos = page_off + hdr + maxalign(rem);
                } else {
                    self.rec_pos = page_off + hdr;
                }
                self.find_first = false;
            } else if self.partial_active {
                if info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 {
                    self.drop_partial();
                    self.rec_pos = page_off + hdr;
                } else {
                    if info & XLP_FIRST_IS_CONTRECORD == 0 {
                        return eow(END_BAD_CONTRECORD, format!("there is no contrecord flag at {}", lsn_text(self.lsn_at(page_off))));
                    }
                    let rem = u32le(self.buf, page_off + 16) as usize;
                    let missing = self.partial_tot_len as usize - self.partial.len();
                    if rem == 0 || rem != missing {
                        return eow(
                            END_BAD_CONTRECORD,
                            format!("invalid contrecord length {rem} (expected {missing}) at {}", lsn_text(self.lsn_at(page_off))),
                        );
                    }
                    let take = rem.min(bs - hdr);
                    self.partial.extend_from_slice(&self.buf[page_off + hdr..page_off + hdr + take]);
                    if self.partial.len() >= SIZE_OF_XLOG_RECORD && !self.partial_header_checked {
                        let hdr_bytes: [u8; 24] = self.partial[..24].try_into().unwrap();
                        self.check_header_fields(&hdr_bytes, 0, self.partial_lsn)?;
                        self.partial_header_checked = true;
                    }
                    if take < rem {
                        page_off += bs;
                        if self.segment_size > 0 && self.lsn_at(page_off).is_multiple_of(self.segment_size as u64) {
                            self.partial_crosses_segment = true;
                        }
                        continue;
                    }
                    self.finish_partial(page_off + hdr + maxalign(rem))?;
                    if self.reached_end_lsn {
                        return Ok(());
                    }
                }
            } else if self.rec_pos == page_off {
                if info & XLP_FIRST_IS_CONTRECORD != 0 {
                    return eow(END_BAD_CONTRECORD, format!("contrecord is requested by {}", lsn_text(self.lsn_at(page_off))));
                }
                self.rec_pos = page_off + hdr;
            } else if self.rec_pos < page_off + hdr {
                return eow(END_BAD_RECORD_HEADER, format!("invalid record offset at {}", lsn_text(self.lsn_at(self.rec_pos))));
            }

            while self.rec_pos < page_end {
                let rec_off = self.rec_pos;
                let rec_lsn = self.lsn_at(rec_off);
                if self.end_lsn != 0 && rec_lsn >= self.end_lsn {
                    self.reached_end_lsn = true;
                    return Ok(());
                }
                let avail = page_end - rec_off;
                let tot_len = u32le(self.buf, rec_off);
                if avail >= SIZE_OF_XLOG_RECORD {
                    let buf = self.buf;
                    self.check_header_fields(buf, rec_off, rec_lsn)?;
                } else {
                    check_tot_len(tot_len, rec_lsn)?;
                }
                if tot_len as usize <= avail {
                    let buf = self.buf;
                    self.complete_record(&buf[rec_off..rec_off + tot_len as usize], rec_lsn, 0, None)?;
                    if self.reached_end_lsn {
                        return Ok(());
                    }
                    continue;
                }
                self.partial_active = true;
                self.partial.clear();
                self.partial.extend_from_slice(&self.buf[rec_off..page_end]);
                self.partial_tot_len = tot_len;
                self.partial_lsn = rec_lsn;
                self.partial_crosses_segment = false;
                self.partial_header_checked = avail >= SIZE_OF_XLOG_RECORD;
                break;
            }
            page_off += bs;
            if self.partial_active && self.segment_size > 0 && self.lsn_at(page_off).is_multiple_of(self.segment_size as u64) {
                self.partial_crosses_segment = true;
            }
        }
        Ok(())
    }

    fn drop_partial(&mut self) {
        self.partial_active = false;
        self.partial.clear();
        self.partial_tot_len = 0;
        self.partial_crosses_segment = false;
        self.partial_header_checked = false;
    }

    fn finish_partial(&mut self, next_pos: usize) -> Step<()> {
        let rec = std::mem::take(&mut self.partial);
        let flags = 1 | if self.partial_crosses_segment { 2 } else { 0 };
        let r = self.complete_record(&rec, self.partial_lsn, flags, Some(next_pos));
        self.partial = rec;
        r?;
        if self.partial_active {
            self.drop_partial();
        }
        Ok(())
    }

    #[inline(always)]
    fn check_header_fields(&self, b: &[u8], off: usize, rec_lsn: u64) -> Step<()> {
        let h = &b[off..off + SIZE_OF_XLOG_RECORD];
        let tot_len = u32le(h, 0);
        let rmid = h[17];
        let prev = u64le(h, 8);
        let bad_prev = if self.random_access { prev >= rec_lsn } else { prev != self.prev_record_lsn };
        if (tot_len as usize) < SIZE_OF_XLOG_RECORD || tot_len > MAX_RECORD_LENGTH || !is_valid_rmid(rmid, self.major) || bad_prev {
            return self.header_error(h, rec_lsn);
        }
        Ok(())
    }

    /// the first failed header check, in xlogreader's order (off the hot path)
    #[cold]
    #[inline(never)]
    fn header_error(&self, h: &[u8], rec_lsn: u64) -> Step<()> {
        check_tot_len(u32le(h, 0), rec_lsn)?;
        let rmid = h[17];
        if !is_valid_rmid(rmid, self.major) {
            return eow(END_BAD_RECORD_HEADER, format!("invalid resource manager ID {rmid} at {}", lsn_text(rec_lsn)));
        }
        let prev = u64le(h, 8);
        eow(END_PREV_MISMATCH, format!("record with incorrect prev-link {} at {}", lsn_text(prev), lsn_text(rec_lsn)))
    }

    #[inline(always)]
    fn complete_record(&mut self, rec: &[u8], rec_lsn: u64, flags: u8, next_pos: Option<usize>) -> Step<()> {
        let tot_len = rec.len();
        let stored = u32le(rec, 20);
        let computed = record_crc(&rec[SIZE_OF_XLOG_RECORD..], &rec[..XL_CRC_COVERED]);
        if computed != stored {
            return crc_error(rec_lsn);
        }
        let layout = match decode_layout(rec, self.major, self.block_size) {
            Ok(l) => l,
            Err(e) => return layout_error(e, rec_lsn),
        };
        let xid = u32le(rec, 4);
        let info = rec[16];
        let rmid = rec[17];
        let prev = u64le(rec, 8);
        self.prev_record_lsn = rec_lsn;
        self.random_access = false;
        let mut next = next_pos.unwrap_or(self.rec_pos + maxalign(tot_len));
        if rmid == 0 && info & 0xF0 == XLOG_SWITCH {
            let seg = self.segment_size as u64;
            let seg_start = rec_lsn - rec_lsn % seg;
            next = (seg_start + seg - self.buf_lsn) as usize;
        }
        self.rec_pos = next;
        if rec_lsn < self.start_lsn {
            return Ok(());
        }
        if self.first_record_lsn == 0 {
            self.first_record_lsn = rec_lsn;
        }
        self.last_record_lsn = rec_lsn;
        self.last_record_end_lsn = self.lsn_at(next);
        self.count += 1;
        let slot = &mut self.stats[rmid as usize * 16 + (info >> 4) as usize];
        slot[0] += 1;
        slot[1] += (tot_len as u32 - layout.fpi_len) as u64;
        slot[2] += layout.fpi_len as u64;
        if self.records_mode {
            let r = &mut self.records;
            r.extend_from_slice(&rec_lsn.to_le_bytes());
            r.extend_from_slice(&prev.to_le_bytes());
            r.extend_from_slice(&(tot_len as u32).to_le_bytes());
            r.extend_from_slice(&xid.to_le_bytes());
            r.extend_from_slice(&layout.fpi_len.to_le_bytes());
            r.extend_from_slice(&[rmid, info, layout.blocks.min(255) as u8, flags]);
        }
        Ok(())
    }

    fn validate_page(&mut self, page_off: usize) -> Step<u16> {
        let b = self.buf;
        let page_lsn = self.lsn_at(page_off);
        if page_off + SIZE_OF_XLOG_SHORT_PHD > self.len {
            return arg_error(format!("scanWal: buffer ends inside the page header at {}", lsn_text(page_lsn)));
        }
        let magic = u16le(b, page_off);
        let info = u16le(b, page_off + 2);
        let tli = u32le(b, page_off + 4);
        let at = LsnText(page_lsn); // formatted only if a check fails: this runs once per page
        if magic == 0 {
            return eow(END_ZEROED, format!("invalid magic number 0000 in WAL page at {at}"));
        }
        if self.page_magic == 0 {
            let Some(major) = major_from_magic(magic) else {
                return eow(END_BAD_MAGIC, format!("invalid magic number {magic:04X} in WAL page at {at}"));
            };
            if info & XLP_LONG_HEADER == 0 || page_off + SIZE_OF_XLOG_LONG_PHD > self.len {
                return eow(END_BAD_PAGE_HEADER, format!("WAL scan must start at a page with a long header at {at}"));
            }
            let seg_size = u32le(b, page_off + 32);
            let blcksz = u32le(b, page_off + 36);
            if !((1 << 20..=1 << 30).contains(&seg_size) && seg_size.is_power_of_two()) {
                return eow(END_BAD_PAGE_HEADER, format!("invalid WAL segment size {seg_size} in page header at {at}"));
            }
            if !(1024..=65536).contains(&blcksz) || !blcksz.is_power_of_two() {
                return eow(END_BAD_PAGE_HEADER, format!("invalid XLOG_BLCKSZ {blcksz} in page header at {at}"));
            }
            if !self.buf_lsn.is_multiple_of(blcksz as u64) || !self.len.is_multiple_of(blcksz as usize) {
                return arg_error(format!(
                    "scanWal: buffer at {} of {} bytes is not page aligned for {}-byte pages",
                    lsn_text(self.buf_lsn),
                    self.len,
                    blcksz
                ));
            }
            self.page_magic = magic;
            self.major = major;
            self.segment_size = seg_size;
            self.block_size = blcksz;
            self.system_id = u64le(b, page_off + 24);
        }
        if magic != self.page_magic {
            return eow(END_BAD_MAGIC, format!("invalid magic number {magic:04X} in WAL page at {at}"));
        }
        if info & !XLP_ALL_FLAGS != 0 {
            return eow(END_BAD_PAGE_HEADER, format!("invalid info bits {info:04X} in WAL page at {at}"));
        }
        let seg_offset = page_lsn % self.segment_size as u64;
        if info & XLP_LONG_HEADER != 0 {
            let sysid = u64le(b, page_off + 24);
            if self.system_id != 0 && sysid != self.system_id {
                return eow(
                    END_BAD_PAGE_HEADER,
                    format!(
                        "WAL file is from different database system: WAL file database system identifier is {sysid}, expected {}",
                        self.system_id
                    ),
                );
            }
            if u32le(b, page_off + 32) != self.segment_size {
                return eow(END_BAD_PAGE_HEADER, format!("WAL file is from different database system: incorrect segment size in page header at {at}"));
            }
            if u32le(b, page_off + 36) != self.block_size {
                return eow(END_BAD_PAGE_HEADER, format!("WAL file is from different database system: incorrect XLOG_BLCKSZ in page header at {at}"));
            }
        } else if seg_offset == 0 {
            return eow(END_BAD_PAGE_HEADER, format!("invalid info bits {info:04X} in WAL segment start at {at}"));
        }
        let pageaddr = u64le(b, page_off + 8);
        if pageaddr != page_lsn {
            return eow(END_PAGEADDR_MISMATCH, format!("unexpected pageaddr {} in WAL page at {at}", lsn_text(pageaddr)));
        }
        if tli < self.last_page_tli {
            return eow(
                END_TLI_OUT_OF_SEQUENCE,
                format!("out-of-sequence timeline ID {tli} (after {}) in WAL page at {at}", self.last_page_tli),
            );
        }
        self.last_page_tli = tli;
        Ok(info)
    }

    fn finish(self, end: Option<End>) -> ScanOutput {
        let mut stats = vec![0u8; STATS_SLOTS * STATS_ENTRY_SIZE];
        for (i, s) in self.stats.iter().enumerate() {
            if s[0] == 0 {
                continue;
            }
            let at = i * STATS_ENTRY_SIZE;
            stats[at..at + 8].copy_from_slice(&s[0].to_le_bytes());
            stats[at + 8..at + 16].copy_from_slice(&s[1].to_le_bytes());
            stats[at + 16..at + 24].copy_from_slice(&s[2].to_le_bytes());
        }
        let keep_partial = self.partial_active && end.is_none();
        let carry = Carry {
            next_page_lsn: self.lsn_at(self.len),
            next_record_lsn: if self.partial_active {
                self.partial_lsn
            } else if self.find_first {
                0
            } else {
                self.lsn_at(self.rec_pos)
            },
            prev_record_lsn: self.prev_record_lsn,
            last_page_tli: self.last_page_tli,
            page_magic: self.page_magic,
            system_id: self.system_id,
            segment_size: self.segment_size,
            block_size: self.block_size,
            partial_tot_len: if keep_partial { self.partial_tot_len } else { 0 },
            partial_crosses_segment: keep_partial && self.partial_crosses_segment,
            partial: if keep_partial { Some(self.partial) } else { None },
            random_access: self.random_access,
        };
        ScanOutput {
            count: self.count,
            records: self.records,
            stats,
            end,
            reached_end_lsn: self.reached_end_lsn,
            carry,
            first_record_lsn: self.first_record_lsn,
            last_record_lsn: self.last_record_lsn,
            last_record_end_lsn: self.last_record_end_lsn,
        }
    }
}

#[inline(always)]
fn check_tot_len(tot_len: u32, rec_lsn: u64) -> Step<()> {
    if (tot_len as usize) < SIZE_OF_XLOG_RECORD || tot_len > MAX_RECORD_LENGTH {
        return tot_len_error(tot_len, rec_lsn);
    }
    Ok(())
}

#[cold]
#[inline(never)]
fn tot_len_error(tot_len: u32, rec_lsn: u64) -> Step<()> {
    if tot_len == 0 {
        return eow(END_ZEROED, format!("invalid record length at {}: wanted 24, got 0", lsn_text(rec_lsn)));
    }
    if (tot_len as usize) < SIZE_OF_XLOG_RECORD {
        return eow(END_BAD_RECORD_HEADER, format!("invalid record length at {}: wanted 24, got {tot_len}", lsn_text(rec_lsn)));
    }
    eow(END_BAD_RECORD_HEADER, format!("record length {tot_len} at {} too long", lsn_text(rec_lsn)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crc32c::crc32c;

    const SEG: usize = 1 << 20;

    /// minimal writer: records of main data only, laid out like XLogInsert
    fn build(n: usize, body_len: usize) -> (Vec<u8>, Vec<u64>) {
        let mut wal = vec![0u8; SEG];
        let base = SEG as u64; // segment 1
        let mut pos = 0usize;
        let mut prev = 0u64;
        let mut lsns = vec![];
        let header = |wal: &mut Vec<u8>, page: usize, rem: u32| {
            let long = page == 0;
            let info: u16 = (if long { 2 } else { 0 }) | 4 | (if rem > 0 { 1 } else { 0 });
            wal[page..page + 2].copy_from_slice(&0xD110u16.to_le_bytes());
            wal[page + 2..page + 4].copy_from_slice(&info.to_le_bytes());
            wal[page + 4..page + 8].copy_from_slice(&1u32.to_le_bytes());
            wal[page + 8..page + 16].copy_from_slice(&(base + page as u64).to_le_bytes());
            wal[page + 16..page + 20].copy_from_slice(&rem.to_le_bytes());
            if long {
                wal[page + 24..page + 32].copy_from_slice(&42u64.to_le_bytes());
                wal[page + 32..page + 36].copy_from_slice(&(SEG as u32).to_le_bytes());
                wal[page + 36..page + 40].copy_from_slice(&8192u32.to_le_bytes());
            }
        };
        for _ in 0..n {
            let mut rec = vec![0u8; 24];
            let mut body = vec![0xFFu8, body_len as u8];
            body.extend(std::iter::repeat_n(0xAB, body_len));
            rec.extend_from_slice(&body);
            let tot = rec.len() as u32;
            rec[0..4].copy_from_slice(&tot.to_le_bytes());
            rec[8..16].copy_from_slice(&prev.to_le_bytes());
            rec[17] = 21;
            let crc = crate::crc32c::crc32c_append(crc32c(&rec[24..]), &rec[..20]);
            rec[20..24].copy_from_slice(&crc.to_le_bytes());
            if pos.is_multiple_of(8192) {
                header(&mut wal, pos, 0);
                pos += if pos == 0 { 40 } else { 24 };
            }
            let lsn = base + pos as u64;
            let mut done = 0;
            while done < rec.len() {
                if pos.is_multiple_of(8192) {
                    header(&mut wal, pos, (rec.len() - done) as u32);
                    pos += 24;
                }
                let take = (rec.len() - done).min(8192 - pos % 8192);
                wal[pos..pos + take].copy_from_slice(&rec[done..done + take]);
                done += take;
                pos += take;
            }
            pos = maxalign(pos);
            prev = lsn;
            lsns.push(lsn);
        }
        (wal, lsns)
    }

    fn lsns(out: &ScanOutput) -> Vec<u64> {
        out.records.chunks(RECORD_ENTRY_SIZE).map(|c| u64le(c, 0)).collect()
    }

    #[test]
    fn reads_all_records_and_ends_at_zero_tail() {
        let (wal, expect) = build(500, 200);
        let p = ScanParams { buf_lsn: SEG as u64, records_mode: true, start_lsn: 0, end_lsn: 0 };
        let out = scan_wal(&wal, &p, None).unwrap();
        assert_eq!(lsns(&out), expect);
        let end = out.end.unwrap();
        assert_eq!(end.reason, END_ZEROED);
        assert!(end.lsn > *expect.last().unwrap());
    }

    #[test]
    fn chunked_equals_whole() {
        let (wal, expect) = build(400, 250);
        let mut carry = None;
        let mut got = vec![];
        for (i, chunk) in wal.chunks(3 * 8192).enumerate() {
            let p = ScanParams { buf_lsn: SEG as u64 + (i * 3 * 8192) as u64, records_mode: true, start_lsn: 0, end_lsn: 0 };
            let out = scan_wal(chunk, &p, carry.take()).unwrap();
            got.extend(lsns(&out));
            if out.end.is_some() {
                break;
            }
            carry = Some(out.carry);
        }
        assert_eq!(got, expect);
    }

    #[test]
    fn crc_and_pageaddr_damage_end_the_scan() {
        let (mut wal, expect) = build(300, 100);
        let target = (expect[100] - SEG as u64) as usize;
        wal[target + 30] ^= 1;
        let p = ScanParams { buf_lsn: SEG as u64, records_mode: true, start_lsn: 0, end_lsn: 0 };
        let out = scan_wal(&wal, &p, None).unwrap();
        assert_eq!(out.count, 100);
        let end = out.end.unwrap();
        assert_eq!((end.lsn, end.reason), (expect[100], END_CRC_MISMATCH));

        let (mut wal, _) = build(300, 100);
        wal[8192 + 8] ^= 0x10;
        let out = scan_wal(&wal, &p, None).unwrap();
        assert_eq!(out.end.unwrap().reason, END_PAGEADDR_MISMATCH);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x1234_5678_9abc_def0;
        for _ in 0..200 {
            let mut buf = vec![0u8; 4 * 8192];
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let p = ScanParams { buf_lsn: 0, records_mode: true, start_lsn: 0, end_lsn: 0 };
            let out = scan_wal(&buf, &p, None).unwrap();
            assert!(out.end.is_some());
        }
        // mutated real-looking WAL
        let (wal, _) = build(300, 120);
        for i in 0..2000usize {
            let mut w = wal.clone();
            let at = (i * 7919) % (8 * 8192);
            w[at] ^= (i % 255 + 1) as u8;
            let p = ScanParams { buf_lsn: SEG as u64, records_mode: false, start_lsn: 0, end_lsn: 0 };
            let _ = scan_wal(&w, &p, None).unwrap();
        }
    }
}

#[cfg(test)]
#[path = "wal_scan_tests.rs"]
mod more_tests;

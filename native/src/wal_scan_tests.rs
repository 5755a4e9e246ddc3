//! Scanner unit cases on hand-built pages: XLOG_SWITCH, startLsn/endLsn, fresh starts on a
//! continuation page (XLogFindNextRecord), record headers split across pages, continuation and
//! overwrite-contrecord rules, page-header checks, segment-spanning records, DecodeXLogRecord rules.

use super::*;
use crate::crc32c::{crc32c, crc32c_append};

const SEG: usize = 1 << 20;
const PAGE: usize = 8192;
const BASE: u64 = 4 * SEG as u64; // the buffer starts at segment 4

/// An XLogInsert-like writer over `nseg` 1 MiB segments.
struct W {
    buf: Vec<u8>,
    pos: usize,
    prev: u64,
    lsns: Vec<u64>,
    magic: u16,
    extra_flags: u16,
}

fn main_data(n: usize) -> Vec<u8> {
    let mut b = if n <= 255 { vec![0xFF, n as u8] } else { [vec![0xFE], (n as u32).to_le_bytes().to_vec()].concat() };
    b.extend(std::iter::repeat_n(0xAB, n));
    b
}

fn finish_record(rmid: u8, info: u8, prev: u64, body: &[u8]) -> Vec<u8> {
    let mut rec = vec![0u8; 24];
    rec.extend_from_slice(body);
    let tot = rec.len() as u32;
    rec[0..4].copy_from_slice(&tot.to_le_bytes());
    rec[4..8].copy_from_slice(&777u32.to_le_bytes());
    rec[8..16].copy_from_slice(&prev.to_le_bytes());
    rec[16] = info;
    rec[17] = rmid;
    let crc = crc32c_append(crc32c(&rec[24..]), &rec[..20]);
    rec[20..24].copy_from_slice(&crc.to_le_bytes());
    rec
}

impl W {
    fn new(nseg: usize, magic: u16) -> W {
        W { buf: vec![0u8; nseg * SEG], pos: 0, prev: 0, lsns: vec![], magic, extra_flags: 0 }
    }
    fn hdr_size(page: usize) -> usize {
        if page.is_multiple_of(SEG) {
            40
        } else {
            24
        }
    }
    fn page_header(&mut self, page: usize, rem: u32) {
        let long = page.is_multiple_of(SEG);
        let info: u16 = (if long { 2 } else { 0 }) | 4 | (if rem > 0 { 1 } else { 0 }) | std::mem::take(&mut self.extra_flags);
        let b = &mut self.buf;
        b[page..page + PAGE].fill(0);
        b[page..page + 2].copy_from_slice(&self.magic.to_le_bytes());
        b[page + 2..page + 4].copy_from_slice(&info.to_le_bytes());
        b[page + 4..page + 8].copy_from_slice(&1u32.to_le_bytes());
        b[page + 8..page + 16].copy_from_slice(&(BASE + page as u64).to_le_bytes());
        b[page + 16..page + 20].copy_from_slice(&rem.to_le_bytes());
        if long {
            b[page + 24..page + 32].copy_from_slice(&42u64.to_le_bytes());
            b[page + 32..page + 36].copy_from_slice(&(SEG as u32).to_le_bytes());
            b[page + 36..page + 40].copy_from_slice(&(PAGE as u32).to_le_bytes());
        }
    }
    fn add_raw(&mut self, rec: &[u8]) -> u64 {
        if self.pos.is_multiple_of(PAGE) {
            self.page_header(self.pos, 0);
            self.pos += W::hdr_size(self.pos);
        }
        let lsn = BASE + self.pos as u64;
        let mut done = 0;
        while done < rec.len() {
            if self.pos.is_multiple_of(PAGE) {
                self.page_header(self.pos, (rec.len() - done) as u32);
                self.pos += W::hdr_size(self.pos);
            }
            let take = (rec.len() - done).min(PAGE - self.pos % PAGE);
            self.buf[self.pos..self.pos + take].copy_from_slice(&rec[done..done + take]);
            done += take;
            self.pos += take;
        }
        self.pos = maxalign(self.pos);
        self.prev = lsn;
        self.lsns.push(lsn);
        lsn
    }
    fn add(&mut self, rmid: u8, info: u8, body: &[u8]) -> u64 {
        let rec = finish_record(rmid, info, self.prev, body);
        self.add_raw(&rec)
    }
    fn msg(&mut self, n: usize) -> u64 {
        self.add(21, 0, &main_data(n))
    }
    fn switch(&mut self) -> u64 {
        let lsn = self.add(0, 0x40, &[]);
        self.pos = ((lsn - BASE) as usize / SEG + 1) * SEG;
        lsn
    }
    /// a record whose end lands exactly `left` bytes before the end of the current page
    fn fill_page_leaving(&mut self, left: usize) {
        if self.pos.is_multiple_of(PAGE) {
            self.page_header(self.pos, 0);
            self.pos += W::hdr_size(self.pos);
        }
        let mut room = PAGE - self.pos % PAGE;
        if room < left + 32 {
            self.msg(room.max(40) - 26 + 8); // spill onto the next page, then fill that one
            room = PAGE - self.pos % PAGE;
        }
        let tot = room - left;
        let body = tot - 24;
        let rec = if body - 2 <= 255 { main_data(body - 2) } else { main_data(body - 5) };
        assert_eq!(rec.len(), body);
        let r = finish_record(21, 0, self.prev, &rec);
        self.add_raw(&r);
        assert_eq!((PAGE - self.pos % PAGE) % PAGE, left);
    }
}

type Damage = Box<dyn Fn(&mut Vec<u8>)>;

fn params(start: u64, end: u64) -> ScanParams {
    ScanParams { buf_lsn: BASE, records_mode: true, start_lsn: start, end_lsn: end }
}
fn scan(buf: &[u8], p: &ScanParams) -> ScanOutput {
    scan_wal(buf, p, None).unwrap()
}
fn lsns(out: &ScanOutput) -> Vec<u64> {
    out.records.chunks(RECORD_ENTRY_SIZE).map(|c| u64le(c, 0)).collect()
}
fn flags(out: &ScanOutput) -> Vec<u8> {
    out.records.chunks(RECORD_ENTRY_SIZE).map(|c| c[31]).collect()
}
fn end(out: &ScanOutput) -> (u64, u32) {
    let e = out.end.as_ref().expect("an end of WAL");
    (e.lsn, e.reason)
}
/// scan in chunks of `pages` pages with carry; all records and the final end
fn chunked(buf: &[u8], pages: usize) -> (Vec<u8>, Option<(u64, u32)>, Vec<u8>) {
    let mut carry = None;
    let mut recs = vec![];
    let mut stats = vec![0u64; STATS_SLOTS * 3];
    for (i, c) in buf.chunks(pages * PAGE).enumerate() {
        let p = ScanParams { buf_lsn: BASE + (i * pages * PAGE) as u64, records_mode: true, start_lsn: 0, end_lsn: 0 };
        let out = scan_wal(c, &p, carry.take()).unwrap();
        recs.extend_from_slice(&out.records);
        for (k, s) in stats.iter_mut().enumerate() {
            *s += u64le(&out.stats, k * 8);
        }
        if let Some(e) = out.end {
            let st = stats.iter().flat_map(|v| v.to_le_bytes()).collect();
            return (recs, Some((e.lsn, e.reason)), st);
        }
        carry = Some(out.carry);
    }
    (recs, None, stats.iter().flat_map(|v| v.to_le_bytes()).collect())
}

#[test]
fn xlog_switch_skips_to_next_segment_without_reading_the_zero_pages() {
    let mut w = W::new(3, 0xD110);
    for _ in 0..50 {
        w.msg(300);
    }
    let sw = w.switch();
    for _ in 0..50 {
        w.msg(300);
    }
    let out = scan(&w.buf, &params(0, 0));
    assert_eq!(lsns(&out), w.lsns);
    let i = w.lsns.iter().position(|&l| l == sw).unwrap();
    assert_eq!(w.lsns[i + 1], BASE + SEG as u64 + 40);
    assert_eq!(end(&out), (BASE + w.pos as u64, END_ZEROED));
    for pages in [1, 3, 128] {
        let (recs, e, _) = chunked(&w.buf, pages);
        assert_eq!(recs, out.records, "{pages}-page chunks");
        assert_eq!(e, Some(end(&out)));
    }
    // a switch record as the last one of a buffer: lastRecordEndLsn is the next segment start
    let p = ScanParams { buf_lsn: BASE, records_mode: true, start_lsn: 0, end_lsn: 0 };
    let one = scan_wal(&w.buf[..SEG], &p, None).unwrap();
    assert!(one.end.is_none());
    assert_eq!(one.last_record_lsn, sw);
    assert_eq!(one.last_record_end_lsn, BASE + SEG as u64);
    assert_eq!(one.carry.next_record_lsn, BASE + SEG as u64);
}

#[test]
fn start_lsn_and_end_lsn_bound_the_records() {
    let mut w = W::new(1, 0xD110);
    for i in 0..400 {
        w.msg(40 + i % 300);
    }
    let (s, e) = (w.lsns[100], w.lsns[300]);
    let out = scan(&w.buf, &params(s - 1, e));
    assert_eq!(lsns(&out), w.lsns[100..300].to_vec());
    assert!(out.reached_end_lsn && out.end.is_none());
    assert_eq!(out.first_record_lsn, s);
    // stats mode counts the same records
    let p = ScanParams { buf_lsn: BASE, records_mode: false, start_lsn: s, end_lsn: e };
    let st = scan_wal(&w.buf, &p, None).unwrap();
    assert_eq!(st.count, 200);
    assert!(st.records.is_empty());
    assert_eq!(u64le(&st.stats, (21 * 16) * 24), 200);
}

#[test]
fn fresh_start_on_a_continuation_skips_to_the_first_whole_record() {
    let mut w = W::new(2, 0xD110);
    while w.pos < SEG - 3000 {
        w.msg(200);
    }
    let big = w.msg(20000); // ~17 kB in segment 5: its first two pages are all continuation
    for _ in 0..20 {
        w.msg(100);
    }
    let after = w.lsns[w.lsns.iter().position(|&l| l == big).unwrap() + 1];
    assert!(after > BASE + SEG as u64 + 2 * PAGE as u64);
    // segment 5 alone, fresh: XLogFindNextRecord, then the random-access prev rule
    let p = ScanParams { buf_lsn: BASE + SEG as u64, records_mode: true, start_lsn: 0, end_lsn: 0 };
    let out = scan_wal(&w.buf[SEG..], &p, None).unwrap();
    assert_eq!(out.first_record_lsn, after);
    assert_eq!(out.count, 20);
    // both segments: the big record spans segments (flags bit1), in any chunking
    let whole = scan(&w.buf, &params(0, 0));
    assert_eq!(lsns(&whole), w.lsns);
    let k = w.lsns.iter().position(|&l| l == big).unwrap();
    assert_eq!(flags(&whole)[k], 3);
    for pages in [1, 2, 5] {
        let (recs, e, _) = chunked(&w.buf, pages);
        assert_eq!(recs, whole.records, "{pages}");
        assert_eq!(e, Some(end(&whole)));
    }
}

#[test]
fn record_header_split_across_pages() {
    let mut w = W::new(1, 0xD110);
    w.msg(100);
    w.fill_page_leaving(8);
    let split = w.msg(500); // 8 header bytes here, 16 on the next page
    assert_eq!((split as usize) % PAGE, PAGE - 8);
    w.msg(100);
    let out = scan(&w.buf, &params(0, 0));
    assert_eq!(lsns(&out), w.lsns);
    assert_eq!(flags(&out)[2], 1);
    for pages in [1, 2] {
        assert_eq!(chunked(&w.buf, pages).0, out.records);
    }
    // a bad rmid in the continued part of the header: found after reassembly, at the record start
    let mut b = w.buf.clone();
    let next_page = (split as usize - BASE as usize) + 8 + 24;
    b[next_page + 17 - 8] = 99; // xl_rmid is header byte 17 = 9th byte on the next page
    let o = scan(&b, &params(0, 0));
    assert_eq!(end(&o), (split, END_BAD_RECORD_HEADER));
    assert_eq!(o.count, 2);
    // a wrong xl_prev there: prev-mismatch
    let mut b = w.buf.clone();
    b[next_page] ^= 0x08; // xl_prev starts at header byte 8 = first byte on the next page
    assert_eq!(end(&scan(&b, &params(0, 0))), (split, END_PREV_MISMATCH));
    // a zero tot_len in the first 4 bytes: zeroed, checked before the next page is read
    let mut b = w.buf.clone();
    let at = (split - BASE) as usize;
    b[at..at + 4].fill(0);
    assert_eq!(end(&scan(&b, &params(0, 0))), (split, END_ZEROED));
    // tot_len 1 GiB: too long; 10: too short
    for v in [0x4000_0000u32, 10] {
        let mut b = w.buf.clone();
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        assert_eq!(end(&scan(&b, &params(0, 0))), (split, END_BAD_RECORD_HEADER), "tot_len {v}");
    }
}

#[test]
fn continuation_pages_must_announce_the_exact_remainder() {
    let mut w = W::new(1, 0xD110);
    for _ in 0..10 {
        w.msg(200);
    }
    let big = w.msg(20000);
    w.msg(50);
    let first_cont = ((big - BASE) as usize / PAGE + 1) * PAGE;
    // flag missing
    let mut b = w.buf.clone();
    b[first_cont + 2] &= !1;
    assert_eq!(end(&scan(&b, &params(0, 0))), (big, END_BAD_CONTRECORD));
    // wrong xlp_rem_len on the second continuation page
    let mut b = w.buf.clone();
    b[first_cont + PAGE + 16] ^= 1;
    let o = scan(&b, &params(0, 0));
    assert_eq!(end(&o), (big, END_BAD_CONTRECORD));
    assert_eq!(o.count, 10);
    // a continuation flag on a page where a record should start
    let mut w2 = W::new(1, 0xD110);
    w2.msg(100);
    w2.fill_page_leaving(0);
    w2.msg(100);
    let page = w2.pos / PAGE * PAGE;
    let mut b = w2.buf.clone();
    b[page + 2] |= 1;
    b[page + 16] = 8;
    assert_eq!(end(&scan(&b, &params(0, 0))), (BASE + page as u64, END_BAD_CONTRECORD));
    // CRC damage in the continued part
    let mut b = w.buf.clone();
    b[first_cont + PAGE + 100] ^= 0x20;
    assert_eq!(end(&scan(&b, &params(0, 0))), (big, END_CRC_MISMATCH));
}

#[test]
fn overwrite_contrecord_abandons_the_partial_record() {
    let mut w = W::new(1, 0xD110);
    for _ in 0..10 {
        w.msg(200);
    }
    let before = w.prev;
    let aborted = w.msg(20000);
    // rewrite from the first continuation page: XLP_FIRST_IS_OVERWRITE_CONTRECORD, then
    // XLOG_OVERWRITE_CONTRECORD pointing back at the record before the aborted one
    w.lsns.pop();
    w.prev = before;
    w.pos = ((aborted - BASE) as usize / PAGE + 1) * PAGE;
    w.buf[w.pos..].fill(0);
    w.extra_flags = XLP_FIRST_IS_OVERWRITE_CONTRECORD;
    let mut body = vec![0xFF, 16];
    body.extend_from_slice(&aborted.to_le_bytes());
    body.extend_from_slice(&0i64.to_le_bytes());
    let ow = w.add(0, 0xD0, &body);
    for _ in 0..5 {
        w.msg(100);
    }
    let out = scan(&w.buf, &params(0, 0));
    assert_eq!(lsns(&out), w.lsns);
    assert_eq!(ow as usize % PAGE, 24);
    for pages in [1, 3] {
        assert_eq!(chunked(&w.buf, pages).0, out.records);
    }
}

#[test]
fn page_header_checks() {
    let mut w = W::new(2, 0xD10D);
    while w.pos < SEG + 6 * PAGE {
        w.msg(500);
    }
    let ok = scan(&w.buf, &params(0, 0));
    let all = ok.count;
    assert!(w.pos > SEG + 4 * PAGE);
    let page = 5 * PAGE;
    let rec_at_page = |o: &ScanOutput| o.end.as_ref().unwrap().lsn;
    let cases: Vec<(Damage, u32)> = vec![
        (Box::new(move |b: &mut Vec<u8>| b[page..page + 2].copy_from_slice(&0xD110u16.to_le_bytes())), END_BAD_MAGIC),
        (Box::new(move |b: &mut Vec<u8>| b[page..page + PAGE].fill(0)), END_ZEROED),
        (Box::new(move |b: &mut Vec<u8>| b[page + 2] |= 0x10), END_BAD_PAGE_HEADER),
        (Box::new(move |b: &mut Vec<u8>| b[page + 9] ^= 1), END_PAGEADDR_MISMATCH),
        (Box::new(move |b: &mut Vec<u8>| b[page + 4] = 0), END_TLI_OUT_OF_SEQUENCE),
        // second segment: no long header / other system id / other segment size
        (Box::new(move |b: &mut Vec<u8>| b[SEG + 2] &= !2), END_BAD_PAGE_HEADER),
        (Box::new(move |b: &mut Vec<u8>| b[SEG + 24] ^= 1), END_BAD_PAGE_HEADER),
        (Box::new(move |b: &mut Vec<u8>| b[SEG + 34] ^= 1), END_BAD_PAGE_HEADER),
    ];
    for (i, (damage, reason)) in cases.into_iter().enumerate() {
        let mut b = w.buf.clone();
        damage(&mut b);
        let o = scan(&b, &params(0, 0));
        assert_eq!(o.end.as_ref().unwrap().reason, reason, "case {i}");
        assert!(o.count < all, "case {i}");
        let p = if i < 5 { page } else { SEG };
        // the end is reported at the record that needed that page (it starts at or before it)
        assert!(rec_at_page(&o) <= BASE + p as u64 && rec_at_page(&o) > BASE + p as u64 - 600, "case {i}");
    }
    // an unknown magic on the first page: nothing is read
    let mut b = w.buf.clone();
    b[0..2].copy_from_slice(&0xD0FFu16.to_le_bytes());
    let o = scan(&b, &params(0, 0));
    assert_eq!((o.count, end(&o)), (0, (BASE, END_BAD_MAGIC)));
    // TLI going up is fine
    let mut b = w.buf.clone();
    for p in (6 * PAGE..b.len()).step_by(PAGE) {
        if b[p] != 0 {
            b[p + 4] = 2;
        }
    }
    assert_eq!(scan(&b, &params(0, 0)).count, all);
}

/// record bytes (header zeroed except tot_len) for check_record_layout
fn rec_with(body: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; 24];
    r.extend_from_slice(body);
    let n = r.len() as u32;
    r[0..4].copy_from_slice(&n.to_le_bytes());
    r
}
fn block(id: u8, fork_flags: u8, data_len: u16, image: Option<(u16, u16, u8, Option<u16>)>, rel: bool) -> Vec<u8> {
    let mut b = vec![id, fork_flags];
    b.extend_from_slice(&data_len.to_le_bytes());
    if let Some((len, hole_off, info, hole_len)) = image {
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&hole_off.to_le_bytes());
        b.push(info);
        if let Some(h) = hole_len {
            b.extend_from_slice(&h.to_le_bytes());
        }
    }
    if rel {
        b.extend_from_slice(&[1u8; 12]);
    }
    b.extend_from_slice(&7u32.to_le_bytes());
    b
}

#[test]
fn decode_layout_rules() {
    // two blocks (image with hole + data; same-rel data), origin, toplevel xid, main data
    let mut body = block(0, 0x10 | 0x20, 40, Some((100, 50, 0x01 | 0x02, None)), true);
    body.extend(block(3, 0x80 | 0x20, 8, None, false));
    body.extend([0xFD, 1, 0]);
    body.extend([0xFC, 9, 0, 0, 0]);
    body.extend([0xFF, 5]);
    body.extend(vec![0u8; 100 + 40 + 8 + 5]);
    let l = check_record_layout(&rec_with(&body), 15, 8192).unwrap();
    assert_eq!((l.blocks, l.fpi_len), (2, 100));
    // TOPLEVEL_XID is unknown before 14
    let mut b13 = block(0, 0x20, 4, None, true);
    b13.extend([0xFC, 9, 0, 0, 0]);
    b13.extend(vec![0u8; 4]);
    assert_eq!(check_record_layout(&rec_with(&b13), 14, 8192).unwrap().blocks, 1);
    assert!(check_record_layout(&rec_with(&b13), 13, 8192).unwrap_err().contains("invalid block_id 252"));
    // compressed image with a hole carries the extra u16 (15+: 0x04/0x08/0x10; 12-14: 0x02)
    for (major, comp) in [(15u32, 0x08u8), (14, 0x02)] {
        let mut b = block(0, 0x10, 0, Some((300, 20, 0x01 | comp, Some(4000))), true);
        b.extend([0xFF, 0]);
        b.extend(vec![0u8; 300]);
        assert_eq!(check_record_layout(&rec_with(&b), major, 8192).unwrap().fpi_len, 300, "major {major}");
        // 0x02 is BKPIMAGE_APPLY in 15+: then the image is uncompressed, no extra u16 → wrong lengths
        if major == 14 {
            assert!(check_record_layout(&rec_with(&b), 15, 8192).is_err());
        }
    }
    let bad: Vec<(Vec<u8>, &str)> = vec![
        ([block(2, 0x20, 4, None, true), block(1, 0x20, 4, None, true), vec![0; 8]].concat(), "out-of-order"),
        ([block(0, 0x20, 4, None, true), block(0, 0x20, 4, None, true), vec![0; 8]].concat(), "out-of-order"),
        ([vec![40u8, 0, 0, 0], vec![0; 16]].concat(), "invalid block_id 40"),
        ([block(0, 0x80 | 0x20, 4, None, false), vec![0; 4]].concat(), "SAME_REL"),
        ([block(0, 0x20, 0, None, true)].concat(), "HAS_DATA set"),
        ([block(0, 0, 4, None, true), vec![0; 4]].concat(), "HAS_DATA not set"),
        ([block(0, 0x10, 0, Some((8192, 10, 0x01, None)), true), vec![0; 8192]].concat(), "HAS_HOLE set"),
        ([block(0, 0x10, 0, Some((100, 10, 0x00, None)), true), vec![0; 100]].concat(), "HAS_HOLE not set"),
        ([block(0, 0x10, 0, Some((8192, 0, 0x04, None)), true), vec![0; 8192]].concat(), "COMPRESSED set"),
        ([block(0, 0x20, 4, None, true), vec![0; 3]].concat(), "invalid length"),
        ([block(0, 0x20, 4, None, true), vec![0; 9]].concat(), "out-of-order"), // extra bytes are read as another header
        ([vec![0xFF, 10], vec![0; 3]].concat(), "invalid length"),
        (vec![0xFE, 1, 0], "invalid length"),
    ];
    for (b, want) in bad {
        let e = check_record_layout(&rec_with(&b), 15, 8192).unwrap_err();
        assert!(e.contains(want), "{e} !~ {want}");
    }
    // a record with no body at all (XLOG_SWITCH) is fine
    assert_eq!(check_record_layout(&rec_with(&[]), 15, 8192).unwrap().blocks, 0);
}

#[test]
fn bad_body_ends_the_scan_at_that_record_and_stats_split_fpi() {
    let mut w = W::new(1, 0xD110);
    w.msg(100);
    let mut body = block(0, 0x10 | 0x20, 40, Some((100, 50, 0x01, None)), true);
    body.extend([0xFF, 5]);
    body.extend(vec![0u8; 145]);
    let fpi = w.add(10, 0x30, &body);
    let mut bad = block(1, 0x80 | 0x20, 4, None, false);
    bad.extend(vec![0u8; 4]);
    let broken = w.add(10, 0x00, &bad);
    let o = scan(&w.buf, &params(0, 0));
    assert_eq!(end(&o), (broken, END_BAD_RECORD_BODY));
    let e = &o.records[32..64];
    assert_eq!((u64le(e, 0), u32le(e, 24), e[28], e[29], e[30]), (fpi, 100, 10, 0x30, 1));
    let slot = (10 * 16 + 3) * 24;
    let tot = u32le(e, 16) as u64;
    assert_eq!((u64le(&o.stats, slot), u64le(&o.stats, slot + 8), u64le(&o.stats, slot + 16)), (1, tot - 100, 100));
}

#[test]
fn invalid_rmid_depends_on_version() {
    for (magic, ok) in [(0xD10Du16, false), (0xD110, true)] {
        let mut w = W::new(1, magic);
        w.msg(10);
        let custom = w.add(130, 0, &main_data(4));
        w.msg(10);
        let o = scan(&w.buf, &params(0, 0));
        if ok {
            assert_eq!(o.count, 3);
        } else {
            assert_eq!(end(&o), (custom, END_BAD_RECORD_HEADER));
        }
        let mut w = W::new(1, magic);
        w.msg(10);
        let r = w.add(22, 0, &main_data(4));
        assert_eq!(end(&scan(&w.buf, &params(0, 0))), (r, END_BAD_RECORD_HEADER));
    }
}

#[test]
fn partial_record_is_carried_between_calls() {
    let mut w = W::new(1, 0xD110);
    w.msg(100);
    let big = w.msg(30000);
    w.msg(100);
    let p = ScanParams { buf_lsn: BASE, records_mode: true, start_lsn: 0, end_lsn: 0 };
    let first = scan_wal(&w.buf[..PAGE], &p, None).unwrap();
    assert_eq!(first.count, 1);
    assert!(first.end.is_none());
    let c = &first.carry;
    assert_eq!((c.next_record_lsn, c.partial_tot_len, c.next_page_lsn), (big, 30000 + 29, BASE + PAGE as u64));
    assert_eq!(c.partial.as_ref().unwrap().len(), PAGE - 40 - 128);
    // the wrong buffer start is an argument error, not an end of WAL
    let p2 = ScanParams { buf_lsn: BASE + 2 * PAGE as u64, records_mode: true, start_lsn: 0, end_lsn: 0 };
    assert!(scan_wal(&w.buf[2 * PAGE..3 * PAGE], &p2, Some(first.carry.clone())).is_err());
    // an empty buffer changes nothing
    let p0 = ScanParams { buf_lsn: BASE + PAGE as u64, records_mode: true, start_lsn: 0, end_lsn: 0 };
    let e = scan_wal(&[], &p0, Some(first.carry.clone())).unwrap();
    assert_eq!(e.count, 0);
}

#[test]
fn stats_equal_in_any_chunking() {
    let mut w = W::new(2, 0xD110);
    let mut i = 0;
    while w.pos < SEG + SEG / 2 {
        i += 1;
        w.add((i % 21) as u8, ((i % 16) << 4) as u8 & 0xB0, &main_data(20 + (i * 37) % 3000));
    }
    let (r1, e1, s1) = chunked(&w.buf, 1);
    let (r2, e2, s2) = chunked(&w.buf, 256);
    assert_eq!((r1, e1), (r2, e2));
    assert_eq!(s1, s2);
}

#[test]
fn page_magic_of_every_supported_major_is_read_and_a_later_one_refused() {
    // 0xD118: PostgreSQL 18 (read from 18.4 segments); 0xD119 and 0xD120 (development after 18): unknown
    for (magic, major) in [(0xD101u16, 12u32), (0xD106, 13), (0xD10D, 14), (0xD110, 15), (0xD113, 16), (0xD116, 17), (0xD118, 18)] {
        let mut w = W::new(1, magic);
        for _ in 0..20 {
            w.msg(100);
        }
        let o = scan(&w.buf, &params(0, 0));
        assert_eq!(lsns(&o), w.lsns, "magic {magic:04X} (PG {major})");
        assert_eq!(super::major_from_magic(magic), Some(major));
    }
    for magic in [0xD119u16, 0xD120] {
        let mut w = W::new(1, magic);
        w.msg(100);
        assert_eq!(end(&scan(&w.buf, &params(0, 0))), (BASE, END_BAD_MAGIC), "magic {magic:04X}");
    }
}

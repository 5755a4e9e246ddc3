//! PostgreSQL's CRC-32C (Castagnoli, reflected 0x82F63B78, init/final xor 0xFFFFFFFF).
//! Hardware paths come from `crc-fast` (runtime feature detection); a table fallback is kept
//! for tests as an independent reference.

use crc_fast::{checksum, checksum_combine, CrcAlgorithm, Digest};

const ALG: CrcAlgorithm = CrcAlgorithm::Crc32Iscsi;

/// Finalized CRC-32C of `data`.
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    checksum(ALG, data) as u32
}

/// CRC-32C of `prefix ++ data` given `init` = CRC-32C of `prefix` (a finalized value).
pub fn crc32c_append(init: u32, data: &[u8]) -> u32 {
    if init == 0 {
        // crc("") == 0, and combining with it is the identity; skip the combine
        return crc32c(data);
    }
    checksum_combine(ALG, init as u64, crc32c(data) as u64, data.len() as u64) as u32
}

/// Below this many payload bytes a record's CRC is computed with the CPU's CRC32 instruction
/// directly (x86-64 SSE4.2): `crc-fast`'s folding pays off on long inputs, while most WAL records
/// are a few dozen to a few hundred bytes, where setting up a digest costs more than the bytes.
const SMALL_RECORD: usize = 512;

#[cfg(target_arch = "x86_64")]
pub(crate) fn have_sse42() -> bool {
    use std::sync::OnceLock;
    static HAVE: OnceLock<bool> = OnceLock::new();
    *HAVE.get_or_init(|| std::arch::is_x86_feature_detected!("sse4.2"))
}

/// CRC-32C update without the init/final inversions (`crc` is the running, inverted value): eight
/// bytes per instruction, then at most one 4-, 2- and 1-byte step for the tail (a record's length
/// need not be a multiple of eight, and its 20 CRC-covered header bytes never are).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
#[inline]
unsafe fn crc32c_sse42(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8};
    let mut c = crc as u64;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        c = _mm_crc32_u64(c, u64::from_le_bytes(w.try_into().unwrap()));
    }
    let mut c = c as u32;
    let mut tail = words.remainder();
    if tail.len() >= 4 {
        c = _mm_crc32_u32(c, u32::from_le_bytes(tail[..4].try_into().unwrap()));
        tail = &tail[4..];
    }
    if tail.len() >= 2 {
        c = _mm_crc32_u16(c, u16::from_le_bytes(tail[..2].try_into().unwrap()));
        tail = &tail[2..];
    }
    if let Some(&b) = tail.first() {
        c = _mm_crc32_u8(c, b);
    }
    c
}

/// WAL record CRC: INIT, COMP(payload), COMP(header[0..20]), FIN (xlogreader.c ValidXLogRecord).
/// Always inlined so that, inside the scanner's SSE4.2 build of its record loop, the short-record
/// path becomes straight-line `crc32` instructions; long records take the folding path out of line.
#[inline(always)]
pub fn record_crc(payload: &[u8], header20: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if payload.len() < SMALL_RECORD && have_sse42() {
        // SAFETY: the CPU has SSE4.2 (checked above)
        return unsafe { !crc32c_sse42(crc32c_sse42(!0, payload), header20) };
    }
    record_crc_folding(payload, header20)
}

#[inline(never)]
fn record_crc_folding(payload: &[u8], header20: &[u8]) -> u32 {
    let mut d = Digest::new(ALG);
    d.update(payload);
    d.update(header20);
    d.finalize() as u32
}

/// Bitwise reference implementation (tests only).
pub fn crc32c_reference(init: u32, data: &[u8]) -> u32 {
    let mut c = !init;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
        }
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        let all: Vec<u8> = (0..=255u8).collect();
        assert_eq!(crc32c(&all), 0x9C44_184B);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        assert_eq!(crc32c(&[]), 0);
    }

    #[test]
    fn matches_reference_at_every_length_and_alignment() {
        let data: Vec<u8> = (0..2100u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for start in 0..8 {
            for len in 0..1025 {
                let s = &data[start..start + len];
                assert_eq!(crc32c(s), crc32c_reference(0, s), "start {start} len {len}");
            }
        }
    }

    #[test]
    fn append_continues() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 31) as u8).collect();
        for split in [0usize, 1, 7, 64, 4095, 5000] {
            let (a, b) = data.split_at(split);
            assert_eq!(crc32c_append(crc32c(a), b), crc32c(&data), "split {split}");
        }
        let payload = &data[24..300];
        let header = &data[0..20];
        assert_eq!(record_crc(payload, header), crc32c_append(crc32c(payload), header));
    }

    #[test]
    fn record_crc_small_and_large_paths_agree_with_the_reference() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8).collect();
        let header = &data[0..20];
        for start in 20..28 {
            for len in (0..1100).step_by(7).chain([SMALL_RECORD - 1, SMALL_RECORD, SMALL_RECORD + 1]) {
                let payload = &data[start..start + len];
                let want = crc32c_reference(crc32c_reference(0, payload), header);
                assert_eq!(record_crc(payload, header), want, "start {start} len {len}");
            }
        }
    }
}

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

/// WAL record CRC: INIT, COMP(payload), COMP(header[0..20]), FIN (xlogreader.c ValidXLogRecord).
#[inline]
pub fn record_crc(payload: &[u8], header20: &[u8]) -> u32 {
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
}

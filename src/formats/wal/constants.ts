/**
 * WAL layout constants, named after PostgreSQL's own (xlog_internal.h, xlogrecord.h).
 * Layouts: shared/reference/pg-formats.md §1.
 */

// XLogPageHeaderData / XLogLongPageHeaderData
export const SIZE_OF_XLOG_SHORT_PHD = 24;
export const SIZE_OF_XLOG_LONG_PHD = 40;
export const XLP_MAGIC_OFF = 0;
export const XLP_INFO_OFF = 2;
export const XLP_TLI_OFF = 4;
export const XLP_PAGEADDR_OFF = 8;
export const XLP_REM_LEN_OFF = 16;
export const XLP_SYSID_OFF = 24;
export const XLP_SEG_SIZE_OFF = 32;
export const XLP_XLOG_BLCKSZ_OFF = 36;

// xlp_info bits (12–18: 18.4 pages carry XLP_BKP_REMOVABLE 0x0004 like 17; its removal is later than 18)
export const XLP_FIRST_IS_CONTRECORD = 0x0001;
export const XLP_LONG_HEADER = 0x0002;
export const XLP_BKP_REMOVABLE = 0x0004;
export const XLP_FIRST_IS_OVERWRITE_CONTRECORD = 0x0008;
export const XLP_ALL_FLAGS = 0x000f;

// XLogRecord
export const SIZE_OF_XLOG_RECORD = 24;
export const XL_TOT_LEN_OFF = 0;
export const XL_XID_OFF = 4;
export const XL_PREV_OFF = 8;
export const XL_INFO_OFF = 16;
export const XL_RMID_OFF = 17;
export const XL_CRC_OFF = 20;
/** bytes of the header covered by the CRC (everything before xl_crc) */
export const XL_CRC_COVERED = 20;
export const XLR_INFO_MASK = 0x0f;
export const XLR_RMGR_INFO_MASK = 0xf0;
/** MaxAllocSize: xlogreader refuses longer records */
export const MAX_RECORD_LENGTH = 0x3fffffff;

// record fragment ids
export const XLR_MAX_BLOCK_ID = 32;
export const XLR_BLOCK_ID_DATA_SHORT = 255;
export const XLR_BLOCK_ID_DATA_LONG = 254;
export const XLR_BLOCK_ID_ORIGIN = 253;
export const XLR_BLOCK_ID_TOPLEVEL_XID = 252;

// XLogRecordBlockHeader.fork_flags
export const BKPBLOCK_FORK_MASK = 0x0f;
export const BKPBLOCK_HAS_IMAGE = 0x10;
export const BKPBLOCK_HAS_DATA = 0x20;
export const BKPBLOCK_WILL_INIT = 0x40;
export const BKPBLOCK_SAME_REL = 0x80;

// XLogRecordBlockImageHeader.bimg_info — differs before and after 15
export const BKPIMAGE_HAS_HOLE = 0x01;
export const BKPIMAGE_IS_COMPRESSED_V14 = 0x02;
export const BKPIMAGE_APPLY_V14 = 0x04;
export const BKPIMAGE_APPLY = 0x02;
export const BKPIMAGE_COMPRESS_PGLZ = 0x04;
export const BKPIMAGE_COMPRESS_LZ4 = 0x08;
export const BKPIMAGE_COMPRESS_ZSTD = 0x10;

// resource managers
export const RM_XLOG_ID = 0;
export const RM_XACT_ID = 1;
export const RM_MAX_BUILTIN_ID = 21;
export const RM_MIN_CUSTOM_ID = 128;
export const XLOG_SWITCH = 0x40;
export const XLOG_XACT_OPMASK = 0x70;

export const FORK_NAMES = ['main', 'fsm', 'vm', 'init'] as const;

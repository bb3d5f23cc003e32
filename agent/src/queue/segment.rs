//! Segment files and their index files.
//!
//! - `RRRRRRRRRR-SSSSSSSSSSSSSSSSSSSS.seg`: records of run R from sequence S on, in sequence
//!   order. Record = `len u32 | crc32c u32 | run u32 | seq u64 | payload` (little endian; the
//!   CRC covers run, seq and payload).
//! - `RRRRRRRRRR-SSSSSSSSSSSSSSSSSSSS.idx`: written once the segment is sealed and fsynced:
//!   postcard `{ seg_bytes, entries }` followed by its CRC32C. Recovery trusts it when the CRC
//!   matches and the segment still has `seg_bytes` bytes, so only segments without one (the tail
//!   of a run that ended in a crash) are scanned.

use super::BatchMeta;
use super::store::StoreFile;
use crate::codec::BatchId;
use serde::{Deserialize, Serialize};
use std::io;

/// `len u32 | crc32c u32 | run u32 | seq u64`.
pub const HEADER_LEN: usize = 20;
/// Upper bound of one record's payload; a larger length field means a damaged header.
pub const MAX_PAYLOAD: u32 = 256 << 20;

/// Where one record is and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    /// Offset of the record header in the file.
    pub offset: u64,
    pub len: u32,
    pub meta: BatchMeta,
    /// A gap notice written by the queue (re-announced if it is ever evicted undelivered).
    pub notice: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    pub corrupt_records: u64,
    pub truncated_bytes: u64,
}

pub fn seg_name(run: u32, first_seq: u64) -> String {
    format!("{run:010}-{first_seq:020}.seg")
}

pub fn idx_name(run: u32, first_seq: u64) -> String {
    format!("{run:010}-{first_seq:020}.idx")
}

/// `(run, first_seq, is_index)` of a segment or index file name; `None` for other files.
pub fn parse_name(name: &str) -> Option<(u32, u64, bool)> {
    let (stem, idx) = match (name.strip_suffix(".seg"), name.strip_suffix(".idx")) {
        (Some(s), _) => (s, false),
        (_, Some(s)) => (s, true),
        _ => return None,
    };
    let (r, s) = stem.split_once('-')?;
    if r.len() != 10 || s.len() != 20 {
        return None;
    }
    Some((r.parse().ok()?, s.parse().ok()?, idx))
}

fn crc(id: BatchId, payload: &[u8]) -> u32 {
    let mut head = [0u8; 12];
    head[..4].copy_from_slice(&id.run.to_le_bytes());
    head[4..].copy_from_slice(&id.seq.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&head), payload)
}

/// The header written before `payload` (the payload itself is written from where it is, with no
/// copy).
pub fn record_header(id: BatchId, payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[4..8].copy_from_slice(&crc(id, payload).to_le_bytes());
    h[8..12].copy_from_slice(&id.run.to_le_bytes());
    h[12..].copy_from_slice(&id.seq.to_le_bytes());
    h
}

/// Metadata of a payload for the index, read from its envelope header, and whether it is a gap
/// notice.
pub fn meta_of(payload: &[u8]) -> (BatchMeta, bool) {
    match crate::codec::decode(payload) {
        Ok(env) => (
            BatchMeta {
                samples: env.samples,
                t_first_us: env.t_first_us,
                t_last_us: env.t_last_us,
            },
            env.kind == crate::codec::Kind::Gap,
        ),
        Err(_) => (BatchMeta::default(), false),
    }
}

#[derive(Serialize, Deserialize)]
struct IndexFile {
    seg_bytes: u64,
    entries: Vec<Entry>,
}

pub fn encode_index(seg_bytes: u64, entries: &[Entry]) -> Vec<u8> {
    let file = IndexFile {
        seg_bytes,
        entries: entries.to_vec(),
    };
    let mut out = postcard::to_stdvec(&file).unwrap_or_default();
    let c = crc32c::crc32c(&out);
    out.extend_from_slice(&c.to_le_bytes());
    out
}

/// The entries of an index file if it is intact and describes a segment of `seg_bytes` bytes.
pub fn decode_index(bytes: &[u8], seg_bytes: u64) -> Option<Vec<Entry>> {
    let split = bytes.len().checked_sub(4)?;
    let (body, tail) = bytes.split_at(split);
    let want = u32::from_le_bytes(tail.try_into().ok()?);
    if crc32c::crc32c(body) != want {
        return None;
    }
    let file: IndexFile = postcard::from_bytes(body).ok()?;
    (file.seg_bytes == seg_bytes).then_some(file.entries)
}

/// Reads a segment sequentially in large chunks.
struct Reader<'a, F: StoreFile> {
    file: &'a F,
    size: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    at: u64,
}

impl<F: StoreFile> Reader<'_, F> {
    /// Bytes `[offset, offset + len)`, which must lie within the file.
    fn get(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        let end = offset + len as u64;
        if offset < self.at || end > self.at + self.buf.len() as u64 {
            let want = len.max(1 << 20) as u64;
            let n = want.min(self.size - offset) as usize;
            self.buf.resize(n, 0);
            self.file.read_exact_at(&mut self.buf, offset)?;
            self.at = offset;
        }
        let start = (offset - self.at) as usize;
        Ok(&self.buf[start..start + len])
    }
}

/// Scans a segment of run `run` starting at `first_seq`: keeps every intact record, skips (and
/// counts) records whose CRC fails or that are out of order, and cuts a torn tail off (a length
/// running past the end of the file, or an impossible one).
pub fn scan<F: StoreFile>(
    file: &mut F,
    run: u32,
    first_seq: u64,
) -> io::Result<(Vec<Entry>, u64, Scan)> {
    let size = file.size()?;
    let mut r = Reader {
        file: &*file,
        size,
        buf: Vec::new(),
        at: 0,
    };
    let mut scan = Scan::default();
    let mut entries: Vec<Entry> = Vec::new();
    let mut offset = 0u64;
    while offset + HEADER_LEN as u64 <= size {
        let head = r.get(offset, HEADER_LEN)?;
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let (len, want, rrun) = (word(0), word(4), word(8));
        let mut seqb = [0u8; 8];
        seqb.copy_from_slice(&head[12..20]);
        let seq = u64::from_le_bytes(seqb);
        let end = offset + HEADER_LEN as u64 + u64::from(len);
        if len > MAX_PAYLOAD || end > size {
            break;
        }
        let payload = r.get(offset + HEADER_LEN as u64, len as usize)?;
        let id = BatchId { run: rrun, seq };
        let in_order =
            rrun == run && seq >= first_seq && entries.last().is_none_or(|l| seq > l.seq);
        if in_order && crc(id, payload) == want {
            let (meta, notice) = meta_of(payload);
            entries.push(Entry {
                seq,
                offset,
                len,
                meta,
                notice,
            });
        } else {
            scan.corrupt_records += 1;
        }
        offset = end;
    }
    if offset < size {
        scan.truncated_bytes = size - offset;
        file.set_len(offset)?;
    }
    Ok((entries, offset, scan))
}

/// Reads and verifies one record's payload.
pub fn read_record<F: StoreFile>(file: &F, run: u32, e: &Entry) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; HEADER_LEN + e.len as usize];
    file.read_exact_at(&mut buf, e.offset)?;
    let want = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let payload = buf.split_off(HEADER_LEN);
    let id = BatchId { run, seq: e.seq };
    if crc(id, &payload) != want {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("record {id} fails its checksum"),
        ));
    }
    Ok(payload)
}

//! One segment file: records appended in sequence order, recovered by a sequential scan.

use super::BatchMeta;
use crate::codec::BatchId;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// `len u32 | crc32c u32 | run u32 | seq u64`.
pub const HEADER_LEN: usize = 20;
/// Upper bound of one record's payload; a larger length field means a damaged header.
pub const MAX_PAYLOAD: u32 = 256 << 20;

#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub seq: u64,
    /// Offset of the record header in the file.
    pub offset: u64,
    pub len: u32,
    pub meta: BatchMeta,
}

#[derive(Debug)]
pub struct Segment {
    pub run: u32,
    pub first_seq: u64,
    pub path: PathBuf,
    pub bytes: u64,
    pub entries: Vec<Entry>,
    /// Records neither delivered nor evicted.
    pub live: usize,
    reader: File,
}

#[derive(Debug, Default)]
pub struct Scan {
    pub corrupt_records: u64,
    pub truncated_bytes: u64,
}

pub fn file_name(run: u32, first_seq: u64) -> String {
    format!("{run:010}-{first_seq:020}.seg")
}

/// Segment files in `dir` as (run, first_seq, path); other files are ignored.
pub fn list(dir: &Path) -> io::Result<Vec<(u32, u64, PathBuf)>> {
    let mut out = Vec::new();
    for ent in fs::read_dir(dir)? {
        let ent = ent?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".seg") else {
            continue;
        };
        let Some((r, s)) = stem.split_once('-') else {
            continue;
        };
        if let (Ok(r), Ok(s)) = (r.parse(), s.parse()) {
            out.push((r, s, ent.path()));
        }
    }
    Ok(out)
}

fn crc(id: BatchId, payload: &[u8]) -> u32 {
    let mut head = [0u8; 12];
    head[..4].copy_from_slice(&id.run.to_le_bytes());
    head[4..].copy_from_slice(&id.seq.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&head), payload)
}

pub fn encode_record(id: BatchId, payload: &[u8]) -> Vec<u8> {
    let mut rec = Vec::with_capacity(HEADER_LEN + payload.len());
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rec.extend_from_slice(&crc(id, payload).to_le_bytes());
    rec.extend_from_slice(&id.run.to_le_bytes());
    rec.extend_from_slice(&id.seq.to_le_bytes());
    rec.extend_from_slice(payload);
    rec
}

/// Metadata of a payload for the index: read from its envelope header.
pub fn meta_of(payload: &[u8]) -> BatchMeta {
    match crate::codec::decode(payload) {
        Ok(env) => BatchMeta {
            samples: env.samples,
            t_first_us: env.t_first_us,
            t_last_us: env.t_last_us,
        },
        Err(_) => BatchMeta {
            samples: 0,
            t_first_us: 0,
            t_last_us: 0,
        },
    }
}

impl Segment {
    pub fn create(dir: &Path, run: u32, first_seq: u64) -> io::Result<Segment> {
        let path = dir.join(file_name(run, first_seq));
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        // The new name must survive a crash too.
        File::open(dir)?.sync_all()?;
        let reader = File::open(&path)?;
        Ok(Segment {
            run,
            first_seq,
            path,
            bytes: 0,
            entries: Vec::new(),
            live: 0,
            reader,
        })
    }

    pub fn append_handle(&self) -> io::Result<File> {
        OpenOptions::new().append(true).open(&self.path)
    }

    /// Scans a segment: keeps every intact record, skips records whose CRC fails (their length
    /// is plausible and the next header follows), and truncates a torn tail.
    pub fn recover(path: &Path, run: u32, first_seq: u64) -> io::Result<(Segment, Scan)> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let size = file.metadata()?.len();
        let mut r = BufReader::with_capacity(1 << 20, &file);
        let mut scan = Scan::default();
        let mut entries = Vec::new();
        let mut offset = 0u64;
        let mut head = [0u8; HEADER_LEN];
        let mut payload = Vec::new();
        let mut last_seq: Option<u64> = None;
        while offset + HEADER_LEN as u64 <= size {
            r.read_exact(&mut head)?;
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            let want = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            let rrun = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
            let mut seqb = [0u8; 8];
            seqb.copy_from_slice(&head[12..20]);
            let seq = u64::from_le_bytes(seqb);
            let end = offset + HEADER_LEN as u64 + u64::from(len);
            if len > MAX_PAYLOAD || end > size {
                break; // torn or garbage tail
            }
            payload.resize(len as usize, 0);
            r.read_exact(&mut payload)?;
            let id = BatchId { run: rrun, seq };
            let in_order = rrun == run && seq >= first_seq && last_seq.is_none_or(|l| seq > l);
            if in_order && crc(id, &payload) == want {
                entries.push(Entry {
                    seq,
                    offset,
                    len,
                    meta: meta_of(&payload),
                });
                last_seq = Some(seq);
            } else {
                scan.corrupt_records += 1;
            }
            offset = end;
        }
        if offset < size {
            scan.truncated_bytes = size - offset;
            tracing::warn!(
                "{}: cut {} bytes of torn tail at offset {offset}",
                path.display(),
                size - offset
            );
            file.set_len(offset)?;
            file.sync_all()?;
        }
        if scan.corrupt_records > 0 {
            tracing::warn!(
                "{}: skipped {} records with a bad checksum",
                path.display(),
                scan.corrupt_records
            );
        }
        let live = entries.len();
        Ok((
            Segment {
                run,
                first_seq,
                path: path.to_owned(),
                bytes: offset,
                entries,
                live,
                reader: File::open(path)?,
            },
            scan,
        ))
    }

    /// Reads and verifies one record's payload.
    pub fn read(&self, e: &Entry) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; HEADER_LEN + e.len as usize];
        self.reader.read_exact_at(&mut buf, e.offset)?;
        let want = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let payload = buf.split_off(HEADER_LEN);
        let id = BatchId {
            run: self.run,
            seq: e.seq,
        };
        if crc(id, &payload) != want {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: record {id} fails its checksum", self.path.display()),
            ));
        }
        Ok(payload)
    }
}

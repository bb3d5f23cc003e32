//! The receiver's state file: the [`Ledger`] (dedup, accounting, counters) and the length of
//! every output file at the moment of the snapshot.
//!
//! Layout: the 8-byte magic `PLRXSTAT`, the format version (u32 little-endian), the CRC-32C of
//! the body (u32 little-endian), then the body in postcard. The version comes first so that a
//! file from a newer pitlink is recognised as such instead of being misread.
//!
//! Written atomically ([`save`]: temporary file, fsync, rename, fsync of the directory), so after
//! a crash the file is either the previous snapshot or the new one, never a mix.

use super::ledger::Ledger;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"PLRXSTAT";
/// The state format this build writes and reads.
pub const STATE_VERSION: u32 = 1;
const HEADER: usize = 16;

/// One snapshot of the receiver.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Output file (path relative to the output root; `""` for a single JSONL file) → its length
    /// in bytes when the snapshot was taken. Every byte below that length belongs to a batch the
    /// ledger knows; bytes beyond it were written after the snapshot, their batches were not
    /// acknowledged, and the broker will re-deliver them.
    pub outputs: BTreeMap<String, u64>,
    pub ledger: Ledger,
}

/// Why a state file cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("not a pitlink receiver state file (no PLRXSTAT header)")]
    NotAState,
    #[error(
        "state format version {found} is newer than this pitlink supports (version {supported}); run a pitlink at least as new as the one that wrote it"
    )]
    NewerVersion { found: u32, supported: u32 },
    #[error("state format version {0} is no longer supported")]
    OlderVersion(u32),
    #[error("corrupt state: {0}")]
    Corrupt(String),
}

/// [`State`], borrowed: the same bytes without copying the ledger.
#[derive(Serialize)]
struct StateRef<'a> {
    outputs: &'a BTreeMap<String, u64>,
    ledger: &'a Ledger,
}

/// Serialises a state with its header.
pub fn encode(outputs: &BTreeMap<String, u64>, ledger: &Ledger) -> Vec<u8> {
    // Serialising plain data into a Vec cannot fail; an empty body would be refused on reading.
    let body = postcard::to_stdvec(&StateRef { outputs, ledger }).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&STATE_VERSION.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Parses a state file's bytes.
pub fn decode(bytes: &[u8]) -> Result<State, StateError> {
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(StateError::NotAState);
    }
    let word = |at: usize| {
        bytes
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
    };
    let version = word(8).ok_or(StateError::NotAState)?;
    if version > STATE_VERSION {
        return Err(StateError::NewerVersion {
            found: version,
            supported: STATE_VERSION,
        });
    }
    if version < STATE_VERSION {
        return Err(StateError::OlderVersion(version));
    }
    let crc = word(12).ok_or_else(|| StateError::Corrupt("truncated header".into()))?;
    let body = &bytes[HEADER..];
    let actual = crc32c::crc32c(body);
    if actual != crc {
        return Err(StateError::Corrupt(format!(
            "checksum mismatch over {} body bytes (stored {crc:08x}, computed {actual:08x})",
            body.len()
        )));
    }
    let (state, rest) =
        postcard::take_from_bytes::<State>(body).map_err(|e| StateError::Corrupt(e.to_string()))?;
    if !rest.is_empty() {
        return Err(StateError::Corrupt(format!(
            "{} bytes after the end of the state",
            rest.len()
        )));
    }
    Ok(state)
}

/// Reads the state at `path`; `None` if there is none yet. Any other failure is an error that
/// names the file and the fix: a state that cannot be read is never silently replaced.
pub fn load(path: &Path) -> anyhow::Result<Option<State>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => anyhow::bail!("{}: cannot read the receiver state: {e}", path.display()),
    };
    decode(&bytes).map(Some).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}. The receiver will not start over silently: either fix that, or move the state file and the output away to start afresh (the broker does not re-deliver batches already acknowledged, so those stay only in the old output)",
            path.display()
        )
    })
}

/// Writes `bytes` to `path` atomically and durably: a temporary file beside it, fsync, rename
/// over `path`, fsync of the directory.
pub fn save(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = tmp_path(path);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path)
}

/// Fsyncs the directory holding `path` (so a rename or a new file in it is durable).
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// The default state path beside an output: `<out>.state`.
pub fn default_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".state");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{BatchId, data_envelope, encode as encode_batch};
    use crate::receive::ledger::Verdict;
    use proptest::prelude::*;
    use sensor_drivers::Sample;

    fn ledger_with(n: u64) -> Ledger {
        let mut l = Ledger::new();
        for seq in (0..n).filter(|s| s % 3 != 1) {
            let env = data_envelope(
                "car",
                BatchId { run: 1, seq },
                "s",
                &[Sample {
                    t_us: 1000 + seq,
                    channel: 0,
                    value: 1.0,
                }],
            );
            if let Verdict::New(b) = l.classify(&encode_batch(&env)) {
                l.commit(&b, 2000 + seq);
            }
        }
        l
    }

    #[test]
    fn round_trips_and_keeps_dedup() {
        let mut s = State {
            outputs: BTreeMap::from([(String::new(), 1234)]),
            ledger: ledger_with(30),
        };
        let bytes = encode(&s.outputs, &s.ledger);
        let mut back = decode(&bytes).expect("decodes");
        assert_eq!(back.outputs, s.outputs);
        assert_eq!(back.ledger.summary(), s.ledger.summary());
        // The restored ledger still knows what it wrote.
        let env = data_envelope::<Sample>("car", BatchId { run: 1, seq: 3 }, "s", &[]);
        let b = encode_batch(&env);
        assert!(matches!(
            back.ledger.classify(&b),
            Verdict::Duplicate { .. }
        ));
        assert!(matches!(s.ledger.classify(&b), Verdict::Duplicate { .. }));
    }

    #[test]
    fn refuses_newer_versions_and_corruption() {
        let bytes = encode(&BTreeMap::new(), &Ledger::new());
        let mut newer = bytes.clone();
        newer[8..12].copy_from_slice(&(STATE_VERSION + 1).to_le_bytes());
        assert_eq!(
            decode(&newer).expect_err("newer"),
            StateError::NewerVersion {
                found: STATE_VERSION + 1,
                supported: STATE_VERSION
            }
        );
        let mut flipped = encode(&BTreeMap::from([("a".into(), 7)]), &ledger_with(10));
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert!(matches!(decode(&flipped), Err(StateError::Corrupt(_))));
        assert!(matches!(decode(b"{}"), Err(StateError::NotAState)));
    }

    #[test]
    fn load_names_the_file_and_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("out.jsonl.state");
        assert!(load(&p).expect("missing is fine").is_none());
        std::fs::write(&p, b"PLRXSTAT\x63\0\0\0\0\0\0\0").expect("write");
        let e = load(&p).expect_err("newer").to_string();
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(e.contains("newer than this pitlink"), "{e}");
        assert!(e.contains("move the state file"), "{e}");
        save(&p, &encode(&BTreeMap::new(), &Ledger::new())).expect("save");
        assert!(load(&p).expect("valid").is_some());
        assert!(!tmp_path(&p).exists());
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn decode_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..200), crc_ok in any::<bool>()) {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&STATE_VERSION.to_le_bytes());
            let crc = if crc_ok { crc32c::crc32c(&tail) } else { 0 };
            b.extend_from_slice(&crc.to_le_bytes());
            b.extend_from_slice(&tail);
            let _ = decode(&b);
        }
    }
}

//! A simulated disk for the model tests: files in memory that remember how much of them is
//! durable, a capacity that makes writes fail, and a crash that keeps only what was fsynced plus
//! an arbitrary part of the rest (a torn write, possibly with a hole of zeros).
//!
//! Simplifications: names are durable as soon as they change (creation, rename and removal):
//! the real store fsyncs the directory after creating and renaming; a removal that does not
//! survive a crash would only bring back batches already delivered or given up on.

use super::store::{Store, StoreFile, SyncFn};
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    /// Bytes of `data` known to be on the platter.
    synced: usize,
}

#[derive(Debug, Default)]
struct Fs {
    inodes: Vec<Inode>,
    names: BTreeMap<String, usize>,
    /// Total bytes the linked files may hold; writes past it fail with `StorageFull`.
    capacity: Option<u64>,
}

impl Fs {
    fn used(&self) -> u64 {
        self.names
            .values()
            .map(|&i| self.inodes[i].data.len() as u64)
            .sum()
    }

    fn room(&self) -> u64 {
        self.capacity
            .map_or(u64::MAX, |c| c.saturating_sub(self.used()))
    }
}

#[derive(Debug, Clone, Default)]
pub struct SimStore {
    fs: Arc<Mutex<Fs>>,
}

fn full() -> io::Error {
    io::Error::new(io::ErrorKind::StorageFull, "simulated disk full")
}

impl SimStore {
    fn lock(&self) -> MutexGuard<'_, Fs> {
        self.fs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.lock().capacity = bytes;
    }

    /// Power loss: every file keeps its synced bytes plus `keep(unsynced_len)` more bytes, of
    /// which `zero(kept_unsynced)` (start, len) are zeroed. Open handles must be dropped first.
    pub fn crash(
        &self,
        mut keep: impl FnMut(usize) -> usize,
        mut zero: impl FnMut(usize) -> Option<(usize, usize)>,
    ) {
        let mut fs = self.lock();
        for ino in &mut fs.inodes {
            let unsynced = ino.data.len() - ino.synced;
            let kept = keep(unsynced).min(unsynced);
            ino.data.truncate(ino.synced + kept);
            if let Some((s, n)) = zero(kept) {
                let from = ino.synced + s.min(kept);
                let to = (from + n).min(ino.data.len());
                ino.data[from..to].fill(0);
            }
            ino.synced = ino.data.len();
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.lock().names.keys().cloned().collect()
    }

    pub fn size_of(&self, name: &str) -> Option<u64> {
        let fs = self.lock();
        fs.names.get(name).map(|&i| fs.inodes[i].data.len() as u64)
    }

    pub fn total_bytes(&self) -> u64 {
        self.lock().used()
    }
}

#[derive(Debug)]
pub struct SimFile {
    fs: Arc<Mutex<Fs>>,
    ino: usize,
}

impl SimFile {
    fn lock(&self) -> MutexGuard<'_, Fs> {
        self.fs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StoreFile for SimFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.lock().inodes[self.ino].data.len() as u64)
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let mut fs = self.lock();
        let room = fs.room();
        let ino = &mut fs.inodes[self.ino];
        if (data.len() as u64) > room {
            // A partial write, then the error.
            ino.data.extend_from_slice(&data[..room as usize]);
            return Err(full());
        }
        ino.data.extend_from_slice(data);
        Ok(())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let fs = self.lock();
        let data = &fs.inodes[self.ino].data;
        let start = offset as usize;
        let end = start + buf.len();
        if end > data.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end",
            ));
        }
        buf.copy_from_slice(&data[start..end]);
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut fs = self.lock();
        let ino = &mut fs.inodes[self.ino];
        ino.data.resize(len as usize, 0);
        ino.synced = ino.synced.min(len as usize);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut fs = self.lock();
        let ino = &mut fs.inodes[self.ino];
        ino.synced = ino.data.len();
        Ok(())
    }

    fn syncer(&self) -> io::Result<SyncFn> {
        let fs = self.fs.clone();
        let ino = self.ino;
        let upto = self.lock().inodes[ino].data.len();
        Ok(Box::new(move || {
            let mut fs = fs.lock().unwrap_or_else(|p| p.into_inner());
            let i = &mut fs.inodes[ino];
            i.synced = i.synced.max(upto.min(i.data.len()));
            Ok(())
        }))
    }
}

impl Store for SimStore {
    type File = SimFile;

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.names())
    }

    fn create(&self, name: &str) -> io::Result<SimFile> {
        let mut fs = self.lock();
        fs.inodes.push(Inode::default());
        let ino = fs.inodes.len() - 1;
        fs.names.insert(name.to_owned(), ino);
        Ok(SimFile {
            fs: self.fs.clone(),
            ino,
        })
    }

    fn open(&self, name: &str) -> io::Result<SimFile> {
        let fs = self.lock();
        match fs.names.get(name) {
            Some(&ino) => Ok(SimFile {
                fs: self.fs.clone(),
                ino,
            }),
            None => Err(io::Error::new(io::ErrorKind::NotFound, name.to_owned())),
        }
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.lock().names.remove(name);
        Ok(())
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        let fs = self.lock();
        Ok(fs.names.get(name).map(|&i| fs.inodes[i].data.clone()))
    }

    fn write_atomic(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let mut fs = self.lock();
        // The new content goes to a temporary file first: it needs room of its own.
        if data.len() as u64 > fs.room() {
            return Err(full());
        }
        fs.inodes.push(Inode {
            data: data.to_vec(),
            synced: data.len(),
        });
        let ino = fs.inodes.len() - 1;
        fs.names.insert(name.to_owned(), ino);
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from("sim").join(name)
    }
}

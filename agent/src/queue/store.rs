//! The queue's view of storage: a flat directory of named files.
//!
//! The queue only talks to storage through [`Store`] and [`StoreFile`], so its logic can run on
//! the real disk ([`DiskStore`]) or on the simulated disk of the model tests, which drops
//! everything not fsynced when it "crashes".

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// An fdatasync to run later, possibly on another thread (group commit off the write path).
pub type SyncFn = Box<dyn FnOnce() -> io::Result<()> + Send>;

pub trait StoreFile: fmt::Debug + Send {
    fn size(&self) -> io::Result<u64>;
    /// Appends `data` at the end of the file.
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// Appends `a` then `b` (one record: header and payload).
    fn append2(&mut self, a: &[u8], b: &[u8]) -> io::Result<()> {
        self.append(a)?;
        self.append(b)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// fdatasync now.
    fn sync(&self) -> io::Result<()>;
    /// An fdatasync of this file that can run on another thread; it covers everything appended
    /// before this call.
    fn syncer(&self) -> io::Result<SyncFn>;
}

pub trait Store: fmt::Debug + Clone + Send + 'static {
    type File: StoreFile;
    /// Names of the files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Creates (or truncates) a file; its name is durable when this returns.
    fn create(&self, name: &str) -> io::Result<Self::File>;
    /// Opens an existing file for reading and writing.
    fn open(&self, name: &str) -> io::Result<Self::File>;
    fn remove(&self, name: &str) -> io::Result<()>;
    /// A whole small file, `None` if it does not exist.
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// Replaces a small file atomically and durably (temp file, fsync, rename, directory fsync).
    fn write_atomic(&self, name: &str, data: &[u8]) -> io::Result<()>;
    /// For messages.
    fn path(&self, name: &str) -> PathBuf;
}

/// A real directory.
#[derive(Debug, Clone)]
pub struct DiskStore {
    dir: PathBuf,
}

impl DiskStore {
    pub fn new(dir: &Path) -> io::Result<DiskStore> {
        fs::create_dir_all(dir)?;
        Ok(DiskStore {
            dir: dir.to_owned(),
        })
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

#[derive(Debug)]
pub struct DiskFile {
    file: File,
}

impl StoreFile for DiskFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)
    }

    /// One `writev` for header and payload in the common case.
    fn append2(&mut self, a: &[u8], b: &[u8]) -> io::Result<()> {
        let mut bufs = [io::IoSlice::new(a), io::IoSlice::new(b)];
        let mut bufs = &mut bufs[..];
        while !bufs.is_empty() {
            match self.file.write_vectored(bufs) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => io::IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn syncer(&self) -> io::Result<SyncFn> {
        let f = self.file.try_clone()?;
        Ok(Box::new(move || f.sync_data()))
    }
}

impl Store for DiskStore {
    type File = DiskFile;

    fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for ent in fs::read_dir(&self.dir)? {
            if let Ok(name) = ent?.file_name().into_string() {
                out.push(name);
            }
        }
        Ok(out)
    }

    fn create(&self, name: &str) -> io::Result<DiskFile> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(self.dir.join(name))?;
        // A file of that name can only be left by an earlier failed attempt: start it afresh.
        file.set_len(0)?;
        self.sync_dir()?;
        Ok(DiskFile { file })
    }

    fn open(&self, name: &str) -> io::Result<DiskFile> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(self.dir.join(name))?;
        Ok(DiskFile { file })
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.dir.join(name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.dir.join(name)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_atomic(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_data()?;
        }
        fs::rename(&tmp, self.dir.join(name))?;
        self.sync_dir()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

//! Blob bytes as files beside the database: the SQLite backend's `BlobBytes`, on a hub and
//! on a one-node cloud.
//!
//! ```text
//! media/blobs/9f/9f86d0…           complete blobs, named by their SHA-256 (stored once)
//! media/partial/OWNER-9f86d0…      unfinished uploads (OWNER: the owner key in hex)
//! ```
//! An upload's length is its file's length, fsynced before each chunk's answer, so an
//! upload resumes after a restart exactly where the last acknowledged chunk ended. A
//! complete upload is renamed into place and its directory fsynced. The files count
//! against `storage.quota_bytes` with the database: what is on disk when the store opens,
//! then every change ([`Store::add_blob_bytes`]).
//!
//! One process owns the files: appends to one upload are serialised by the caller (the
//! engine's lock per upload), not here.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use outpost_shared::media::BlobId;
use outpost_storage::{BlobAppend, BlobBytes, BytesError};
use sha2::Digest as _;
use tokio::io::AsyncWriteExt as _;

use crate::Store;

/// Complete blobs and unfinished uploads under one `media/` directory. Cheap to clone.
#[derive(Clone)]
pub struct FileBytes {
    root: Arc<Path>,
    /// Whose quota count the files are in.
    store: Store,
}

impl std::fmt::Debug for FileBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBytes").field("root", &self.root).finish_non_exhaustive()
    }
}

/// Bytes of the files under `dir` (recursively).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Makes a rename or a new file durable: fsync the directory holding it.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Runs blocking file work off the runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> Result<T, BytesError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| BytesError::Io(e.to_string()))?.map_err(BytesError::from)
}

impl FileBytes {
    /// Opens (creating) the blob files under `root` and counts them into `store`'s quota.
    pub fn open(root: PathBuf, store: Store) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join("blobs"))?;
        std::fs::create_dir_all(root.join("partial"))?;
        store.add_blob_bytes(signed(dir_bytes(&root)));
        Ok(Self { root: root.into(), store })
    }

    /// Where a complete blob's bytes are.
    pub fn blob_path(&self, blob: &BlobId) -> PathBuf {
        let hex = blob.hex();
        self.root.join("blobs").join(&hex[..2]).join(hex)
    }

    /// Where `owner`'s unfinished upload of `blob` is.
    pub fn partial_path(&self, owner: &str, blob: &BlobId) -> PathBuf {
        self.root.join("partial").join(format!("{}-{}", hex_of(owner), blob.hex()))
    }
}

impl BlobBytes for FileBytes {
    type Append = FileAppend;

    async fn partial_len(&self, owner: &str, blob: BlobId) -> Result<u64, BytesError> {
        Ok(tokio::fs::metadata(self.partial_path(owner, &blob)).await.map(|m| m.len()).unwrap_or(0))
    }

    async fn partial_create(&self, owner: &str, blob: BlobId) -> Result<(), BytesError> {
        let path = self.partial_path(owner, &blob);
        blocking(move || {
            std::fs::OpenOptions::new().create(true).append(true).open(&path)?.sync_all()?;
            sync_dir(path.parent().unwrap_or(Path::new(".")))
        })
        .await
    }

    async fn append(&self, owner: &str, blob: BlobId, offset: u64) -> Result<FileAppend, BytesError> {
        let path = self.partial_path(owner, &blob);
        let have = tokio::fs::metadata(&path).await.map(|m| m.len()).unwrap_or(0);
        if offset != have {
            return Err(BytesError::Offset(have));
        }
        let file = tokio::fs::OpenOptions::new().create(true).append(true).open(&path).await?;
        Ok(FileAppend { file, have, written: 0, store: self.store.clone() })
    }

    async fn partial_touched(&self, owner: &str, blob: BlobId) -> Result<Option<u64>, BytesError> {
        Ok(tokio::fs::metadata(self.partial_path(owner, &blob))
            .await
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(0)))
    }

    async fn partial_digest(&self, owner: &str, blob: BlobId, head: usize) -> Result<([u8; 32], Vec<u8>), BytesError> {
        let path = self.partial_path(owner, &blob);
        blocking(move || {
            let mut f = std::fs::File::open(&path)?;
            let mut hasher = sha2::Sha256::new();
            let mut buf = vec![0u8; 64 << 10];
            let mut first = Vec::new();
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                if first.len() < head {
                    first.extend_from_slice(&buf[..n.min(head - first.len())]);
                }
                hasher.update(&buf[..n]);
            }
            Ok((hasher.finalize().into(), first))
        })
        .await
    }

    async fn partial_remove(&self, owner: &str, blob: BlobId) -> Result<bool, BytesError> {
        let path = self.partial_path(owner, &blob);
        let len = tokio::fs::metadata(&path).await.map(|m| m.len()).unwrap_or(0);
        let removed = tokio::fs::remove_file(&path).await.is_ok();
        if removed {
            self.store.add_blob_bytes(-signed(len));
        }
        Ok(removed)
    }

    async fn promote(&self, owner: &str, blob: BlobId, size: u64) -> Result<bool, BytesError> {
        let (path, target) = (self.partial_path(owner, &blob), self.blob_path(&blob));
        let moved = blocking(move || {
            let dir = target.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            if target.exists() {
                // Deduplicated: the bytes are here already.
                std::fs::remove_file(&path)?;
                return Ok(false);
            }
            std::fs::rename(&path, &target)?;
            sync_dir(dir)?;
            Ok(true)
        })
        .await?;
        if !moved {
            self.store.add_blob_bytes(-signed(size));
        }
        Ok(moved)
    }

    async fn read_at(&self, blob: BlobId, offset: u64, len: usize) -> Result<Vec<u8>, BytesError> {
        use std::io::Seek as _;
        let path = self.blob_path(&blob);
        let read = blocking(move || {
            let mut f = std::fs::File::open(path)?;
            f.seek(std::io::SeekFrom::Start(offset))?;
            let mut buf = Vec::with_capacity(len);
            f.take(len as u64).read_to_end(&mut buf)?;
            Ok(buf)
        });
        match read.await {
            Err(BytesError::Io(_)) if !self.blob_path(&blob).exists() => Err(BytesError::Missing),
            other => other,
        }
    }

    async fn remove(&self, blob: BlobId) -> Result<bool, BytesError> {
        let path = self.blob_path(&blob);
        let len = tokio::fs::metadata(&path).await.map(|m| m.len()).unwrap_or(0);
        let removed = tokio::fs::remove_file(&path).await.is_ok();
        if removed {
            self.store.add_blob_bytes(-signed(len));
        }
        Ok(removed)
    }

    async fn used(&self) -> Result<u64, BytesError> {
        let root = self.root.to_path_buf();
        blocking(move || Ok(dir_bytes(&root))).await
    }

    async fn sweep(&self, _before: u64) -> Result<usize, BytesError> {
        // A chunk cut short by a crash is part of its file (as after a cut without a
        // checksum): nothing lies elsewhere.
        Ok(0)
    }
}

/// A chunk being appended to an upload's file.
pub struct FileAppend {
    file: tokio::fs::File,
    /// The file's length before the chunk.
    have: u64,
    written: u64,
    store: Store,
}

impl BlobAppend for FileAppend {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), BytesError> {
        self.file.write_all(bytes).await?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    async fn commit(mut self) -> Result<u64, BytesError> {
        self.file.flush().await?;
        // The answer promises these bytes survive a power cut.
        self.file.sync_data().await?;
        if self.written > 0 {
            self.store.add_blob_bytes(signed(self.written));
        }
        Ok(self.have + self.written)
    }

    async fn abort(mut self) -> Result<(), BytesError> {
        self.file.flush().await?;
        if self.written > 0 {
            self.file.set_len(self.have).await?;
        }
        self.file.sync_data().await?;
        Ok(())
    }
}

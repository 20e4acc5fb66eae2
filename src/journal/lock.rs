//! The state lock: a file holding the holder's pid, host, start time and run id, guarded by
//! `flock`. The kernel drops the flock when the holder dies, so a stale lock (dead pid) is free
//! to take, and two takers can never both win: only one gets the flock, and each checks after
//! locking that the file it locked is still the one at the path.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{JournalError, Result, StateLock};

/// Who holds a state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    pub pid: u32,
    pub host: String,
    /// Milliseconds since the Unix epoch.
    pub started_ms: u64,
    pub run_id: String,
    /// Milliseconds since the Unix epoch when the holder's lease runs out (S3 locks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_ms: Option<u64>,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.started_ms);
        write!(
            f,
            "ferry pid {} on {} since {} (run {})",
            self.pid,
            self.host,
            humantime::format_rfc3339_seconds(t),
            self.run_id
        )?;
        if let Some(ms) = self.lease_expires_ms {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
            write!(f, ", lease until {}", humantime::format_rfc3339_seconds(t))?;
        }
        Ok(())
    }
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or truncates.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn read_holder(path: &Path) -> Option<LockHolder> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// A held local lock; dropping it removes the file and releases the flock.
#[derive(Debug)]
pub struct LocalLock {
    path: PathBuf,
    _file: File,
    took_over: Option<LockHolder>,
}

impl StateLock for LocalLock {
    fn took_over_from(&self) -> Option<&LockHolder> {
        self.took_over.as_ref()
    }
}

impl Drop for LocalLock {
    fn drop(&mut self) {
        // Unlink while still locked: a waiter that opened this file will find it is no longer
        // the one at the path and start over.
        let _ = std::fs::remove_file(&self.path);
    }
}

pub(crate) fn take(path: &Path, run_id: &str) -> Result<LocalLock> {
    loop {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io(path))?;
        // SAFETY: a valid, open file descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::WouldBlock {
                let holder = read_holder(path)
                    .map(|h| h.to_string())
                    .unwrap_or_else(|| "another ferry".into());
                return Err(JournalError::Locked {
                    path: path.to_path_buf(),
                    holder,
                });
            }
            return Err(JournalError::Io {
                path: path.to_path_buf(),
                source: err,
            });
        }
        let ours = file.metadata().map_err(io(path))?;
        match std::fs::metadata(path) {
            Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => {}
            _ => continue, // released and removed under us: try again with the new file
        }
        let mut old = String::new();
        file.read_to_string(&mut old).map_err(io(path))?;
        let took_over = serde_json::from_str::<LockHolder>(&old).ok();
        let me = LockHolder {
            pid: std::process::id(),
            host: hostname(),
            started_ms: crate::exec::now_ms(),
            run_id: run_id.to_string(),
            lease_expires_ms: None,
        };
        file.set_len(0).map_err(io(path))?;
        file.rewind().map_err(io(path))?;
        let text = serde_json::to_string(&me).map_err(|e| JournalError::Json(e.to_string()))?;
        file.write_all(text.as_bytes()).map_err(io(path))?;
        file.sync_all().map_err(io(path))?;
        return Ok(LocalLock {
            path: path.to_path_buf(),
            _file: file,
            took_over,
        });
    }
}

/// `ferry unlock --force` on a local state: the lock is released only if no live process holds
/// its flock (taken, then dropped). Unlinking a file a live holder has locked would let the next
/// taker lock a new file beside it: two holders.
pub(crate) fn force_release(path: &Path) -> Result<Option<LockHolder>> {
    let lock = take(path, "unlock")?;
    let was = lock.took_over.clone();
    drop(lock);
    Ok(was)
}

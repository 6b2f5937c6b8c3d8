//! The state folder's locks: one per input (two exports of one list never
//! run at once) and one per run, held for the run's life and released by
//! the system when the process dies; who holds one is written beside it.

use super::{LedgerError, io};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Who holds an output folder (the lock file's contents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub run_id: String,
    pub pid: u32,
    pub started_at: String,
}

/// OS locks in the state folder (`OUT/_runs/` by default), released by
/// the OS when the holder dies however it dies. An export holds the lock of
/// its input (`.lock-<hash of the input's path>`: one run of an input at a
/// time; other inputs run beside it into the same lake) and a shared lock
/// on `.lock`, which `runs drop` takes whole while it removes a run.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
    /// The state folder's shared lock, held as long as this one.
    _shared: Option<File>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{out}: in use by run {} (pid {}, started {}); one run of an input at a time (another input may run beside it): let that run finish, or stop it and run the same command to resume it",
        .holder.run_id, .holder.pid, .holder.started_at
    )]
    Held { out: String, holder: Holder },
    #[error("{out}: in use by another msgext run")]
    HeldUnknown { out: String },
    #[error(transparent)]
    Io(#[from] LedgerError),
}

impl RunLock {
    pub fn acquire(state_dir: &Path, me: &Holder) -> Result<RunLock, LockError> {
        std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
        let path = state_dir.join(".lock");
        let file = open_lock(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(busy(state_dir)),
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&path)(e).into()),
        }
        let mut lock = RunLock {
            file,
            path,
            _shared: None,
        };
        lock.describe(me)?;
        Ok(lock)
    }

    /// The lock of one input (`input`: its path), with the state folder's
    /// lock shared: exports of other inputs run beside this one.
    pub(crate) fn acquire_input(
        state_dir: &Path,
        input: &Path,
        me: &Holder,
    ) -> Result<RunLock, LockError> {
        std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
        let shared_path = state_dir.join(".lock");
        let shared = open_lock(&shared_path)?;
        match shared.try_lock_shared() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(busy(state_dir)),
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&shared_path)(e).into()),
        }
        let path = state_dir.join(input_lock_name(input));
        let file = open_lock(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            // The holder of this input, not of another one.
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(match held_by(&path).filter(|h| !h.run_id.is_empty()) {
                    Some(holder) => LockError::Held {
                        out: state_dir.display().to_string(),
                        holder,
                    },
                    None => busy(state_dir),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&path)(e).into()),
        }
        let mut lock = RunLock {
            file,
            path,
            _shared: Some(shared),
        };
        lock.describe(me)?;
        Ok(lock)
    }

    /// The runs holding a lock of `state_dir` now: a look that creates
    /// nothing and takes each lock only for as long as it looks.
    pub(crate) fn holders(state_dir: &Path) -> Vec<Holder> {
        let Ok(entries) = std::fs::read_dir(state_dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".lock"))
            .filter_map(|e| held_by(&e.path()))
            .collect()
    }

    /// Say who holds the lock (shown to a run that finds it taken): the run
    /// id is known only once the input is read.
    pub(crate) fn describe(&mut self, me: &Holder) -> Result<(), LedgerError> {
        use std::io::Seek;
        let json = serde_json::to_vec(me)?;
        let path = &self.path;
        self.file.set_len(0).map_err(io(path))?;
        self.file
            .seek(std::io::SeekFrom::Start(0))
            .map_err(io(path))?;
        self.file.write_all(&json).map_err(io(path))?;
        self.file.flush().map_err(io(path))
    }
}

/// A state folder in use: by whom, as its locks say.
fn busy(state_dir: &Path) -> LockError {
    let out = state_dir.display().to_string();
    match RunLock::holders(state_dir)
        .into_iter()
        .find(|h| !h.run_id.is_empty())
    {
        Some(holder) => LockError::Held { out, holder },
        None => LockError::HeldUnknown { out },
    }
}

impl Drop for RunLock {
    /// A lock released says no holder: its file is emptied while still
    /// held, so a look at it later never names a run that is gone.
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
    }
}

/// Who holds the lock file `path` now, if anyone (a holder that wrote
/// nothing yet has an empty run id).
fn held_by(path: &Path) -> Option<Holder> {
    let file = OpenOptions::new().read(true).write(true).open(path).ok()?;
    match file.try_lock() {
        Ok(()) => None,
        Err(std::fs::TryLockError::WouldBlock) => {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            Some(serde_json::from_str(&text).unwrap_or(Holder {
                run_id: String::new(),
                pid: 0,
                started_at: String::new(),
            }))
        }
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

fn open_lock(path: &Path) -> Result<File, LockError> {
    Ok(OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io(path))?)
}

/// The lock file of an input: its absolute path (links resolved where it
/// exists) hashed, so that `in.csv` and `./in.csv` are one input.
fn input_lock_name(input: &Path) -> String {
    use sha2::{Digest, Sha256};
    let path = std::fs::canonicalize(input)
        .or_else(|_| std::path::absolute(input))
        .unwrap_or_else(|_| input.to_owned());
    let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!(".lock-{hex}")
}

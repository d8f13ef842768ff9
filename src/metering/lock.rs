//! Who may touch an outbox directory: the process holding an exclusive advisory lock (`flock`,
//! through std's `File::try_lock`) on its `lock` file, for as long as it uses the directory.
//! The kernel drops the lock when the process dies, however it dies, so a free lock means the
//! directory's owner is gone.
//!
//! Two roles. The owner writes the directory (its replica's outbox): a second live process
//! wanting the same directory is refused with the holder's pid, never allowed to share it. An
//! adopter takes a directory whose lock is free to move its backlog into its own outbox (see
//! `adopt`); when the owner comes back (a restarted pod with the same name) it asks for the
//! directory with a `reclaim` file, and the adopter hands it back between two chunks.
//!
//! The lock file says who holds it (`pid 41 on gw-1 owning since …`): only for the error
//! message; the lock itself is the truth.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::event::rfc3339_millis;

pub const LOCK_FILE: &str = "lock";
/// Made by an owner waiting for an adopter to hand its directory back.
pub const RECLAIM_FILE: &str = "reclaim";
/// How long a starting owner waits for an adopter to hand its directory back. An adopter checks
/// between chunks of at most a few MiB, so this is ample; past it the owner refuses to start.
pub const RECLAIM_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Owner,
    Adopter,
}

impl Role {
    fn word(self) -> &'static str {
        match self {
            Role::Owner => "owning",
            Role::Adopter => "adopting",
        }
    }
}

/// A held lock on a directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DirLock {
    /// Holds the lock: closing it releases it.
    _file: File,
    dir: PathBuf,
    role: Role,
}

enum Attempt {
    Taken(File),
    /// Another open file description (another process, or another open in this one) holds it.
    Held,
    /// We locked a lock file that has since been removed (a drained directory being deleted):
    /// that lock protects nothing.
    Stale,
}

impl DirLock {
    /// Takes `dir` (made if missing) as the directory this process writes. Refuses, naming the
    /// holder, when another live process owns it; when an adopter holds it, asks for it back
    /// and waits up to `RECLAIM_WAIT`.
    pub fn own(dir: &Path) -> io::Result<DirLock> {
        let deadline = Instant::now() + RECLAIM_WAIT;
        let mut asked = false;
        loop {
            fs::create_dir_all(dir)?;
            match attempt(dir) {
                Ok(Attempt::Taken(file)) => {
                    if asked {
                        let _ = fs::remove_file(dir.join(RECLAIM_FILE));
                    }
                    return DirLock::held(file, dir, Role::Owner);
                }
                // The directory was being removed under us (or between `create_dir_all` and
                // the open): make it again.
                Ok(Attempt::Stale) => {
                    if Instant::now() >= deadline {
                        return Err(io::Error::other("its lock file keeps being removed under this process"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && Instant::now() < deadline => {}
                Err(e) => return Err(e),
                Ok(Attempt::Held) => {
                    let holder = holder(dir);
                    // An empty file: its holder has not written its name yet; look again.
                    if !holder.is_empty() && !holder.contains(Role::Adopter.word()) {
                        return Err(in_use(&holder));
                    }
                    if !holder.is_empty() && !asked {
                        File::create(dir.join(RECLAIM_FILE))?;
                        asked = true;
                        tracing::info!(
                            dir = %dir.display(),
                            holder = %holder,
                            "metering: another replica is delivering this outbox's backlog; asking for it back"
                        );
                    }
                    if Instant::now() >= deadline {
                        return Err(in_use(&format!(
                            "{holder}; it did not hand the directory back within {}s",
                            RECLAIM_WAIT.as_secs()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    /// Takes `dir` for adoption when no live process holds it; `None` when one does (or the
    /// directory is going away). Never makes the directory.
    pub fn adopt(dir: &Path) -> io::Result<Option<DirLock>> {
        match attempt(dir) {
            Ok(Attempt::Taken(file)) => {
                // A reclaim from an owner that then died would make every adopter hand the
                // directory straight back, for ever: one older than an owner's wait is stale.
                let reclaim = dir.join(RECLAIM_FILE);
                if let Ok(age) =
                    fs::metadata(&reclaim).and_then(|m| m.modified()).map(|t| t.elapsed().unwrap_or_default())
                    && age > 2 * RECLAIM_WAIT
                {
                    let _ = fs::remove_file(&reclaim);
                }
                DirLock::held(file, dir, Role::Adopter).map(Some)
            }
            Ok(Attempt::Held | Attempt::Stale) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn held(file: File, dir: &Path, role: Role) -> io::Result<DirLock> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default();
        let line = format!("pid {} on {} {} since {}\n", std::process::id(), host(), role.word(), rfc3339_millis(now));
        // The lock is ours: only now may the previous holder's line be replaced.
        file.set_len(0)?;
        (&file).write_all(line.as_bytes())?;
        Ok(DirLock { _file: file, dir: dir.to_owned(), role })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The owner wants its directory back (adopters check this between chunks).
    pub fn reclaim_requested(&self) -> bool {
        self.role == Role::Adopter && self.dir.join(RECLAIM_FILE).exists()
    }

    /// Removes the lock file and the directory, if nothing else is left in it (an adopter's
    /// last step once the backlog has moved; dead letters, say, keep the directory). Whoever
    /// locks the removed file next sees it is stale (`attempt`).
    pub fn remove_dir(self) -> io::Result<bool> {
        if self.reclaim_requested() {
            return Ok(false);
        }
        let others = fs::read_dir(&self.dir)?.filter_map(Result::ok).any(|e| e.file_name() != LOCK_FILE);
        if others {
            return Ok(false);
        }
        fs::remove_file(self.dir.join(LOCK_FILE))?;
        fs::remove_dir(&self.dir)?;
        Ok(true)
    }
}

fn attempt(dir: &Path) -> io::Result<Attempt> {
    let path = dir.join(LOCK_FILE);
    // Not truncated on open: the holder's line is read by whoever finds the lock taken.
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(Attempt::Held),
        Err(TryLockError::Error(e)) => return Err(e),
    }
    if !same_file(&file, &path) {
        return Ok(Attempt::Stale);
    }
    Ok(Attempt::Taken(file))
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

/// The holder's line from the lock file (may be empty for a moment after it locked).
pub fn holder(dir: &Path) -> String {
    fs::read_to_string(dir.join(LOCK_FILE)).map(|s| s.trim().to_owned()).unwrap_or_default()
}

fn in_use(holder: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::ResourceBusy,
        format!(
            "in use by another live gateway process ({holder}); each process needs its own outbox directory: \
             replicas write <metering.outbox_dir>/<POD_NAME or hostname>, so give each one its own POD_NAME"
        ),
    )
}

/// This host's name (the pod's name in Kubernetes), for the lock file's line.
fn host() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("outbox-lock-{name}-{}-{:x}", std::process::id(), fastrand::u64(..)))
    }

    // flock locks belong to an open file description, so two opens in one process contend just
    // as two processes do.

    #[test]
    fn an_owned_directory_refuses_a_second_owner_and_an_adopter_naming_the_holder() {
        let dir = temp_dir("owned");
        let owner = DirLock::own(&dir).unwrap();
        let refused = DirLock::own(&dir).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ResourceBusy);
        let text = refused.to_string();
        assert!(text.contains(&format!("pid {}", std::process::id())) && text.contains("owning"), "{text}");
        assert!(DirLock::adopt(&dir).unwrap().is_none(), "a live owner's directory is never adopted");
        drop(owner);
        // The owner is gone: the directory is free for an adopter.
        let adopter = DirLock::adopt(&dir).unwrap().expect("free once the owner is gone");
        assert!(holder(&dir).contains("adopting"));
        assert!(!adopter.reclaim_requested());
        drop(adopter);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_returning_owner_gets_its_directory_back_from_an_adopter() {
        let dir = temp_dir("reclaim");
        let owner = DirLock::own(&dir).unwrap();
        drop(owner);
        let adopter = DirLock::adopt(&dir).unwrap().unwrap();
        let returning = {
            let dir = dir.clone();
            std::thread::spawn(move || DirLock::own(&dir))
        };
        let asked = Instant::now();
        while !adopter.reclaim_requested() {
            assert!(asked.elapsed() < Duration::from_secs(5), "the owner asks for its directory");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The adopter hands it back between two chunks: by releasing its lock.
        drop(adopter);
        let owner = returning.join().unwrap().expect("the owner gets its directory back");
        assert!(!dir.join(RECLAIM_FILE).exists(), "the request is withdrawn once granted");
        assert!(holder(&dir).contains("owning"));
        drop(owner);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_drained_directory_is_removed_and_a_lock_on_its_old_file_is_stale() {
        let dir = temp_dir("removed");
        drop(DirLock::own(&dir).unwrap());
        // Someone opened the lock file just before the adopter removes the directory…
        let early = OpenOptions::new().read(true).write(true).open(dir.join(LOCK_FILE)).unwrap();
        let adopter = DirLock::adopt(&dir).unwrap().unwrap();
        assert!(adopter.remove_dir().unwrap());
        assert!(!dir.exists());
        // …and gets the lock on the removed file: it must not count as holding the directory.
        early.try_lock().unwrap();
        assert!(!same_file(&early, &dir.join(LOCK_FILE)));
        assert!(DirLock::adopt(&dir).unwrap().is_none(), "nothing to adopt");
        // A directory with something else in it (dead letters) is kept.
        let owner = DirLock::own(&dir).unwrap();
        fs::write(dir.join("dead-letter.ndjson"), "{}\n").unwrap();
        drop(owner);
        let adopter = DirLock::adopt(&dir).unwrap().unwrap();
        assert!(!adopter.remove_dir().unwrap());
        assert!(dir.join("dead-letter.ndjson").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stale_reclaim_from_an_owner_that_died_waiting_is_cleared() {
        let dir = temp_dir("stale");
        drop(DirLock::own(&dir).unwrap());
        let reclaim = File::create(dir.join(RECLAIM_FILE)).unwrap();
        let fresh = DirLock::adopt(&dir).unwrap().unwrap();
        assert!(fresh.reclaim_requested(), "a recent request is honoured");
        drop(fresh);
        reclaim.set_modified(SystemTime::now() - 3 * RECLAIM_WAIT).unwrap();
        let adopter = DirLock::adopt(&dir).unwrap().unwrap();
        assert!(!adopter.reclaim_requested(), "an old one is not: its owner died waiting");
        drop(adopter);
        fs::remove_dir_all(&dir).unwrap();
    }
}

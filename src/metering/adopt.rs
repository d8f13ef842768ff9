//! Backlogs of replicas that are gone. Replicas sharing a volume each write
//! `<outbox_dir>/<replica>`; a replica that goes away for good (a Deployment's pod deleted,
//! scaled down, SIGKILLed and replaced under another name) leaves its undelivered events there.
//! Every replica looks for such directories at start and then every `adopt_interval`: one whose
//! lock is free (its owner is gone, `lock`) is taken, its events from its cursor on are
//! appended to this replica's own outbox in chunks, synced, and only then acknowledged in the
//! orphan's cursor; once empty its directory is removed. The events keep their ids, so a crash
//! between the copy and the acknowledgement only sends a chunk twice, which OpenMeter drops
//! on (source, id); none is lost. Moving is local disk work: it needs no OpenMeter, and an owner
//! coming back (the same pod name) gets its directory back between two chunks.
//!
//! The root itself is adopted too when it holds segments: where releases before per-replica
//! directories wrote. Such a release's process may still be running during an upgrade and
//! takes no lock, so the root is read only once nothing in it changed for `LEGACY_QUIET`, and
//! its empty and last segments are left where they are.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::lock::DirLock;
use super::outbox::{self, Batch, Reader, Writer};

/// Most events moved per step (the writer thread takes its queue between two steps).
const CHUNK_EVENTS: usize = 4096;
const CHUNK_BYTES: u64 = 1 << 20;
/// Below this much room in this replica's outbox adoption waits (rather than read and put back
/// a line that does not fit on every turn of the writer thread).
const MIN_ROOM: u64 = 4096;
/// A legacy root is adopted only when none of its files changed for this long.
pub const LEGACY_QUIET: Duration = Duration::from_secs(60);

/// Finds and drains the outbox directories of replicas that are gone, a step at a time.
pub struct Adopter {
    root: PathBuf,
    own: PathBuf,
    interval: Duration,
    next_scan: Instant,
    current: Option<Orphan>,
    batch: Batch,
}

struct Orphan {
    reader: Reader,
    lock: Arc<DirLock>,
    legacy: bool,
    moved: u64,
}

impl Adopter {
    /// `root`: the directory of every replica's outbox; `own`: this replica's, never adopted.
    /// The first step looks at once.
    pub fn new(root: &Path, own: &Path, interval: Duration) -> Self {
        Adopter {
            root: root.to_owned(),
            own: own.to_owned(),
            interval,
            next_scan: Instant::now(),
            current: None,
            batch: Batch::default(),
        }
    }

    /// Whether a directory is being adopted.
    pub fn busy(&self) -> bool {
        self.current.is_some()
    }

    /// One bounded step: looks for an orphan when it is time, or moves at most a chunk of the
    /// current one into `writer`, using no more than `room` bytes of it. Returns the events moved.
    pub fn step(&mut self, writer: &mut Writer, room: u64) -> u64 {
        if self.current.is_none() {
            // Not a lock it could not use: the owner's own events have the room first.
            if Instant::now() < self.next_scan || room < MIN_ROOM {
                return 0;
            }
            self.next_scan = Instant::now() + self.interval;
            self.current = self.scan();
        }
        let Some(orphan) = self.current.as_mut() else { return 0 };
        if orphan.lock.reclaim_requested() {
            tracing::info!(
                dir = %orphan.lock.dir().display(),
                moved = orphan.moved,
                "metering: handing an adopted outbox back to its owner, which has come back"
            );
            self.current = None;
            return 0;
        }
        if room < MIN_ROOM {
            return 0;
        }
        // Lines are about 0.5–1 KiB: `max_events` keeps a read within the room, and a read that
        // still overshoots is read again later.
        let max_bytes = room.min(CHUNK_BYTES);
        let max_events = ((max_bytes / 2048) as usize).clamp(1, CHUNK_EVENTS);
        self.batch.clear();
        let dir = orphan.lock.dir().to_owned();
        let read = match orphan.reader.read_more(&mut self.batch, max_events, max_bytes as usize) {
            Ok(n) => n as u64,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "metering: cannot read an adopted outbox; trying again later");
                self.current = None;
                return 0;
            }
        };
        if self.batch.bytes.is_empty() {
            if orphan.reader.at_end() {
                self.finish();
            }
            return 0;
        }
        if self.batch.bytes.len() as u64 > room {
            // No room in this replica's outbox now: the chunk stays where it is.
            orphan.reader.rewind();
            return 0;
        }
        // Durable here before the orphan lets go of them.
        if let Err(e) = writer.append(&self.batch.bytes).and_then(|()| writer.sync_now()) {
            tracing::error!(dir = %dir.display(), error = %e, "metering: cannot move an adopted outbox's events; trying again later");
            self.current = None;
            return 0;
        }
        if let Err(e) = orphan.reader.ack() {
            // They are in this outbox already: at worst they move (and are sent) twice.
            tracing::warn!(dir = %dir.display(), error = %e, "metering: cannot advance an adopted outbox's cursor");
            self.current = None;
        } else {
            orphan.moved += read;
        }
        read
    }

    /// The current orphan is empty: remove its directory (or, for a legacy root, leave what an
    /// old process may still use) and look for the next one at once.
    fn finish(&mut self) {
        let Some(mut orphan) = self.current.take() else { return };
        let dir = orphan.lock.dir().to_owned();
        let removed = if orphan.legacy {
            Ok(false)
        } else {
            orphan.reader.remove_all().and_then(|()| {
                drop(orphan.reader);
                match Arc::try_unwrap(orphan.lock) {
                    Ok(lock) => lock.remove_dir(),
                    Err(_) => Ok(false),
                }
            })
        };
        let removed_or_moved = orphan.moved > 0 || matches!(removed, Ok(true));
        match removed {
            Ok(removed) => {
                if removed {
                    let _ = outbox::sync_dir(&self.root);
                }
                if orphan.moved > 0 || removed {
                    tracing::info!(
                        dir = %dir.display(),
                        events = orphan.moved,
                        removed,
                        "metering: an adopted outbox's backlog is now in this replica's outbox"
                    );
                }
            }
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "metering: cannot remove an adopted outbox"),
        }
        // Another may be waiting: look at once — unless nothing changed, which would find the
        // same one (a legacy root keeps its last segment) again and again.
        if removed_or_moved {
            self.next_scan = Instant::now();
        }
    }

    /// The first directory in the root that has segments and a free lock, opened for reading.
    fn scan(&self) -> Option<Orphan> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(dir = %self.root.display(), error = %e, "metering: cannot look for outboxes to adopt");
                return None;
            }
        };
        // Never this replica's own directory, by name: a second lock on it from this process
        // would contend with its own (flock), or, where flock is emulated with POSIX locks
        // (NFS), succeed and release it when closed.
        let own = self.own.file_name();
        let mut candidates: Vec<(PathBuf, bool)> = entries
            .filter_map(Result::ok)
            .filter(|e| Some(e.file_name().as_os_str()) != own && e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .filter(|p| outbox::has_segments(p))
            .map(|p| (p, false))
            .collect();
        if outbox::has_segments(&self.root) && quiet(&self.root) {
            candidates.push((self.root.clone(), true));
        }
        for (dir, legacy) in candidates {
            let lock = match DirLock::adopt(&dir) {
                Ok(Some(lock)) => Arc::new(lock),
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "metering: cannot lock an outbox to adopt");
                    continue;
                }
            };
            match outbox::open_orphan(&dir, lock.clone(), legacy) {
                Ok((reader, recovered)) => {
                    if recovered.undelivered > 0 {
                        tracing::info!(
                            dir = %dir.display(),
                            undelivered = recovered.undelivered,
                            torn_bytes_skipped = recovered.truncated_bytes,
                            "metering: adopting the metering outbox of a replica that is gone"
                        );
                    }
                    return Some(Orphan { reader, lock, legacy, moved: 0 });
                }
                Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "metering: cannot open an outbox to adopt"),
            }
        }
        None
    }
}

/// No segment nor the cursor of `dir` changed for `LEGACY_QUIET`.
fn quiet(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else { return false };
    entries.filter_map(Result::ok).filter(|e| e.file_type().is_ok_and(|t| t.is_file())).all(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("segment-") || name == "cursor") {
            return true;
        }
        e.metadata()
            .and_then(|m| m.modified())
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default() >= LEGACY_QUIET)
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::config::metering::Fsync;
    use crate::metering::outbox::{Shared, open};

    fn temp_root(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("outbox-adopt-{name}-{}-{:x}", std::process::id(), fastrand::u64(..)))
    }

    fn line(owner: &str, i: usize) -> Vec<u8> {
        format!("{{\"id\":\"{owner}-{i}\",\"pad\":\"{}\"}}\n", "x".repeat(i % 11)).into_bytes()
    }

    fn ids(reader: &mut Reader) -> Vec<String> {
        let mut batch = Batch::default();
        reader.read_more(&mut batch, 1_000_000, 1 << 30).unwrap();
        (0..batch.len())
            .map(|i| {
                serde_json::from_slice::<serde_json::Value>(batch.event(i)).unwrap()["id"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    /// Runs steps until nothing is left to adopt; returns the events moved.
    fn drain(adopter: &mut Adopter, writer: &mut Writer) -> u64 {
        let mut moved = 0;
        for _ in 0..10_000 {
            moved += adopter.step(writer, 1 << 30);
            if !adopter.busy() && adopter.next_scan > Instant::now() {
                return moved;
            }
        }
        panic!("adoption did not finish");
    }

    /// A gone replica's outbox: `total` events written, the first `delivered` acknowledged, and
    /// a torn half line at the end (it was SIGKILLed mid-write).
    fn gone_replica(dir: &Path, total: usize, delivered: usize) {
        let (mut writer, mut reader, _) = open(dir, 4096, Fsync::Never, Arc::new(Shared::default())).unwrap();
        for i in 0..total {
            writer.append(&line("gone", i)).unwrap();
        }
        let mut batch = Batch::default();
        reader.read_more(&mut batch, delivered, 1 << 30).unwrap();
        reader.ack().unwrap();
        drop((writer, reader));
        let last = fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().contains("segment-"))
            .max()
            .unwrap();
        let mut f = fs::OpenOptions::new().append(true).open(last).unwrap();
        std::io::Write::write_all(&mut f, b"{\"id\":\"torn").unwrap();
    }

    #[test]
    fn a_gone_replicas_backlog_moves_into_this_one_exactly_once_and_its_directory_goes() {
        let root = temp_root("gone");
        gone_replica(&root.join("gw-a"), 500, 120);
        let shared = Arc::new(Shared::default());
        let own = root.join("gw-b");
        let (mut writer, mut reader, _) = open(&own, 4096, Fsync::Never, shared.clone()).unwrap();
        // A live sibling is left alone.
        let (_live_w, _live_r, _) = open(&root.join("gw-c"), 4096, Fsync::Never, Arc::new(Shared::default())).unwrap();
        writer.append(&line("own", 0)).unwrap();
        let mut adopter = Adopter::new(&root, &own, Duration::from_secs(3600));
        assert_eq!(drain(&mut adopter, &mut writer), 380);
        assert!(!root.join("gw-a").exists(), "the drained directory is removed");
        assert!(root.join("gw-c").join("lock").exists());
        let expected: Vec<String> =
            std::iter::once("own-0".to_owned()).chain((120..500).map(|i| format!("gone-{i}"))).collect();
        assert_eq!(ids(&mut reader), expected, "each undelivered event once, none delivered ones, no torn line");
        assert!(shared.bytes.load(Ordering::Relaxed) > 0);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_crash_between_the_move_and_the_acknowledgement_only_repeats_a_chunk() {
        let root = temp_root("crash");
        gone_replica(&root.join("gw-a"), 50, 0);
        let own = root.join("gw-b");
        let (mut writer, mut reader, _) = open(&own, 1 << 20, Fsync::Never, Arc::new(Shared::default())).unwrap();
        // Move a chunk by hand, as a step does, and "crash" before the orphan's cursor moves.
        {
            let lock = Arc::new(DirLock::adopt(&root.join("gw-a")).unwrap().unwrap());
            let (mut orphan, recovered) = outbox::open_orphan(&root.join("gw-a"), lock, false).unwrap();
            assert_eq!(recovered.undelivered, 50);
            let mut batch = Batch::default();
            orphan.read_more(&mut batch, 20, 1 << 20).unwrap();
            writer.append(&batch.bytes).unwrap();
        }
        let mut adopter = Adopter::new(&root, &own, Duration::from_secs(3600));
        assert_eq!(drain(&mut adopter, &mut writer), 50);
        let seen = ids(&mut reader);
        assert_eq!(seen.len(), 70, "the first 20 twice (same ids: OpenMeter keeps one)");
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 50, "and every event at least once");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_owner_coming_back_gets_its_directory_between_two_chunks() {
        let root = temp_root("back");
        gone_replica(&root.join("gw-a"), 200, 0);
        let own = root.join("gw-b");
        let (mut writer, _reader, _) = open(&own, 1 << 20, Fsync::Never, Arc::new(Shared::default())).unwrap();
        let mut adopter = Adopter::new(&root, &own, Duration::from_secs(3600));
        // Small rooms: a few events per step.
        let first = adopter.step(&mut writer, 8192);
        assert!(first > 0 && adopter.busy());
        let returning = {
            let dir = root.join("gw-a");
            std::thread::spawn(move || open(&dir, 1 << 20, Fsync::Never, Arc::new(Shared::default())))
        };
        let started = Instant::now();
        let mut moved = first;
        while adopter.busy() {
            assert!(started.elapsed() < Duration::from_secs(5), "the adopter lets go");
            // This replica's outbox is full now: the directory is handed back all the same.
            moved += adopter.step(&mut writer, 0);
            std::thread::sleep(Duration::from_millis(5));
        }
        let (_w, _r, recovered) = returning.join().unwrap().expect("the owner starts");
        assert!(moved < 200, "handed back before the end");
        assert_eq!(recovered.undelivered, 200 - moved, "what was not moved is the owner's again, and only that");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_legacy_root_is_adopted_once_quiet_and_its_last_segment_stays() {
        let root = temp_root("legacy");
        // A release before per-replica directories wrote into the root itself.
        gone_replica(&root, 30, 10);
        fs::remove_file(root.join(crate::metering::lock::LOCK_FILE)).unwrap();
        let own = root.join("gw-new");
        let (mut writer, mut reader, _) = open(&own, 1 << 20, Fsync::Never, Arc::new(Shared::default())).unwrap();
        let mut adopter = Adopter::new(&root, &own, Duration::from_secs(3600));
        assert_eq!(drain(&mut adopter, &mut writer), 0, "not while it may still be written");
        let old = SystemTime::now() - 2 * LEGACY_QUIET;
        for e in fs::read_dir(&root).unwrap().filter_map(Result::ok).filter(|e| e.path().is_file()) {
            fs::File::options().write(true).open(e.path()).unwrap().set_modified(old).unwrap();
        }
        let mut adopter = Adopter::new(&root, &own, Duration::from_secs(3600));
        assert_eq!(drain(&mut adopter, &mut writer), 20);
        assert_eq!(ids(&mut reader), (10..30).map(|i| format!("gone-{i}")).collect::<Vec<_>>());
        assert!(outbox::has_segments(&root), "the last segment stays: an old process may append to it");
        // Adopted again later (quiet again), it has nothing more to give.
        for e in fs::read_dir(&root).unwrap().filter_map(Result::ok).filter(|e| e.path().is_file()) {
            fs::File::options().write(true).open(e.path()).unwrap().set_modified(old).unwrap();
        }
        let mut adopter = Adopter::new(&root, &own, Duration::from_secs(3600));
        assert_eq!(drain(&mut adopter, &mut writer), 0);
        fs::remove_dir_all(&root).unwrap();
    }
}

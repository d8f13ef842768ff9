//! The durable outbox: usage events as append-only NDJSON segments on disk (one CloudEvent per
//! line, exactly the bytes that will be sent), and a cursor file naming the first event
//! OpenMeter has not yet accepted. One writer appends; one reader batches from the cursor and
//! advances it after delivery. On start the cursor is where replay begins, so a crash or a
//! `kill -9` re-sends at most the batch that was in flight — with the same ids, which OpenMeter
//! de-duplicates on (source, id).
//!
//! One process per directory: `open` takes the directory's lock (`lock`) for as long as its
//! writer or reader lives, and refuses a directory another live process holds. `open_orphan`
//! reads the directory of a process that is gone, for `adopt` to move its backlog.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::lock::DirLock;
use crate::config::metering::Fsync;

const SEGMENT_PREFIX: &str = "segment-";
const SEGMENT_SUFFIX: &str = ".ndjson";
const CURSOR: &str = "cursor";

/// A place in the outbox: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// What the writer and the reader share.
#[derive(Debug, Default)]
pub struct Shared {
    /// The end of the last complete write: everything before it is whole lines.
    written: Mutex<Position>,
    /// Woken on every write (and when the writer stops).
    pub notify: tokio::sync::Notify,
    /// Bytes of all segment files on disk.
    pub bytes: AtomicU64,
    /// Set once the writer has stopped for good (after its final flush).
    pub writer_closed: AtomicBool,
}

impl Shared {
    pub fn written(&self) -> Position {
        *self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, position: Position) {
        *self.written.lock().unwrap_or_else(|p| p.into_inner()) = position;
        self.notify.notify_one();
    }

    pub fn close_writer(&self) {
        self.writer_closed.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }
}

/// What opening found on disk.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Events after the cursor: replayed to OpenMeter.
    pub undelivered: u64,
    /// Bytes of a torn last line (a crash mid-write) cut off.
    pub truncated_bytes: u64,
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{segment:020}{SEGMENT_SUFFIX}"))
}

/// Whether `dir` holds any segment file (a backlog, or at least an outbox, to look at).
pub fn has_segments(dir: &Path) -> bool {
    segments(dir).is_ok_and(|s| !s.is_empty())
}

/// Segment numbers present in `dir`, ascending.
fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name.strip_prefix(SEGMENT_PREFIX).and_then(|s| s.strip_suffix(SEGMENT_SUFFIX))
            && let Ok(n) = n.parse::<u64>()
        {
            found.push(n);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Makes the entries of `dir` durable — a file created, renamed or removed in it. Syncing a file
/// covers its data, not the name that reaches it: without this a power cut can take a synced
/// segment with it.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        // Windows has no directory handle to sync; NTFS journals its metadata.
        let _ = dir;
        Ok(())
    }
}

fn read_cursor(dir: &Path) -> Option<Position> {
    let text = fs::read_to_string(dir.join(CURSOR)).ok()?;
    let mut parts = text.split_whitespace();
    Some(Position { segment: parts.next()?.parse().ok()?, offset: parts.next()?.parse().ok()? })
}

/// Opens (creating) the outbox in `dir` and locks it for this process (an error naming the
/// holder if another live process has it): drops what was delivered, cuts a torn tail, counts
/// what is left, and starts a fresh segment for new writes.
pub fn open(
    dir: &Path,
    segment_bytes: u64,
    fsync: Fsync,
    shared: Arc<Shared>,
) -> io::Result<(Writer, Reader, Recovered)> {
    // Before anything in it is touched: deleting or cutting another live process's segments
    // is how a shared directory lost events.
    let lock = Arc::new(DirLock::own(dir)?);
    let durable = fsync != Fsync::Never;
    if durable && let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    let mut recovered = Recovered::default();
    let mut present = segments(dir)?;
    let mut cursor = read_cursor(dir).unwrap_or_default();
    // Delivered segments, and empty ones, hold nothing to replay.
    let mut removed = false;
    present.retain(|&seg| {
        let path = segment_path(dir, seg);
        let empty = fs::metadata(&path).map(|m| m.len() == 0).unwrap_or(true);
        if seg < cursor.segment || empty {
            removed |= fs::remove_file(&path).is_ok();
            false
        } else {
            true
        }
    });
    if removed && durable {
        sync_dir(dir)?;
    }
    if !present.contains(&cursor.segment) {
        cursor = Position { segment: present.first().copied().unwrap_or(0), offset: 0 };
    }
    if let Some(&last) = present.last() {
        recovered.truncated_bytes = cut_torn_tail(&segment_path(dir, last))?;
    }
    let mut bytes = 0;
    for &seg in &present {
        let path = segment_path(dir, seg);
        bytes += fs::metadata(&path)?.len();
        let mut file = File::open(&path)?;
        if seg == cursor.segment {
            file.seek(SeekFrom::Start(cursor.offset))?;
        }
        recovered.undelivered += count_lines(&mut file)?;
    }
    let active = present.last().map(|s| s + 1).unwrap_or(1).max(cursor.segment + 1);
    let file = OpenOptions::new().create(true).append(true).open(segment_path(dir, active))?;
    if durable {
        sync_dir(dir)?;
    }
    shared.bytes.store(bytes, Ordering::Relaxed);
    let position = Position { segment: active, offset: 0 };
    shared.publish(position);
    let writer = Writer {
        dir: dir.to_owned(),
        file,
        position,
        segment_bytes,
        fsync,
        last_sync: Instant::now(),
        dirty: false,
        shared: shared.clone(),
        _lock: lock.clone(),
    };
    let reader =
        Reader { dir: dir.to_owned(), cursor, read: cursor, file: None, shared, fsync, legacy: false, _lock: lock };
    Ok((writer, reader, recovered))
}

/// Opens the outbox of a process that is gone, for reading only (`lock`: held by this process
/// as adopter): from its cursor to the last complete line on disk. Nothing is cut, created or
/// written but the cursor. `legacy`: `dir` is an outbox root where a release before per-replica
/// directories wrote, and where one of its processes may still append; then empty segments
/// (another process's fresh active segment) are never deleted, nor is the last one.
pub fn open_orphan(dir: &Path, lock: Arc<DirLock>, legacy: bool) -> io::Result<(Reader, Recovered)> {
    let present = segments(dir)?;
    let mut cursor = read_cursor(dir).unwrap_or_default();
    // As in `open`; a cursor past every segment means there is nothing left to read.
    if !present.contains(&cursor.segment)
        && let Some(&next) = present.iter().find(|&&s| s > cursor.segment)
    {
        cursor = Position { segment: next, offset: 0 };
    }
    let mut recovered = Recovered::default();
    // The end of the last complete line: a torn tail (a crash mid-write) is never read.
    let end = match present.last() {
        Some(&seg) => {
            let path = segment_path(dir, seg);
            let len = fs::metadata(&path)?.len();
            recovered.truncated_bytes = torn_tail(&path, false)?;
            Position { segment: seg, offset: len - recovered.truncated_bytes }
        }
        None => Position::default(),
    };
    for &seg in present.iter().filter(|&&s| s >= cursor.segment) {
        let from = if seg == cursor.segment { cursor.offset } else { 0 };
        let until = if seg == end.segment { end.offset } else { u64::MAX };
        let mut file = File::open(segment_path(dir, seg))?;
        file.seek(SeekFrom::Start(from))?;
        recovered.undelivered += count_lines(&mut file.take(until.saturating_sub(from)))?;
    }
    let shared = Arc::new(Shared::default());
    shared.publish(end.max(cursor));
    let reader = Reader {
        dir: dir.to_owned(),
        cursor,
        read: cursor,
        file: None,
        shared,
        // What is moved out of it must not come back after a power cut (it would only be
        // sent twice, but it is cheap to avoid: this runs once per adopted chunk).
        fsync: Fsync::Always,
        legacy,
        _lock: lock,
    };
    Ok((reader, recovered))
}

/// Cuts a last line that lacks its `\n` (a write interrupted by a crash). Returns bytes cut.
fn cut_torn_tail(path: &Path) -> io::Result<u64> {
    torn_tail(path, true)
}

/// The bytes after the last `\n` of `path`; cut off when `cut`.
fn torn_tail(path: &Path, cut: bool) -> io::Result<u64> {
    let mut file = OpenOptions::new().read(true).write(cut).open(path)?;
    let len = file.metadata()?.len();
    let mut keep = len;
    let mut buf = vec![0u8; 64 * 1024];
    while keep > 0 {
        let start = keep.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(keep - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        match chunk.iter().rposition(|&b| b == b'\n') {
            Some(i) => {
                keep = start + i as u64 + 1;
                break;
            }
            None => keep = start,
        }
    }
    if cut && keep < len {
        file.set_len(keep)?;
        file.sync_all()?;
    }
    Ok(len - keep)
}

fn count_lines(file: &mut impl Read) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut lines = 0;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(lines);
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

/// Appends whole lines to the active segment, rotating at `segment_bytes`.
pub struct Writer {
    dir: PathBuf,
    file: File,
    position: Position,
    segment_bytes: u64,
    fsync: Fsync,
    last_sync: Instant,
    dirty: bool,
    shared: Arc<Shared>,
    _lock: Arc<DirLock>,
}

impl Writer {
    /// Appends `lines` (each `\n`-terminated) and makes them visible to the reader.
    pub fn append(&mut self, lines: &[u8]) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        if self.position.offset > 0 && self.position.offset + lines.len() as u64 > self.segment_bytes {
            self.rotate()?;
        }
        if let Err(e) = self.file.write_all(lines) {
            // A partial write leaves a torn line; cut it so the next append starts clean.
            let _ = self.file.set_len(self.position.offset);
            return Err(e);
        }
        self.position.offset += lines.len() as u64;
        self.shared.bytes.fetch_add(lines.len() as u64, Ordering::Relaxed);
        self.dirty = true;
        if self.fsync == Fsync::Always {
            self.sync()?;
        }
        self.shared.publish(self.position);
        Ok(())
    }

    /// Syncs when the policy says it is time (call periodically).
    pub fn maybe_sync(&mut self) -> io::Result<()> {
        if let Fsync::Interval(every) = self.fsync
            && self.dirty
            && self.last_sync.elapsed() >= every
        {
            self.sync()?;
        }
        Ok(())
    }

    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty && self.fsync != Fsync::Never {
            self.file.sync_data()?;
        }
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Syncs whatever the policy: before the source of adopted events lets go of them.
    pub fn sync_now(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
        }
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// How long until `maybe_sync` has work (for the writer's wait).
    pub fn sync_due_in(&self) -> Duration {
        match self.fsync {
            Fsync::Interval(every) if self.dirty => every.saturating_sub(self.last_sync.elapsed()),
            _ => Duration::from_millis(250),
        }
    }

    /// Starts a new segment unless the active one is empty, so that the active one can be
    /// deleted once delivered (a full outbox must be able to drain completely).
    pub fn seal(&mut self) -> io::Result<()> {
        if self.position.offset > 0 {
            self.rotate()?;
            self.shared.publish(self.position);
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.sync()?;
        let next = self.position.segment + 1;
        self.file = OpenOptions::new().create(true).append(true).open(segment_path(&self.dir, next))?;
        if self.fsync != Fsync::Never {
            // Before anything is written to it: a synced write must not be reachable only
            // through a name a power cut can take back.
            sync_dir(&self.dir)?;
        }
        self.position = Position { segment: next, offset: 0 };
        Ok(())
    }

    /// Syncs for the last time (whatever the policy: a stop is when durability matters most).
    pub fn close(mut self) -> io::Result<()> {
        let result = if self.dirty { self.file.sync_data() } else { Ok(()) };
        self.dirty = false;
        self.shared.close_writer();
        result
    }
}

/// A batch of events read from the outbox: their bytes back to back, and each one's range
/// (without its `\n`).
#[derive(Debug, Default)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub events: Vec<Range<usize>>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn event(&self, i: usize) -> &[u8] {
        &self.bytes[self.events[i].clone()]
    }

    /// The `application/cloudevents-batch+json` body for events `range`.
    pub fn body(&self, range: Range<usize>) -> Vec<u8> {
        let size: usize = self.events[range.clone()].iter().map(|r| r.len() + 1).sum();
        let mut body = Vec::with_capacity(size + 2);
        body.push(b'[');
        for (n, i) in range.enumerate() {
            if n > 0 {
                body.push(b',');
            }
            body.extend_from_slice(self.event(i));
        }
        body.push(b']');
        body
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.events.clear();
    }
}

/// Reads whole lines from the cursor on, and advances the cursor once they are delivered.
pub struct Reader {
    dir: PathBuf,
    /// The first event not yet delivered (persisted in the cursor file).
    cursor: Position,
    /// The first event not yet read into a batch.
    read: Position,
    file: Option<(u64, File)>,
    shared: Arc<Shared>,
    fsync: Fsync,
    /// An outbox root from a release before per-replica directories (see `open_orphan`).
    legacy: bool,
    _lock: Arc<DirLock>,
}

impl Reader {
    pub fn cursor(&self) -> Position {
        self.cursor
    }

    /// Everything published has been read.
    pub fn at_end(&self) -> bool {
        self.read >= self.shared.written()
    }

    /// Forgets what was read since the last `ack`: it will be read again.
    pub fn rewind(&mut self) {
        self.read = self.cursor;
        self.file = None;
    }

    /// Removes every segment and the cursor (an adopted outbox whose backlog has moved; no
    /// writer counts its bytes): the directory keeps what is not the outbox's (its lock, dead
    /// letters).
    pub fn remove_all(&mut self) -> io::Result<()> {
        for seg in segments(&self.dir)? {
            fs::remove_file(segment_path(&self.dir, seg))?;
        }
        for name in [CURSOR, "cursor.tmp"] {
            match fs::remove_file(self.dir.join(name)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        sync_dir(&self.dir)
    }

    /// Adds whole lines to `batch` until it holds `max_events` or about `max_bytes`, or the
    /// outbox has nothing more. Returns how many were added.
    pub fn read_more(&mut self, batch: &mut Batch, max_events: usize, max_bytes: usize) -> io::Result<usize> {
        let mut added = 0;
        while batch.len() < max_events && batch.bytes.len() < max_bytes {
            let written = self.shared.written();
            if self.read >= written {
                break;
            }
            let segment = self.read.segment;
            let file = match &mut self.file {
                Some((seg, file)) if *seg == segment => file,
                _ => match File::open(segment_path(&self.dir, segment)) {
                    Ok(file) => &mut self.file.insert((segment, file)).1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound && segment >= written.segment => {
                        // The active segment is gone, which this process never does (another
                        // process deleted it): what it held is lost. Skip to the end of what is
                        // written; looking for it again would spin on the sender's event loop.
                        self.read = written;
                        self.file = None;
                        return Err(io::Error::new(
                            e.kind(),
                            format!(
                                "the active outbox segment {} vanished (deleted by another process?); \
                                 the events it held up to offset {} are lost",
                                segment_path(&self.dir, segment).display(),
                                written.offset
                            ),
                        ));
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        // A finished segment: `next_segment` moves past it (always forward).
                        self.next_segment(written);
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            // A finished segment is complete lines to its end; the active one up to `written`.
            let end = if segment < written.segment { file.metadata()?.len() } else { written.offset };
            if self.read.offset >= end {
                if segment < written.segment {
                    self.next_segment(written);
                    continue;
                }
                break;
            }
            let remaining = end - self.read.offset;
            let mut want = remaining.min((max_bytes.saturating_sub(batch.bytes.len())).max(64 * 1024) as u64);
            let start = batch.bytes.len();
            let whole = loop {
                batch.bytes.truncate(start);
                file.seek(SeekFrom::Start(self.read.offset))?;
                file.take(want).read_to_end(&mut batch.bytes)?;
                match batch.bytes[start..].iter().rposition(|&b| b == b'\n') {
                    Some(i) => break i + 1,
                    // One line longer than the read: read on to the end of what is complete.
                    None if want < remaining => want = remaining,
                    // Complete data always ends in a newline; anything else is damage: skip it.
                    None => break 0,
                }
            };
            let mut line_start = start;
            let mut consumed = whole;
            for i in start..start + whole {
                if batch.bytes[i] != b'\n' {
                    continue;
                }
                if batch.len() >= max_events {
                    consumed = line_start - start;
                    break;
                }
                if i > line_start {
                    batch.events.push(line_start..i);
                    added += 1;
                }
                line_start = i + 1;
            }
            batch.bytes.truncate(start + consumed);
            self.read.offset += if whole == 0 { remaining } else { consumed as u64 };
        }
        Ok(added)
    }

    fn next_segment(&mut self, written: Position) {
        let next = segments(&self.dir)
            .ok()
            .and_then(|s| s.into_iter().find(|&s| s > self.read.segment))
            .unwrap_or(written.segment)
            .min(written.segment);
        self.read = Position { segment: next, offset: 0 };
        self.file = None;
    }

    /// Everything read so far is delivered: move the cursor there, durably, and delete the
    /// segments left behind.
    pub fn ack(&mut self) -> io::Result<()> {
        if self.read == self.cursor {
            return Ok(());
        }
        let old = self.cursor.segment;
        self.cursor = self.read;
        let tmp = self.dir.join("cursor.tmp");
        {
            let mut file = File::create(&tmp)?;
            writeln!(file, "{} {}", self.cursor.segment, self.cursor.offset)?;
            // A cursor lost to a power cut only means re-sending delivered events, which
            // OpenMeter de-duplicates: sync it only when every write is synced anyway.
            if self.fsync == Fsync::Always {
                file.sync_data()?;
            }
        }
        fs::rename(&tmp, self.dir.join(CURSOR))?;
        // The rename is made durable with the cursor's data (`always`); removals whenever
        // anything is synced, so a delivered segment does not come back after a power cut.
        let mut sync = self.fsync == Fsync::Always;
        if self.cursor.segment > old {
            for seg in segments(&self.dir)?.into_iter().filter(|&s| s < self.cursor.segment) {
                let path = segment_path(&self.dir, seg);
                let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                // In a legacy root an empty segment may be a live old process's fresh one.
                if self.legacy && len == 0 {
                    continue;
                }
                if fs::remove_file(&path).is_ok() {
                    self.shared.bytes.fetch_sub(len, Ordering::Relaxed);
                    sync |= self.fsync != Fsync::Never;
                }
            }
        }
        if sync {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

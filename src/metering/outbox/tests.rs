use super::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("outbox-{name}-{}-{:x}", std::process::id(), fastrand::u64(..)));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn line(i: usize) -> Vec<u8> {
    format!("{{\"id\":\"e{i}\",\"pad\":\"{}\"}}\n", "x".repeat(i % 7)).into_bytes()
}

fn ids(batch: &Batch) -> Vec<String> {
    (0..batch.len())
        .map(|i| serde_json::from_slice::<serde_json::Value>(batch.event(i)).unwrap()["id"].as_str().unwrap().into())
        .collect()
}

#[test]
fn events_are_read_in_order_across_segments_and_acks_survive_a_reopen() {
    let dir = temp_dir("order");
    let shared = Arc::new(Shared::default());
    let (mut writer, mut reader, recovered) = open(&dir, 1024, Fsync::Never, shared.clone()).unwrap();
    assert_eq!(recovered.undelivered, 0);
    for i in 0..300 {
        writer.append(&line(i)).unwrap();
    }
    assert!(segments(&dir).unwrap().len() > 2, "rotation happened");
    let mut batch = Batch::default();
    reader.read_more(&mut batch, 120, 1 << 20).unwrap();
    assert_eq!(ids(&batch), (0..120).map(|i| format!("e{i}")).collect::<Vec<_>>());
    reader.ack().unwrap();
    batch.clear();
    // Read the next 50 but crash before acknowledging them.
    reader.read_more(&mut batch, 50, 1 << 20).unwrap();
    assert_eq!(batch.len(), 50);
    drop((writer, reader));

    let shared = Arc::new(Shared::default());
    let (_writer, mut reader, recovered) = open(&dir, 1024, Fsync::Never, shared.clone()).unwrap();
    assert_eq!(recovered.undelivered, 180, "everything after the cursor is replayed");
    let mut batch = Batch::default();
    reader.read_more(&mut batch, 1000, 1 << 20).unwrap();
    assert_eq!(ids(&batch), (120..300).map(|i| format!("e{i}")).collect::<Vec<_>>());
    let before = shared.bytes.load(Ordering::Relaxed);
    reader.ack().unwrap();
    assert!(shared.bytes.load(Ordering::Relaxed) < before, "delivered segments are deleted");
    let body = batch.body(0..2);
    let parsed: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(parsed[1]["id"], "e121");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_torn_last_line_is_cut_on_open() {
    let dir = temp_dir("torn");
    let shared = Arc::new(Shared::default());
    let (mut writer, reader, _) = open(&dir, 1 << 20, Fsync::Never, shared).unwrap();
    writer.append(&line(1)).unwrap();
    writer.append(&line(2)).unwrap();
    drop((writer, reader));
    let last = *segments(&dir).unwrap().last().unwrap();
    let mut f = OpenOptions::new().append(true).open(segment_path(&dir, last)).unwrap();
    f.write_all(b"{\"id\":\"torn").unwrap();
    drop(f);
    let (_w, mut reader, recovered) = open(&dir, 1 << 20, Fsync::Never, Arc::new(Shared::default())).unwrap();
    assert_eq!(recovered.undelivered, 2);
    assert_eq!(recovered.truncated_bytes, 11);
    let mut batch = Batch::default();
    reader.read_more(&mut batch, 10, 1 << 20).unwrap();
    assert_eq!(ids(&batch), ["e1", "e2"]);
    fs::remove_dir_all(&dir).unwrap();
}

/// Two processes on one directory: the second used to delete the first one's (empty)
/// active segment and interleave cursors. It must be refused, naming the holder.
#[test]
fn a_second_open_of_a_directory_in_use_is_refused_and_the_first_loses_nothing() {
    let dir = temp_dir("lock");
    let (mut writer, mut reader, _) = open(&dir, 1 << 20, Fsync::Never, Arc::new(Shared::default())).unwrap();
    let second = open(&dir, 1 << 20, Fsync::Never, Arc::new(Shared::default()));
    let error = match second {
        Ok(_) => panic!("a second open of {} was allowed while the first holds it", dir.display()),
        Err(e) => e.to_string(),
    };
    assert!(error.contains(&format!("pid {}", std::process::id())), "the error names the holder: {error}");
    writer.append(&[line(1), line(2)].concat()).unwrap();
    let mut batch = Batch::default();
    reader.read_more(&mut batch, 10, 1 << 20).unwrap();
    assert_eq!(ids(&batch), ["e1", "e2"]);
    drop((writer, reader));
    // Once the holder is gone the directory can be opened again, and nothing was lost.
    let (_w, _r, recovered) = open(&dir, 1 << 20, Fsync::Never, Arc::new(Shared::default())).unwrap();
    assert_eq!(recovered.undelivered, 2);
    fs::remove_dir_all(&dir).unwrap();
}

/// The active segment deleted under the reader (as a second process on the directory did)
/// must not send it round the same `NotFound` for ever on the sender's event loop.
#[test]
fn the_reader_does_not_spin_when_the_active_segment_vanishes() {
    let dir = temp_dir("vanish");
    let (mut writer, mut reader, _) = open(&dir, 1 << 20, Fsync::Never, Arc::new(Shared::default())).unwrap();
    writer.append(&[line(1), line(2)].concat()).unwrap();
    let active = *segments(&dir).unwrap().last().unwrap();
    fs::remove_file(segment_path(&dir, active)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut batch = Batch::default();
        let result = reader.read_more(&mut batch, 10, 1 << 20).map(|n| (n, reader.read));
        let _ = tx.send(result.map_err(|e| e.to_string()));
    });
    let result = rx.recv_timeout(Duration::from_secs(5));
    assert!(result.is_ok(), "read_more did not return within 5s: it spins on the vanished segment");
    let error = result.unwrap().expect_err("the loss is reported");
    assert!(error.contains("vanished"), "{error}");
    drop(writer);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn the_reader_never_sees_past_the_published_write() {
    let dir = temp_dir("publish");
    let shared = Arc::new(Shared::default());
    let (mut writer, mut reader, _) = open(&dir, 1 << 20, Fsync::Never, shared).unwrap();
    let mut batch = Batch::default();
    assert_eq!(reader.read_more(&mut batch, 10, 1 << 20).unwrap(), 0);
    writer.append(&[line(1), line(2)].concat()).unwrap();
    assert_eq!(reader.read_more(&mut batch, 10, 1 << 20).unwrap(), 2);
    assert_eq!(reader.read_more(&mut batch, 10, 1 << 20).unwrap(), 0);
    writer.append(&line(3)).unwrap();
    assert_eq!(reader.read_more(&mut batch, 10, 1 << 20).unwrap(), 1);
    assert_eq!(ids(&batch), ["e1", "e2", "e3"]);
    fs::remove_dir_all(&dir).unwrap();
}

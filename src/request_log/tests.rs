use super::row::{copy_text, day_of, redacted};
use super::schema::{lock_key, next_day, partition_name};

#[test]
fn redaction_leaves_no_match_and_bodies_stay_within_their_cap() {
    let patterns = [regex::Regex::new(r"sk-[A-Za-z0-9]{8,}").unwrap()];
    let text = "key sk-abcdef123456 and sk-ZZZZZZZZZZ, é".repeat(50);
    let out = redacted(&text, &patterns, 300);
    assert!(!patterns[0].is_match(&out), "{out}");
    assert!(out.contains("[REDACTED]"));
    assert!(out.len() <= 300);
    // A cap inside a multi-byte character cuts before it.
    assert_eq!(redacted("aé", &[], 2), "a");
    // PostgreSQL refuses NUL in text: one in a body must not poison a batch.
    assert_eq!(redacted("a\0b", &[], 10), "ab");
}

#[test]
fn copy_data_keeps_json_backslashes_and_lines_apart() {
    let mut out = Vec::new();
    copy_text([&br#"{"a":"x\"y\\n"}"#[..], b"{}"].into_iter(), &mut out);
    assert_eq!(out, br#"{"a":"x\\"y\\\\n"}"#.iter().copied().chain(*b"\n{}\n").collect::<Vec<u8>>());
}

#[test]
fn days_partitions_and_locks() {
    assert_eq!(day_of(br#"{"time":"2026-12-07T05:00:00.000Z","x":1}"#), Some("2026-12-07"));
    assert_eq!(day_of(b"{}"), None);
    assert_eq!(partition_name("2026-12-07"), "requests_p20261207");
    assert_eq!(next_day("2026-12-31"), "2027-01-01");
    assert_eq!(next_day("2028-02-28"), "2028-02-29");
    assert_eq!(next_day("2026-02-28"), "2026-03-01");
    assert_eq!(next_day("2026-04-30"), "2026-05-01");
    assert_eq!(lock_key("llm_gateway"), lock_key("llm_gateway"));
    assert_ne!(lock_key("llm_gateway"), lock_key("other"));
}

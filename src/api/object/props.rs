//! Property tests of the JSON object scanner against serde_json on generated documents and
//! byte-level mutations of them: the same accept or refuse (the scanner may refuse only what
//! it leaves to serde_json: nesting past its depth), the same members with the same raw
//! values, and the same value for a key given twice (the last).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

use super::{RawMembers, RawObject, scan};

/// A JSON value as text, spaced at random.
fn values() -> impl Strategy<Value = String> {
    let number = prop::sample::select(vec![
        "0",
        "-0",
        "7",
        "-12",
        "1.5",
        "0.25e-3",
        "1E+2",
        "2e400",
        "12345678901234567890",
        "-0.0",
    ]);
    let string = prop::collection::vec(
        prop::sample::select(vec![
            "a",
            "é",
            "🌍",
            "\\\"",
            "\\\\",
            "\\/",
            "\\n",
            "\\u00e9",
            "\\ud83d\\ude00",
            "\\ud800",
            " ",
        ]),
        0..4,
    )
    .prop_map(|parts| format!("\"{}\"", parts.concat()));
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        number.prop_map(str::to_owned),
        string.clone(),
    ];
    let space = prop::sample::select(vec!["", "", " ", "\n", "\t", "\r\n "]);
    leaf.prop_recursive(4, 24, 4, move |inner| {
        let member = (string.clone(), space.clone(), inner.clone()).prop_map(|(k, s, v)| format!("{k}{s}:{s}{v}"));
        prop_oneof![
            prop::collection::vec(inner, 0..4).prop_map(|items| format!("[{}]", items.join(","))),
            (prop::collection::vec(member, 0..4), space.clone())
                .prop_map(|(members, s)| format!("{{{s}{}{s}}}", members.join(&format!(",{s}")))),
        ]
    })
}

/// A document: mostly an object (keys repeated now and then), sometimes another value.
fn documents() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec!["\"model\"", "\"a\"", "\"k\\u0041\"", "\"kA\"", "\"\"", "\"stream\""]);
    let member = (key, values()).prop_map(|(k, v)| format!("{k}:{v}"));
    prop_oneof![
        6 => (prop::collection::vec(member, 0..6), prop::sample::select(vec!["", " ", "\n"]))
            .prop_map(|(members, s)| format!("{s}{{{}}}{s}", members.join(","))),
        1 => values(),
    ]
}

/// A document with a byte changed, dropped or put in (from bytes that matter to JSON).
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        documents(),
        prop::collection::vec(
            (any::<usize>(), 0..3u8, prop::sample::select(b"{}[]:,\"\\ 0-.eEtfnu\x01\n\xc3".to_vec())),
            1..3,
        ),
    )
        .prop_map(|(doc, edits)| {
            let mut bytes = doc.into_bytes();
            for (at, kind, byte) in edits {
                let at = at % (bytes.len() + 1);
                match kind {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, byte),
                }
            }
            bytes
        })
}

/// Checks one input against serde_json.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let shown = String::from_utf8_lossy(bytes).into_owned();
    // serde_json reading the members with their raw values: what the scanner must agree with.
    let oracle = serde_json::from_slice::<RawMembers>(bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        for (strict, scanned) in [(true, scan::members::<true>(text)), (false, scan::members::<false>(text))] {
            match (scanned, &oracle) {
                (Some(scanned), Ok(parsed)) => {
                    let pairs = |m: &[(super::Key, &str)]| {
                        m.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_string())).collect::<Vec<_>>()
                    };
                    prop_assert_eq!(pairs(&scanned), pairs(&parsed.members), "{:?}", shown);
                }
                // Only the lenient scanner takes raw control characters in strings.
                (Some(_), Err(e)) => prop_assert!(
                    !strict && e.to_string().contains("control character"),
                    "scanner (strict: {}) took what serde_json refuses ({}): {:?}",
                    strict,
                    e,
                    shown
                ),
                (None, Ok(_)) => prop_assert!(false, "scanner (strict: {}) refused valid {:?}", strict, shown),
                (None, Err(_)) => {}
            }
        }
    }
    // The public readers: refuse what serde_json refuses; a key twice reads as its last value.
    let full = serde_json::from_slice::<Value>(bytes);
    match (RawObject::from_slice(bytes), &oracle) {
        (Ok(object), Ok(_)) => {
            if let Ok(Value::Object(map)) = &full {
                for (key, value) in map {
                    let ours: Value = serde_json::from_str(object.get(key).unwrap_or("missing")).unwrap_or(Value::Null);
                    prop_assert_eq!(&ours, value, "{} in {:?}", key, shown);
                }
            }
        }
        (Err(_), Err(_)) => {}
        (ours, theirs) => {
            prop_assert!(false, "RawObject {:?}, serde_json {:?}: {:?}", ours.is_ok(), theirs.is_ok(), shown)
        }
    }
    // The lenient reader also takes raw control characters in strings, which serde_json refuses.
    let control = oracle.as_ref().is_err_and(|e| e.to_string().contains("control character"));
    if !control {
        prop_assert_eq!(RawMembers::from_slice(bytes).is_ok(), oracle.is_ok(), "{:?}", shown);
    }
    Ok(())
}

#[test]
fn the_scanner_matches_serde_json_on_generated_documents() {
    let mut runner = TestRunner::new(Config { cases: 1000, failure_persistence: None, ..Config::default() });
    runner.run(&documents(), |doc| check(doc.as_bytes())).unwrap();
}

#[test]
fn the_scanner_matches_serde_json_on_mutated_documents() {
    let mut runner = TestRunner::new(Config { cases: 2000, failure_persistence: None, ..Config::default() });
    runner.run(&mutated(), |bytes| check(&bytes)).unwrap();
}

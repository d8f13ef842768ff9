use super::*;

#[test]
fn round_trip_keeps_order_numbers_and_unknown_fields() {
    let body = br#"{"model":"a","top_k":40,"x_vendor":{"b":1.50,"a":[1,2]},"seed":12345678901234567890}"#;
    let mut obj = RawObject::from_slice(body).unwrap();
    obj.set("model", "qwen3-32b").unwrap();
    assert_eq!(
        String::from_utf8(obj.to_vec()).unwrap(),
        r#"{"model":"qwen3-32b","top_k":40,"x_vendor":{"b":1.50,"a":[1,2]},"seed":12345678901234567890}"#
    );
}

#[test]
fn set_appends_when_absent_and_collapses_duplicates() {
    let mut obj = RawObject::from_slice(br#"{"a":1,"b":2,"a":3}"#).unwrap();
    assert_eq!(obj.get("a"), Some("3"));
    obj.set("a", &9).unwrap();
    obj.set("c", &true).unwrap();
    assert_eq!(String::from_utf8(obj.to_vec()).unwrap(), r#"{"a":9,"b":2,"c":true}"#);
}

#[test]
fn escapes_keys() {
    let mut obj = RawObject::default();
    obj.set("q\"\\\n\u{1}", &1).unwrap();
    obj.set("run é\"of\u{1f}clean\tbytes", &2).unwrap();
    let text = String::from_utf8(obj.to_vec()).unwrap();
    let back: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(back["q\"\\\n\u{1}"], 1);
    assert_eq!(back["run é\"of\u{1f}clean\tbytes"], 2);
    assert!(text.contains(r#""run é\"of\u001fclean\tbytes":2"#), "{text}");
}

#[test]
fn borrowed_members_rewrite_like_the_owned_object() {
    for body in [
        &br#"{"id":"x","model":"up","choices":[{"a":"\u00e9"}],"usage":{"prompt_tokens":3}}"#[..],
        br#"{"model":"a","esc\"aped":1,"model":"b","z":null}"#,
        br#"{"no_model":true}"#,
        br#"{}"#,
    ] {
        let members = RawMembers::from_slice(body).unwrap();
        let mut owned = RawObject::from_slice(body).unwrap();
        let ours = members.to_vec_with("model", r#""client""#);
        if owned.contains("model") {
            owned.set("model", "client").unwrap();
        }
        assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(owned.to_vec()).unwrap());
        assert_eq!(members.get("usage"), owned.get("usage"));
    }
    // One `model`: the text around its value is kept byte for byte (spacing, escapes).
    let body = br#" {"id" : "a\u00e9", "model":"up" ,"n":[1, 2]}"#;
    let members = RawMembers::from_slice(body).unwrap();
    assert_eq!(members.to_vec_with("model", r#""client""#), br#" {"id" : "a\u00e9", "model":"client" ,"n":[1, 2]}"#);
    // Nested deeper than the scanner follows: parsed by serde_json, rewritten the same way.
    let deep = format!(r#"{{"model":"up","a":{}1{}}}"#, "[".repeat(120), "]".repeat(120));
    let rewritten = RawMembers::from_slice(deep.as_bytes()).unwrap().to_vec_with("model", r#""c""#);
    assert_eq!(rewritten, deep.replace(r#""up""#, r#""c""#).into_bytes());
    assert!(RawMembers::from_slice(b"[1]").is_err());
    assert!(RawMembers::from_slice(br#"{"a":"#).is_err());
}

/// The scanner finds the same members as a full parse, and refuses what a full parse
/// refuses.
#[test]
fn scanned_members_match_a_full_parse() {
    let valid = [
        r#"{}"#,
        r#" { "a" : 1 , "b":[ ] ,"c":{ } } "#,
        r#"{"id":"x","model":"up","choices":[{"index":0,"delta":{"content":"a \"q\" \\ \u00e9 \n"},"finish_reason":null}],"usage":{"prompt_tokens":3,"x":[1.5e-3,-0,0.25,1E+2,true,false,null]}}"#,
        r#"{"k\"ey":"v","k\u0041":[["deep",[{"x":[]}]]],"e":-12.5E3}"#,
        "{\"ws\":\t[\n1\r,\n2 ]\n}",
        r#"{"a":1,"a":2}"#,
    ];
    for text in valid {
        let scanned = scan::members::<true>(text).unwrap_or_else(|| panic!("scanner refused {text}"));
        let parsed: RawMembers = serde_json::from_str(text).unwrap();
        let pairs =
            |m: &[(Key, &str)]| m.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_string())).collect::<Vec<_>>();
        assert_eq!(pairs(&scanned), pairs(&parsed.members), "{text}");
    }
    let invalid = [
        "",
        "[]",
        "1",
        r#""s""#,
        "{",
        "}",
        r#"{"a"}"#,
        r#"{"a":}"#,
        r#"{"a":1,}"#,
        r#"{"a":1"#,
        r#"{a:1}"#,
        r#"{"a":1}x"#,
        r#"{"a":[1,]}"#,
        r#"{"a":[1 2]}"#,
        r#"{"a":tru}"#,
        r#"{"a":nul}"#,
        r#"{"a":01}"#,
        r#"{"a":1.}"#,
        r#"{"a":.5}"#,
        r#"{"a":1e}"#,
        r#"{"a":-}"#,
        r#"{"a":+1}"#,
        r#"{"a":"\x"}"#,
        r#"{"a":"\u12g4"}"#,
        r#"{"a":"open}"#,
        r#"{"a":{"b" 1}}"#,
        r#"{"a":{1:2}}"#,
        r#"{"a":[}"#,
        r#"{"a":{]}"#,
        r#"{"a":1}}"#,
    ];
    for text in invalid {
        assert!(scan::members::<true>(text).is_none(), "scanner accepted {text}");
        assert!(scan::members::<false>(text).is_none(), "lenient scanner accepted {text}");
        assert!(RawMembers::from_slice(text.as_bytes()).is_err(), "{text}");
        assert!(RawObject::from_slice(text.as_bytes()).is_err(), "{text}");
    }
    // Raw control characters in strings (JSON wants them escaped), in a value or a key,
    // before and past the first eight bytes: refused in what clients send, let through in
    // upstream answers.
    for text in ["{\"a\":\"line\nbreak\"}", "{\"a\":\"\t\"}", "{\"a\":\"0123456789\u{1}\"}", "{\"k\u{1f}\":1}"] {
        assert!(scan::members::<true>(text).is_none(), "scanner accepted {text:?}");
        let e = RawObject::from_slice(text.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("control character"), "{e}");
        assert_eq!(RawMembers::from_slice(text.as_bytes()).unwrap().members.len(), 1, "{text:?}");
    }
    // Nesting deeper than the scanner follows goes to serde_json, which takes it.
    let deep = format!(r#"{{"a":{}1{}}}"#, "[".repeat(120), "]".repeat(120));
    assert!(scan::members::<true>(&deep).is_none());
    assert_eq!(RawMembers::from_slice(deep.as_bytes()).unwrap().get("a").map(str::len), Some(241));
}

#[test]
fn finds_where_a_string_stops() {
    let stops = |c: u8| c == b'"' || c == b'\\' || c < 0x20;
    for text in [
        "",
        "a",
        "\"",
        "abcdefgh\"",
        "abcdefg\\xx\"",
        "0123456789abcdef0123\"",
        "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\\",
        "tab\there",
        "0123456789\n",
        "\u{1f}",
        " !#[]\u{7f}\u{e9}",
    ] {
        let expected = text.bytes().position(stops);
        assert_eq!(scan::string_stop::<true>(text.as_bytes()), expected, "{text:?}");
        let lenient = text.bytes().position(|c| c == b'"' || c == b'\\');
        assert_eq!(scan::string_stop::<false>(text.as_bytes()), lenient, "{text:?}");
    }
    // Every position, in a long run of other bytes (those just above the stops included:
    // a space, `!`, `#` and `]` are one above a control character, `"` and `[`).
    for at in 0..40 {
        for mark in [b'"', b'\\', b'\n', 0x1f, 0] {
            let mut bytes = vec![b'!'; 40];
            bytes.iter_mut().step_by(2).for_each(|c| *c = b']');
            bytes.iter_mut().skip(1).step_by(3).for_each(|c| *c = b' ');
            bytes.iter_mut().skip(2).step_by(5).for_each(|c| *c = b'#');
            bytes[at] = mark;
            assert_eq!(scan::string_stop::<true>(&bytes), Some(at), "{mark} at {at}");
        }
    }
}

/// An object read from text is written back as that text, with the replaced values swapped
/// in and appended members before the closing brace; removing a member writes it compact.
#[test]
fn owned_objects_write_back_their_text() {
    let body = br#" { "model" : "a", "messages":[ {"role":"user"} ] ,"k\u0041":1 } "#;
    let mut obj = RawObject::from_slice(body).unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["model", "messages", "kA"]);
    assert_eq!(obj.get("kA"), Some("1"));
    assert_eq!(obj.to_vec(), body);
    obj.set("model", "up").unwrap();
    assert_eq!(obj.to_vec(), br#" { "model" : "up", "messages":[ {"role":"user"} ] ,"k\u0041":1 } "#);
    obj.set("stream_options", &serde_json::json!({"include_usage": true})).unwrap();
    obj.set("x\"", &1).unwrap();
    let text = obj.to_vec();
    assert_eq!(
        text,
        br#" { "model" : "up", "messages":[ {"role":"user"} ] ,"k\u0041":1 ,"stream_options":{"include_usage":true},"x\"":1} "#
    );
    let back: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(back["stream_options"]["include_usage"], true);
    // A clone shares the text and is changed on its own.
    let mut copy = obj.clone();
    copy.set("model", "other").unwrap();
    assert_eq!(obj.get("model"), Some(r#""up""#));
    assert_eq!(copy.get("model"), Some(r#""other""#));
    // Appended to an empty object: no leading comma.
    let mut empty = RawObject::from_slice(b"{ }").unwrap();
    empty.set("a", &1).unwrap();
    assert_eq!(empty.to_vec(), br#"{ "a":1}"#);
    // Removed: compact, member by member.
    obj.remove("messages");
    assert_eq!(
        String::from_utf8(obj.to_vec()).unwrap(),
        r#"{"model":"up","kA":1,"stream_options":{"include_usage":true},"x\"":1}"#
    );
}

#[test]
fn rejects_non_objects() {
    assert!(RawObject::from_slice(b"[1,2]").is_err());
    assert!(RawObject::from_slice(b"\"x\"").is_err());
    assert!(RawObject::from_slice(b"{\"a\":").is_err());
}

//! A JSON object whose members stay verbatim: we parse the top level only, read the few fields
//! we act on, replace one or two, and write the rest back byte for byte in their original order.

use std::fmt;

use serde::Serialize;
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Top-level members of a JSON object, in order, with their values unparsed.
#[derive(Debug, Default, Clone)]
pub struct RawObject {
    members: Vec<(String, Box<RawValue>)>,
}

impl RawObject {
    /// Parses `bytes` as a JSON object (anything else is an error).
    pub fn from_slice(bytes: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(bytes)
    }

    pub fn get(&self, key: &str) -> Option<&RawValue> {
        // Last wins, as in every mainstream JSON parser.
        self.members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_ref())
    }

    /// Parses one member into `T`; `Ok(None)` when absent or JSON `null`.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self, key: &str) -> Result<Option<T>, serde_json::Error> {
        parse_member(self.get(key))
    }

    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to the JSON encoding of `value`, replacing every existing occurrence in place
    /// (or appending when absent).
    pub fn set<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> serde_json::Result<()> {
        let raw = serde_json::value::to_raw_value(value)?;
        self.set_raw(key, raw);
        Ok(())
    }

    pub fn set_raw(&mut self, key: &str, raw: Box<RawValue>) {
        let mut slots = self.members.iter_mut().filter(|(k, _)| k == key);
        match slots.next() {
            Some(slot) => {
                slot.1 = raw;
                // Duplicates after the first would shadow the new value: drop them.
                if self.members.iter().filter(|(k, _)| k == key).count() > 1 {
                    let mut seen = false;
                    self.members.retain(|(k, _)| {
                        if k != key {
                            return true;
                        }
                        let keep = !seen;
                        seen = true;
                        keep
                    });
                }
            }
            None => self.members.push((key.to_owned(), raw)),
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.members.retain(|(k, _)| k != key);
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|(k, _)| k.as_str())
    }

    /// Writes the object back as compact JSON.
    pub fn to_vec(&self) -> Vec<u8> {
        let len: usize = self.members.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum();
        let mut out = Vec::with_capacity(len + 2);
        out.push(b'{');
        for (i, (key, value)) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_string(&mut out, key);
            out.push(b':');
            out.extend_from_slice(value.get().as_bytes());
        }
        out.push(b'}');
        out
    }
}

/// Top-level members of a JSON object borrowed from the input, each value as its raw JSON text:
/// no member is copied or allocated (keys with escapes excepted). For one-shot rewrites on the
/// hot path — an upstream answer or a stream chunk read once, one member replaced, written out.
#[derive(Debug, Default)]
pub struct RawMembers<'a> {
    /// The object's text, as parsed.
    text: &'a str,
    members: Vec<(Key<'a>, &'a str)>,
}

impl<'a> RawMembers<'a> {
    /// Parses `bytes` as a JSON object (anything else is an error).
    ///
    /// A scanner of our own finds the members: it checks the structure of the values it steps
    /// over (brackets, strings and their escapes, literals, number characters) without building
    /// anything from them, which costs a fraction of a full parse. What it refuses goes through
    /// serde_json, for its exact error (or for the rare input the scanner is stricter about,
    /// such as nesting deeper than it follows).
    pub fn from_slice(bytes: &'a [u8]) -> serde_json::Result<Self> {
        // UTF-8 checked once for the whole text, not again for every member's value.
        let Ok(text) = std::str::from_utf8(bytes) else { return serde_json::from_slice(bytes) };
        match scan::members(text) {
            Some(members) => Ok(Self { text, members }),
            None => serde_json::from_str(text).map(|parsed: RawMembers| Self { text, ..parsed }),
        }
    }

    /// The raw JSON text of a member's value.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.members.iter().rev().find(|(k, _)| k.as_str() == key).map(|(_, v)| *v)
    }

    /// Parses one member into `T`; `Ok(None)` when absent or JSON `null`.
    pub fn parse<T: Deserialize<'a>>(&self, key: &str) -> Result<Option<T>, serde_json::Error> {
        match self.get(key) {
            None | Some("null") => Ok(None),
            Some(raw) => serde_json::from_str(raw).map(Some),
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Writes the object back with the `key` member's value replaced by the raw JSON `value`.
    /// With one such member, the rest is the text as it came; without one, or with duplicates
    /// (collapsed to the first, as `RawObject::set` does), compact JSON member by member.
    pub fn to_vec_with(&self, key: &str, value: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len() + value.len() + 2);
        self.write_with(&mut out, key, value);
        out
    }

    /// Roughly the length of the object written back: the text it was read from (written
    /// member by member, compact: no longer but for raw control characters it escapes).
    pub fn encoded_len(&self) -> usize {
        self.text.len()
    }

    /// `to_vec_with`, appending to `out`.
    pub fn write_with(&self, out: &mut Vec<u8>, key: &str, value: &str) {
        let mut named = self.members.iter().filter(|(k, _)| k.as_str() == key);
        if let (Some((_, old)), None) = (named.next(), named.next())
            && let Some((before, after)) = self.around(old)
        {
            // One member to replace: the text around its value is copied as it came.
            for part in [before, value, after] {
                out.extend_from_slice(part.as_bytes());
            }
            return;
        }
        out.push(b'{');
        let (mut replaced, mut first) = (false, true);
        for (name, member) in &self.members {
            let member = match name.as_str() == key {
                true if replaced => continue,
                true => {
                    replaced = true;
                    value
                }
                false => member,
            };
            if !first {
                out.push(b',');
            }
            first = false;
            match name {
                // Taken from the input as it was: it had nothing to escape.
                Key::Borrowed(name) => {
                    out.push(b'"');
                    out.extend_from_slice(name.as_bytes());
                    out.push(b'"');
                }
                Key::Owned(name) => write_json_string(out, name),
            }
            out.push(b':');
            out.extend_from_slice(member.as_bytes());
        }
        out.push(b'}');
    }
}

impl<'a> RawMembers<'a> {
    /// The object's text before and after `value`, one of its members' values.
    fn around(&self, value: &'a str) -> Option<(&'a str, &'a str)> {
        let start = (value.as_ptr() as usize).checked_sub(self.text.as_ptr() as usize)?;
        let end = start.checked_add(value.len()).filter(|end| *end <= self.text.len())?;
        Some((self.text.get(..start)?, self.text.get(end..)?))
    }
}

/// The scanner behind `RawMembers::from_slice`.
mod scan {
    use super::Key;

    /// Containers nested deeper than this are left to serde_json (its own limit is 128).
    const MAX_DEPTH: usize = 100;

    /// The members of the JSON object `text` (whitespace around it allowed); `None` when it is
    /// not one, or not one the scanner follows.
    pub(super) fn members(text: &str) -> Option<Vec<(Key<'_>, &str)>> {
        let b = text.as_bytes();
        let mut i = skip_ws(b, 0);
        if b.get(i) != Some(&b'{') {
            return None;
        }
        let mut members = Vec::with_capacity(8);
        i = skip_ws(b, i + 1);
        if b.get(i) == Some(&b'}') {
            i += 1;
        } else {
            loop {
                let key_start = i;
                let (key_end, escaped) = string(b, i)?;
                let key = if escaped {
                    Key::Owned(serde_json::from_str(&text[key_start..key_end]).ok()?)
                } else {
                    Key::Borrowed(&text[key_start + 1..key_end - 1])
                };
                i = skip_ws(b, key_end);
                if b.get(i) != Some(&b':') {
                    return None;
                }
                let value_start = skip_ws(b, i + 1);
                let value_end = value(b, value_start, 0)?;
                members.push((key, &text[value_start..value_end]));
                i = skip_ws(b, value_end);
                match b.get(i)? {
                    b',' => i = skip_ws(b, i + 1),
                    b'}' => {
                        i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        (skip_ws(b, i) == b.len()).then_some(members)
    }

    #[inline(always)]
    fn skip_ws(b: &[u8], mut i: usize) -> usize {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(i) {
            i += 1;
        }
        i
    }

    /// The end of the string starting at `b[i]` (just past its closing quote), and whether it
    /// has escapes.
    #[inline(always)]
    fn string(b: &[u8], i: usize) -> Option<(usize, bool)> {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let mut i = i + 1;
        let mut escaped = false;
        loop {
            i += quote_or_backslash(&b[i..])?;
            if b[i] == b'"' {
                return Some((i + 1, escaped));
            }
            escaped = true;
            match b.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' if b.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => i += 6,
                _ => return None,
            }
        }
    }

    /// The first `"` or `\\` in `b`. Strings here are mostly short: eight bytes at a time in a
    /// word beat a vectorised search's set-up.
    #[inline(always)]
    pub(super) fn quote_or_backslash(b: &[u8]) -> Option<usize> {
        const ONES: u64 = u64::from_le_bytes([1; 8]);
        const HIGH: u64 = ONES << 7;
        // High bit set in each byte of `x` that is zero (and maybe above one: only the lowest
        // flag is read, and it is exact).
        let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
        let mut words = b.chunks_exact(8);
        for (n, word) in words.by_ref().enumerate() {
            let w = u64::from_le_bytes(word.try_into().unwrap_or_default());
            let found = zero_bytes(w ^ (ONES * u64::from(b'"'))) | zero_bytes(w ^ (ONES * u64::from(b'\\')));
            if found != 0 {
                return Some(n * 8 + (found.trailing_zeros() / 8) as usize);
            }
        }
        let done = b.len() - words.remainder().len();
        words.remainder().iter().position(|&c| c == b'"' || c == b'\\').map(|p| done + p)
    }

    /// The end of the JSON value starting at `b[i]`.
    fn value(b: &[u8], i: usize, depth: usize) -> Option<usize> {
        match *b.get(i)? {
            b'"' => string(b, i).map(|(end, _)| end),
            open @ (b'{' | b'[') => {
                if depth == MAX_DEPTH {
                    return None;
                }
                let close = if open == b'{' { b'}' } else { b']' };
                let mut i = skip_ws(b, i + 1);
                if b.get(i) == Some(&close) {
                    return Some(i + 1);
                }
                loop {
                    if open == b'{' {
                        i = skip_ws(b, string(b, i)?.0);
                        if b.get(i) != Some(&b':') {
                            return None;
                        }
                        i = skip_ws(b, i + 1);
                    }
                    i = skip_ws(b, value(b, i, depth + 1)?);
                    match *b.get(i)? {
                        b',' => i = skip_ws(b, i + 1),
                        c if c == close => return Some(i + 1),
                        _ => return None,
                    }
                }
            }
            b't' => literal(b, i, b"true"),
            b'f' => literal(b, i, b"false"),
            b'n' => literal(b, i, b"null"),
            b'-' | b'0'..=b'9' => number(b, i),
            _ => None,
        }
    }

    #[inline(always)]
    fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
        b[i..].starts_with(word).then_some(i + word.len())
    }

    /// A JSON number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    #[inline(always)]
    fn number(b: &[u8], mut i: usize) -> Option<usize> {
        let digits = |i: usize| i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if b[i] == b'-' {
            i += 1;
        }
        match b.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => i = digits(i),
            _ => return None,
        }
        if b.get(i) == Some(&b'.') {
            let end = digits(i + 1);
            if end == i + 1 {
                return None;
            }
            i = end;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            let end = digits(i);
            if end == i {
                return None;
            }
            i = end;
        }
        Some(i)
    }
}

/// A member parsed into `T`; `Ok(None)` when absent or JSON `null`.
fn parse_member<'a, T: Deserialize<'a>>(raw: Option<&'a RawValue>) -> Result<Option<T>, serde_json::Error> {
    match raw {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => serde_json::from_str(raw.get()).map(Some),
    }
}

/// An object key: borrowed from the input unless it had escapes.
#[derive(Debug)]
enum Key<'a> {
    Borrowed(&'a str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_owned()))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for RawMembers<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = RawMembers<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawMembers<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    members.push((key, value.get()));
                }
                Ok(RawMembers { text: "", members })
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

/// Appends `s` as a JSON string literal.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Runs of bytes that need no escape are copied whole.
    let mut clean = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&bytes[clean..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
                clean = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[clean..i]);
        out.extend_from_slice(escape);
        clean = i + 1;
    }
    out.extend_from_slice(&bytes[clean..]);
    out.push(b'"');
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = RawObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<String>()? {
                    let value: Box<RawValue> = map.next_value()?;
                    members.push((key, value));
                }
                Ok(RawObject { members })
            }
        }
        deserializer.deserialize_map(ObjectVisitor).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(obj.get("a").unwrap().get(), "3");
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
            let model = serde_json::value::to_raw_value("client").unwrap();
            let ours = members.to_vec_with("model", model.get());
            if owned.contains("model") {
                owned.set_raw("model", model.clone());
            }
            assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(owned.to_vec()).unwrap());
            assert_eq!(members.get("usage"), owned.get("usage").map(|r| r.get()));
        }
        // One `model`: the text around its value is kept byte for byte (spacing, escapes).
        let body = br#" {"id" : "a\u00e9", "model":"up" ,"n":[1, 2]}"#;
        let members = RawMembers::from_slice(body).unwrap();
        assert_eq!(
            members.to_vec_with("model", r#""client""#),
            br#" {"id" : "a\u00e9", "model":"client" ,"n":[1, 2]}"#
        );
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
            let scanned = scan::members(text).unwrap_or_else(|| panic!("scanner refused {text}"));
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
            assert!(scan::members(text).is_none(), "scanner accepted {text}");
            assert!(RawMembers::from_slice(text.as_bytes()).is_err(), "{text}");
        }
        // Nesting deeper than the scanner follows goes to serde_json, which takes it.
        let deep = format!(r#"{{"a":{}1{}}}"#, "[".repeat(120), "]".repeat(120));
        assert!(scan::members(&deep).is_none());
        assert_eq!(RawMembers::from_slice(deep.as_bytes()).unwrap().get("a").map(str::len), Some(241));
    }

    #[test]
    fn finds_the_first_quote_or_backslash() {
        for text in
            ["", "a", "\"", "abcdefgh\"", "abcdefg\\xx\"", "0123456789abcdef0123\"", "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\\"]
        {
            let expected = text.bytes().position(|c| c == b'"' || c == b'\\');
            assert_eq!(scan::quote_or_backslash(text.as_bytes()), expected, "{text:?}");
        }
        // Every position, in a long run of other bytes (those just below and above included).
        for at in 0..40 {
            for mark in [b'"', b'\\'] {
                let mut bytes = vec![b'!'; 40];
                bytes.iter_mut().step_by(2).for_each(|c| *c = b']');
                bytes[at] = mark;
                assert_eq!(scan::quote_or_backslash(&bytes), Some(at));
            }
        }
    }

    #[test]
    fn rejects_non_objects() {
        assert!(RawObject::from_slice(b"[1,2]").is_err());
        assert!(RawObject::from_slice(b"\"x\"").is_err());
        assert!(RawObject::from_slice(b"{\"a\":").is_err());
    }
}

//! A JSON object whose members stay verbatim: we parse the top level only, read the few fields
//! we act on, replace one or two, and write the rest back byte for byte in their original order.
//!
//! Request bodies, answers and stream chunks are all read this way. A scanner of our own finds
//! the top-level members and checks the structure of the values it steps over — brackets,
//! strings and escapes, literals, numbers — without building anything, searching strings eight
//! bytes at a time; what it refuses goes through serde_json for the exact error. For what
//! clients send it is as strict as serde_json (a raw control character in a string is a 400);
//! upstream answers with one are let through as they came. A request body is kept as the text
//! it arrived as, its members ranges of it. With only `model` to replace, the text before and
//! after its value is copied as it came, in both directions. (The chat request's messages are
//! checked separately, with serde_json's borrowed views: `ingress::request`.)

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use serde::Serialize;
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Top-level members of a JSON object, in order, with their values unparsed: the text it was
/// read from is kept (shared), and each member is a range of it until replaced.
#[derive(Debug, Default, Clone)]
pub struct RawObject {
    /// The object's text as it was read (empty for an object built in code).
    text: Arc<str>,
    /// Those read from `text`, in its order, then those appended.
    members: Vec<Member>,
    /// Members were removed or collapsed: `to_vec` writes member by member.
    reordered: bool,
}

#[derive(Debug, Clone)]
struct Member {
    key: Text,
    value: Text,
    /// Where the value was in the text, for a member read from it (`None`: appended).
    origin: Option<Range<u32>>,
}

/// A piece of text: a range of the object's text, or text of its own.
#[derive(Debug, Clone)]
enum Text {
    At(Range<u32>),
    Own(Box<str>),
}

impl Text {
    /// The piece, `text` being the object's.
    fn of<'a>(&'a self, text: &'a str) -> &'a str {
        match self {
            Text::At(range) => &text[range.start as usize..range.end as usize],
            Text::Own(own) => own,
        }
    }
}

impl RawObject {
    /// Parses `bytes` as a JSON object (anything else is an error, raw control characters in
    /// strings included), with the scanner of `RawMembers::from_slice` (serde_json for what it
    /// refuses, for the exact error).
    pub fn from_slice(bytes: &[u8]) -> serde_json::Result<Self> {
        let borrowed = RawMembers::read::<true>(bytes)?;
        if u32::try_from(borrowed.text.len()).is_err() {
            return Err(de::Error::custom("the JSON text is longer than 4 GiB"));
        }
        let base = borrowed.text.as_ptr() as usize;
        // Where a borrowed piece is in the text the members were read from (every piece is a
        // slice of it).
        let range = |piece: &str| {
            let start = (piece.as_ptr() as usize).checked_sub(base)?;
            (start + piece.len() <= borrowed.text.len()).then(|| start as u32..(start + piece.len()) as u32)
        };
        let mut members = Vec::with_capacity(borrowed.members.len());
        for (key, value) in &borrowed.members {
            let key = match key {
                Key::Borrowed(k) => range(k).map_or_else(|| Text::Own((*k).into()), Text::At),
                Key::Owned(k) => Text::Own(k.as_str().into()),
            };
            let origin = range(value).ok_or_else(|| de::Error::custom("a member is not part of its object's text"))?;
            members.push(Member { key, value: Text::At(origin.clone()), origin: Some(origin) });
        }
        Ok(Self { text: Arc::from(borrowed.text), members, reordered: false })
    }

    fn str<'a>(&'a self, piece: &'a Text) -> &'a str {
        piece.of(&self.text)
    }

    /// A key as bytes: compared without the text's character-boundary checks.
    fn key_bytes<'a>(&'a self, member: &'a Member) -> &'a [u8] {
        match &member.key {
            Text::At(range) => &self.text.as_bytes()[range.start as usize..range.end as usize],
            Text::Own(own) => own.as_bytes(),
        }
    }

    /// The raw JSON text of a member's value (the last, when the key is there twice).
    pub fn get(&self, key: &str) -> Option<&str> {
        // Last wins, as in every mainstream JSON parser.
        self.members.iter().rev().find(|m| self.key_bytes(m) == key.as_bytes()).map(|m| self.str(&m.value))
    }

    /// Parses one member into `T`; `Ok(None)` when absent or JSON `null`.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self, key: &str) -> Result<Option<T>, serde_json::Error> {
        match self.get(key) {
            None | Some("null") => Ok(None),
            Some(raw) => serde_json::from_str(raw).map(Some),
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to the JSON encoding of `value`, replacing every existing occurrence in place
    /// (or appending when absent).
    pub fn set<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> serde_json::Result<()> {
        self.set_text(key, serde_json::to_string(value)?.into_boxed_str());
        Ok(())
    }

    /// Sets `key` to `object`, as it writes itself back (as `set`): no serialising and no
    /// parsing again.
    pub fn set_object(&mut self, key: &str, object: &RawObject) {
        // (What `to_vec` writes is made of the object's text: UTF-8.)
        self.set_text(key, String::from_utf8_lossy(&object.to_vec()).into());
    }

    fn set_text(&mut self, key: &str, value: Box<str>) {
        let text = &self.text;
        let Some(first) = self.members.iter().position(|m| m.key.of(text) == key) else {
            self.members.push(Member { key: Text::Own(key.into()), value: Text::Own(value), origin: None });
            return;
        };
        self.members[first].value = Text::Own(value);
        // Duplicates after the first would shadow the new value: drop them.
        let (before, mut i) = (self.members.len(), 0);
        self.members.retain(|m| {
            i += 1;
            i <= first + 1 || m.key.of(text) != key
        });
        self.reordered |= self.members.len() != before;
    }

    pub fn remove(&mut self, key: &str) {
        let (text, before) = (&self.text, self.members.len());
        self.members.retain(|m| m.key.of(text) != key);
        self.reordered |= self.members.len() != before;
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| self.str(&m.key))
    }

    /// Writes the object back: the text it was read from with the replaced values swapped in
    /// and appended members added before its closing brace (spacing and escapes kept as they
    /// came); after a member was removed, or for an object built in code, compact JSON member
    /// by member.
    pub fn to_vec(&self) -> Vec<u8> {
        if self.reordered || self.text.is_empty() {
            return self.to_vec_compact();
        }
        let text = self.text.as_bytes();
        // Room for what replaces or adds to the text.
        let extra: usize = self
            .members
            .iter()
            .filter_map(|m| match &m.value {
                Text::Own(value) => Some(self.str(&m.key).len() + value.len() + 4),
                Text::At(_) => None,
            })
            .sum();
        let mut out = Vec::with_capacity(text.len() + extra);
        let read = self.members.iter().take_while(|m| m.origin.is_some()).count();
        let mut copied = 0;
        for member in &self.members[..read] {
            if let (Text::Own(value), Some(origin)) = (&member.value, &member.origin) {
                out.extend_from_slice(&text[copied..origin.start as usize]);
                out.extend_from_slice(value.as_bytes());
                copied = origin.end as usize;
            }
        }
        if read == self.members.len() {
            out.extend_from_slice(&text[copied..]);
            return out;
        }
        // The object's closing brace: the last `}` (only whitespace may follow it).
        let close = text.iter().rposition(|&c| c == b'}').unwrap_or(text.len());
        out.extend_from_slice(&text[copied..close]);
        for (i, member) in self.members[read..].iter().enumerate() {
            if read > 0 || i > 0 {
                out.push(b',');
            }
            write_json_string(&mut out, self.str(&member.key));
            out.push(b':');
            out.extend_from_slice(self.str(&member.value).as_bytes());
        }
        out.extend_from_slice(&text[close..]);
        out
    }

    fn to_vec_compact(&self) -> Vec<u8> {
        let len: usize = self.members.iter().map(|m| self.str(&m.key).len() + self.str(&m.value).len() + 4).sum();
        let mut out = Vec::with_capacity(len + 2);
        out.push(b'{');
        for (i, member) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_string(&mut out, self.str(&member.key));
            out.push(b':');
            out.extend_from_slice(self.str(&member.value).as_bytes());
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
    ///
    /// Raw control characters inside strings, which JSON wants escaped, are let through: an
    /// upstream's answer is forwarded byte for byte. (`RawObject::from_slice`, for what clients
    /// send, refuses them.)
    pub fn from_slice(bytes: &'a [u8]) -> serde_json::Result<Self> {
        Self::read::<false>(bytes)
    }

    /// `from_slice`; `STRICT`: raw control characters in strings are an error.
    fn read<const STRICT: bool>(bytes: &'a [u8]) -> serde_json::Result<Self> {
        // UTF-8 checked once for the whole text, not again for every member's value.
        let Ok(text) = std::str::from_utf8(bytes) else { return serde_json::from_slice(bytes) };
        match scan::members::<STRICT>(text) {
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
    pub(super) fn members<const STRICT: bool>(text: &str) -> Option<Vec<(Key<'_>, &str)>> {
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
                let (key_end, escaped) = string::<STRICT>(b, i)?;
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
                let value_end = value::<STRICT>(b, value_start, 0)?;
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
    fn string<const STRICT: bool>(b: &[u8], i: usize) -> Option<(usize, bool)> {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let mut i = i + 1;
        let mut escaped = false;
        loop {
            i += string_stop::<STRICT>(&b[i..])?;
            match b[i] {
                b'"' => return Some((i + 1, escaped)),
                b'\\' => {}
                // A raw control character (`STRICT` only): JSON wants it escaped.
                _ => return None,
            }
            escaped = true;
            match b.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' if b.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => i += 6,
                _ => return None,
            }
        }
    }

    /// The first `"`, `\\` or (`STRICT`) control character (below 0x20) in `b`: where a string
    /// ends, has an escape, or is not JSON. Strings here are mostly short: eight bytes at a time in a word beat
    /// a vectorised search's set-up.
    #[inline(always)]
    pub(super) fn string_stop<const STRICT: bool>(b: &[u8]) -> Option<usize> {
        const ONES: u64 = u64::from_le_bytes([1; 8]);
        const HIGH: u64 = ONES << 7;
        // High bit set in each byte of `x` that is zero (and maybe above one: only the lowest
        // flag is read, and it is exact).
        let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
        let mut words = b.chunks_exact(8);
        for (n, word) in words.by_ref().enumerate() {
            let w = u64::from_le_bytes(word.try_into().unwrap_or_default());
            // High bit set in each byte below 0x20 (the lowest flag is exact, as above).
            let control = if STRICT { w.wrapping_sub(ONES * 0x20) & !w & HIGH } else { 0 };
            let found = zero_bytes(w ^ (ONES * u64::from(b'"'))) | zero_bytes(w ^ (ONES * u64::from(b'\\'))) | control;
            if found != 0 {
                return Some(n * 8 + (found.trailing_zeros() / 8) as usize);
            }
        }
        let done = b.len() - words.remainder().len();
        words.remainder().iter().position(|&c| c == b'"' || c == b'\\' || (STRICT && c < 0x20)).map(|p| done + p)
    }

    /// The end of the JSON value starting at `b[i]`.
    fn value<const STRICT: bool>(b: &[u8], i: usize, depth: usize) -> Option<usize> {
        match *b.get(i)? {
            b'"' => string::<STRICT>(b, i).map(|(end, _)| end),
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
                        i = skip_ws(b, string::<STRICT>(b, i)?.0);
                        if b.get(i) != Some(&b':') {
                            return None;
                        }
                        i = skip_ws(b, i + 1);
                    }
                    i = skip_ws(b, value::<STRICT>(b, i, depth + 1)?);
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

#[cfg(test)]
mod props;

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
}

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
mod scan;

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
mod tests;

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

/// Top-level members of a JSON object borrowed from the input: no member is copied or allocated
/// (keys with escapes excepted). For one-shot rewrites on the hot path — an upstream answer or a
/// stream chunk read once, one member replaced, written out.
#[derive(Debug, Default)]
pub struct RawMembers<'a> {
    members: Vec<(Key<'a>, &'a RawValue)>,
}

impl<'a> RawMembers<'a> {
    /// Parses `bytes` as a JSON object (anything else is an error).
    pub fn from_slice(bytes: &'a [u8]) -> serde_json::Result<Self> {
        // UTF-8 checked once for the whole text, not again for every member's raw value.
        match std::str::from_utf8(bytes) {
            Ok(text) => serde_json::from_str(text),
            Err(_) => serde_json::from_slice(bytes),
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members.iter().rev().find(|(k, _)| k.as_str() == key).map(|(_, v)| *v)
    }

    /// Parses one member into `T`; `Ok(None)` when absent or JSON `null`.
    pub fn parse<T: Deserialize<'a>>(&self, key: &str) -> Result<Option<T>, serde_json::Error> {
        parse_member(self.get(key))
    }

    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Writes the object back as compact JSON with the `key` member (when present) replaced by the
    /// raw JSON `value` (duplicates collapsed to the first, as `RawObject::set` does).
    pub fn to_vec_with(&self, key: &str, value: &RawValue) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len() + value.get().len() + 2);
        self.write_with(&mut out, key, value);
        out
    }

    /// Roughly the length of the object written back.
    pub fn encoded_len(&self) -> usize {
        self.members.iter().map(|(k, v)| k.as_str().len() + v.get().len() + 4).sum()
    }

    /// `to_vec_with`, appending to `out`.
    pub fn write_with(&self, out: &mut Vec<u8>, key: &str, value: &RawValue) {
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
            out.extend_from_slice(member.get().as_bytes());
        }
        out.push(b'}');
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
                    members.push((key, value));
                }
                Ok(RawMembers { members })
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
            let ours = members.to_vec_with("model", &model);
            if owned.contains("model") {
                owned.set_raw("model", model.clone());
            }
            assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(owned.to_vec()).unwrap());
            assert_eq!(members.get("usage").map(|r| r.get()), owned.get("usage").map(|r| r.get()));
        }
        assert!(RawMembers::from_slice(b"[1]").is_err());
        assert!(RawMembers::from_slice(br#"{"a":"#).is_err());
    }

    #[test]
    fn rejects_non_objects() {
        assert!(RawObject::from_slice(b"[1,2]").is_err());
        assert!(RawObject::from_slice(b"\"x\"").is_err());
        assert!(RawObject::from_slice(b"{\"a\":").is_err());
    }
}

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

//! Billable facts and their CloudEvents: usage → disjoint token counts per type → cost in
//! nano-dollars → one JSON CloudEvent per non-zero type, written as one outbox line. Tools a
//! vendor runs itself and bills per use (web search, web fetch) are billable facts too: one event
//! per tool used, with the number of uses, under a CloudEvent type of their own
//! (`TOOL_EVENT_TYPE`), since a use is not a token and must not add to any sum of tokens.

use serde::Serialize;

use crate::api::Usage;

/// The CloudEvent type of tool uses (the tokens' is `metering.event_type`).
pub const TOOL_EVENT_TYPE: &str = "llm.server_tools";

pub use crate::api::TokenType;

/// Tools a vendor runs on its side during a request and bills per use (Anthropic's
/// `usage.server_tool_use`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ToolUse {
    WebSearch,
    WebFetch,
}

impl ToolUse {
    /// The event's `data.type`, and its id's suffix: the vendor's name for the count.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolUse::WebSearch => "web_search_requests",
            ToolUse::WebFetch => "web_fetch_requests",
        }
    }
}

/// The uses of each tool `usage` reports, zeros left out.
pub fn tool_uses(usage: &Usage) -> Vec<(ToolUse, u64)> {
    let tools = usage.server_tools;
    [(ToolUse::WebSearch, tools.web_search_requests), (ToolUse::WebFetch, tools.web_fetch_requests)]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
}

pub use crate::api::split_usage as split;

/// Everything about one finished request that its events share.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    /// Gateway-generated, unique per request: the CloudEvent ids derive from it.
    pub uid: &'a str,
    pub source: &'a str,
    pub event_type: &'a str,
    pub subject: &'a str,
    /// RFC 3339, UTC, milliseconds.
    pub time: &'a str,
    pub model: &'a str,
    pub deployment: &'a str,
    pub provider: &'a str,
    pub key_id: &'a str,
    pub team: &'a str,
    pub request_id: &'a str,
    pub cached: bool,
    pub estimated: bool,
    /// The ISO 4217 code of `data.cost`.
    pub currency: &'a str,
}

/// One event's cost: exact in nano-units (`data.cost_nanos`), and in micro-units apportioned
/// so that a request's events add up to its cost (`data.cost`, see `spend::apportion`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCost {
    pub nanos: u64,
    pub micros: u64,
}

#[derive(Serialize)]
struct CloudEvent<'a, D> {
    specversion: &'static str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    subject: &'a str,
    time: &'a str,
    data: D,
}

#[derive(Serialize)]
struct Data<'a> {
    tokens: u64,
    #[serde(rename = "type")]
    token_type: &'static str,
    model: &'a str,
    deployment: &'a str,
    provider: &'a str,
    key_id: &'a str,
    team: &'a str,
    cached: bool,
    estimated: bool,
    cost_nanos: u64,
    /// Micro-units of `currency`.
    cost: u64,
    currency: &'a str,
    request_id: &'a str,
}

/// The data of a tool-use event: the token event's, with the number of uses for the tokens and
/// no cost (the catalogue prices tokens only).
#[derive(Serialize)]
struct ToolData<'a> {
    requests: u64,
    #[serde(rename = "type")]
    tool: &'static str,
    model: &'a str,
    deployment: &'a str,
    provider: &'a str,
    key_id: &'a str,
    team: &'a str,
    cached: bool,
    estimated: bool,
    request_id: &'a str,
}

/// The CloudEvent id of one billable fact.
pub fn event_id(uid: &str, token_type: TokenType) -> String {
    format!("{uid}:{}", token_type.as_str())
}

/// Appends one CloudEvent as a single JSON line (`\n`-terminated) to `out`.
pub fn write_line(out: &mut Vec<u8>, envelope: &Envelope<'_>, token_type: TokenType, tokens: u64, cost: EventCost) {
    let id = event_id(envelope.uid, token_type);
    let event = CloudEvent {
        specversion: "1.0",
        id: &id,
        source: envelope.source,
        kind: envelope.event_type,
        subject: envelope.subject,
        time: envelope.time,
        data: Data {
            tokens,
            token_type: token_type.as_str(),
            model: envelope.model,
            deployment: envelope.deployment,
            provider: envelope.provider,
            key_id: envelope.key_id,
            team: envelope.team,
            cached: envelope.cached,
            estimated: envelope.estimated,
            cost_nanos: cost.nanos,
            cost: cost.micros,
            currency: envelope.currency,
            request_id: envelope.request_id,
        },
    };
    // Serialising plain strings and integers cannot fail; a JSON string never holds a raw newline.
    if serde_json::to_writer(&mut *out, &event).is_ok() {
        out.push(b'\n');
    }
}

/// Appends the CloudEvent of `requests` uses of `tool` as a single JSON line to `out`: the
/// envelope's, but for the type (`TOOL_EVENT_TYPE`) and the id (`<uid>:<tool>`).
pub fn write_tool_line(out: &mut Vec<u8>, envelope: &Envelope<'_>, tool: ToolUse, requests: u64) {
    let id = format!("{}:{}", envelope.uid, tool.as_str());
    let event = CloudEvent {
        specversion: "1.0",
        id: &id,
        source: envelope.source,
        kind: TOOL_EVENT_TYPE,
        subject: envelope.subject,
        time: envelope.time,
        data: ToolData {
            requests,
            tool: tool.as_str(),
            model: envelope.model,
            deployment: envelope.deployment,
            provider: envelope.provider,
            key_id: envelope.key_id,
            team: envelope.team,
            cached: envelope.cached,
            // The vendor's count: never the gateway's.
            estimated: false,
            request_id: envelope.request_id,
        },
    };
    if serde_json::to_writer(&mut *out, &event).is_ok() {
        out.push(b'\n');
    }
}

/// `2026-11-26T08:18:07.123Z` for a Unix time in milliseconds.
pub fn rfc3339_millis(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, (rem % 3600) / 60, rem % 60, unix_ms % 1000)
}

/// The inverse of `rfc3339_millis` (that exact shape only).
pub fn parse_rfc3339_millis(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 24 || b[4] != b'-' || b[10] != b'T' || b[19] != b'.' || b[23] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<u64>().ok();
    let days = days_from_civil(num(0..4)? as i64, num(5..7)?, num(8..10)?);
    let secs = u64::try_from(days).ok()? * 86_400 + num(11..13)? * 3600 + num(14..16)? * 60 + num(17..19)?;
    Some(secs * 1000 + num(20..23)?)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u64, u64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097) as u64;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe as i64 + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u64, d: u64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400) as u64;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe as i64 - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::openai::{CompletionTokensDetails, PromptTokensDetails};

    fn usage(prompt: u64, completion: u64, cached: u64, cache_write: u64, reasoning: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: Some(PromptTokensDetails { cached_tokens: cached, cache_write_tokens: cache_write }),
            completion_tokens_details: Some(CompletionTokensDetails { reasoning_tokens: reasoning }),
            ..Usage::default()
        }
    }

    #[test]
    fn types_are_disjoint_and_sum_to_the_total() {
        let u = usage(1000, 300, 600, 100, 120);
        let parts = split(&u);
        assert_eq!(
            parts,
            vec![
                (TokenType::Input, 300),
                (TokenType::Output, 180),
                (TokenType::CacheRead, 600),
                (TokenType::CacheWrite, 100),
                (TokenType::Reasoning, 120)
            ]
        );
        assert_eq!(parts.iter().map(|(_, n)| n).sum::<u64>(), u.total_tokens);
        // Plain usage: two events; absurd details are clamped, never negative.
        assert_eq!(split(&usage(5, 1, 0, 0, 0)), vec![(TokenType::Input, 5), (TokenType::Output, 1)]);
        assert_eq!(split(&usage(5, 1, 9, 9, 9)), vec![(TokenType::CacheRead, 5), (TokenType::Reasoning, 1)]);
        assert!(split(&Usage::default()).is_empty());
    }

    #[test]
    fn an_event_line_is_one_cloudevent_with_the_documented_data() {
        let envelope = Envelope {
            uid: "0af",
            source: "llm-gateway/gw-0",
            event_type: "llm.tokens",
            subject: "team-a",
            time: "2026-11-26T08:18:07.123Z",
            model: "gpt-4o-mini",
            deployment: "openai/gpt-4o-mini",
            provider: "openai",
            key_id: "k1",
            team: "team-a",
            request_id: "req_1",
            cached: false,
            estimated: true,
            currency: "USD",
        };
        let mut out = Vec::new();
        write_line(&mut out, &envelope, TokenType::CacheRead, 7, EventCost { nanos: 525, micros: 1 });
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], "0af:cache_read");
        assert_eq!(v["type"], "llm.tokens");
        assert_eq!(v["subject"], "team-a");
        let data = &v["data"];
        assert_eq!(data["tokens"], 7);
        assert_eq!(data["type"], "cache_read");
        assert_eq!(data["cost_nanos"], 525);
        assert_eq!(data["cost"], 1);
        assert_eq!(data["currency"], "USD");
        assert_eq!(data["estimated"], true);
        assert_eq!(data["request_id"], "req_1");
        assert_eq!(v.as_object().unwrap().len(), 7, "no extension attributes: {v}");
    }

    #[test]
    fn timestamps_round_trip() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_001), "2000-02-29T00:00:00.001Z");
        assert_eq!(rfc3339_millis(1_795_681_087_123), "2026-11-26T08:18:07.123Z");
        for ms in [0, 951_782_400_001, 1_795_681_087_123, 4_102_444_799_999] {
            assert_eq!(parse_rfc3339_millis(&rfc3339_millis(ms)), Some(ms));
        }
        assert_eq!(parse_rfc3339_millis("2026-11-26T08:18:07Z"), None);
    }
}

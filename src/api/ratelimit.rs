//! The rate-limit headers OpenAI's API sends and its clients read: `x-ratelimit-{limit,remaining,
//! reset}-{requests,tokens}` (resets as durations such as `12ms`, `1.5s`, `6m0s`), and on a 429
//! `Retry-After` (whole seconds) plus `retry-after-ms`.

use http::{HeaderMap, HeaderName, HeaderValue};

/// One bucket's state as a client should see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    pub limit: u64,
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset_ms: u64,
}

/// The most constraining request and token buckets among the limits that applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    pub requests: Option<Bucket>,
    pub tokens: Option<Bucket>,
    /// Money budgets (micro-units of `spend.currency`): `x-ratelimit-*-spend`.
    pub spend: Option<Bucket>,
}

impl RateHeaders {
    pub fn add_requests(&mut self, bucket: Bucket) {
        self.requests = Some(tighter(self.requests, bucket));
    }

    pub fn add_tokens(&mut self, bucket: Bucket) {
        self.tokens = Some(tighter(self.tokens, bucket));
    }

    pub fn add_spend(&mut self, bucket: Bucket) {
        self.spend = Some(tighter(self.spend, bucket));
    }

    pub fn is_empty(&self) -> bool {
        self.requests.is_none() && self.tokens.is_none() && self.spend.is_none()
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        let all = [(self.requests, REQUEST_NAMES), (self.tokens, TOKEN_NAMES), (self.spend, SPEND_NAMES)];
        for (bucket, [limit, remaining, reset]) in all {
            let Some(b) = bucket else { continue };
            headers.insert(limit, HeaderValue::from(b.limit));
            headers.insert(remaining, HeaderValue::from(b.remaining));
            if let Ok(v) = HeaderValue::from_str(&format_reset(b.reset_ms)) {
                headers.insert(reset, v);
            }
        }
    }
}

// Constants: inserting by `&str` would parse each name on every response.
const REQUEST_NAMES: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
];
const SPEND_NAMES: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-spend"),
    HeaderName::from_static("x-ratelimit-remaining-spend"),
    HeaderName::from_static("x-ratelimit-reset-spend"),
];
const TOKEN_NAMES: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];

fn tighter(current: Option<Bucket>, candidate: Bucket) -> Bucket {
    match current {
        Some(c) if c.remaining < candidate.remaining => c,
        Some(c) if c.remaining == candidate.remaining && c.reset_ms >= candidate.reset_ms => c,
        _ => candidate,
    }
}

/// `Retry-After` (whole seconds, rounded up, at least 1) and `retry-after-ms`.
pub fn apply_retry_after(headers: &mut HeaderMap, retry_after_ms: u64) {
    headers.insert(http::header::RETRY_AFTER, HeaderValue::from(retry_after_ms.div_ceil(1000).max(1)));
    headers.insert("retry-after-ms", HeaderValue::from(retry_after_ms));
}

/// A duration the way OpenAI (and Go) write it: `0s`, `12ms`, `1.5s`, `6m0s`, `1h2m3s`.
pub fn format_reset(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, rem) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rem) = (rem / 60_000, rem % 60_000);
    let secs = if rem % 1000 == 0 {
        format!("{}s", rem / 1000)
    } else {
        let text = format!("{}.{:03}", rem / 1000, rem % 1000);
        format!("{}s", text.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_durations_like_openai() {
        assert_eq!(format_reset(0), "0s");
        assert_eq!(format_reset(12), "12ms");
        assert_eq!(format_reset(1500), "1.5s");
        assert_eq!(format_reset(360_000), "6m0s");
        assert_eq!(format_reset(3_723_250), "1h2m3.25s");
    }

    #[test]
    fn keeps_the_tightest_bucket() {
        let mut h = RateHeaders::default();
        h.add_requests(Bucket { limit: 600, remaining: 500, reset_ms: 100 });
        h.add_requests(Bucket { limit: 60, remaining: 3, reset_ms: 50 });
        h.add_requests(Bucket { limit: 6000, remaining: 5000, reset_ms: 10 });
        assert_eq!(h.requests.unwrap().limit, 60);
        let mut map = HeaderMap::new();
        h.apply(&mut map);
        assert_eq!(map["x-ratelimit-remaining-requests"], "3");
        assert_eq!(map["x-ratelimit-reset-requests"], "50ms");
        assert!(map.get("x-ratelimit-limit-tokens").is_none());
        apply_retry_after(&mut map, 1001);
        assert_eq!(map["retry-after"], "2");
        assert_eq!(map["retry-after-ms"], "1001");
    }
}

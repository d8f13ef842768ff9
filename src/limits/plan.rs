//! What one request is checked against: for each subject that carries limits (the caller's key
//! or token subject, its team, the team's use of the model) and each limit it sets, one check
//! with its counter's name. Every counter of a team shares the team's hash tag, so a request's
//! checks live in one cluster slot and one Lua call admits or refuses them all at once.

use std::sync::Arc;
use std::time::Duration;

use crate::clock;
use crate::config::limits::{LimitSettings, Limits};
use crate::ctx::Principal;

/// Counters of rates refill over a minute.
pub const MINUTE_MS: u64 = 60_000;
/// Budget counters outlive their window by this much (late settlements still find them).
const WINDOW_GRACE_MS: u64 = 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Rpm,
    Tpm,
    Concurrency,
    DailyTokens,
    MonthlyTokens,
    DailyRequests,
    /// Money budgets, in micro-units of `spend.currency`.
    DailySpend,
    MonthlySpend,
}

impl Dim {
    /// The `reason` label of `llm_gateway_rate_limited_total`, and the field name in /quota.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rpm => "rpm",
            Self::Tpm => "tpm",
            Self::Concurrency => "max_concurrent",
            Self::DailyTokens => "daily_tokens",
            Self::MonthlyTokens => "monthly_tokens",
            Self::DailyRequests => "daily_requests",
            Self::DailySpend => "daily_spend",
            Self::MonthlySpend => "monthly_spend",
        }
    }

    fn code(self) -> &'static str {
        match self {
            Self::Rpm => "rpm",
            Self::Tpm => "tpm",
            Self::Concurrency => "conc",
            Self::DailyTokens => "dt",
            Self::MonthlyTokens => "mt",
            Self::DailyRequests => "dr",
            Self::DailySpend => "ds",
            Self::MonthlySpend => "ms",
        }
    }

    /// Budgets (calendar windows) rather than rates: over one is "insufficient quota".
    pub fn is_budget(self) -> bool {
        matches!(
            self,
            Self::DailyTokens | Self::MonthlyTokens | Self::DailyRequests | Self::DailySpend | Self::MonthlySpend
        )
    }

    /// Charged in money (a worst-case cost), so corrected by the real cost at the end.
    pub fn counts_money(self) -> bool {
        matches!(self, Self::DailySpend | Self::MonthlySpend)
    }

    /// Charged in tokens, so corrected by the real usage at the end.
    pub fn counts_tokens(self) -> bool {
        matches!(self, Self::Tpm | Self::DailyTokens | Self::MonthlyTokens)
    }
}

/// The Lua scripts' three kinds of counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rate,
    Concurrency,
    Window,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub dim: Dim,
    /// Who the limit belongs to, for messages: `key 3f2a…`, `team a`, `team a on model m`.
    pub scope: Arc<str>,
    /// The counter's name, e.g. `lg:{team-a}:tpm:k:3f2a9c01b2d4`.
    pub key: String,
    pub limit: u64,
    /// Rates: what the bucket holds at most (units).
    pub capacity: u64,
    /// Units this request takes (1 request, or its token estimate).
    pub cost: u64,
    /// Windows: when the window ends (Unix ms).
    pub window_end_ms: u64,
}

impl Check {
    pub fn kind(&self) -> Kind {
        match self.dim {
            Dim::Rpm | Dim::Tpm => Kind::Rate,
            Dim::Concurrency => Kind::Concurrency,
            _ => Kind::Window,
        }
    }

    /// The five integers `admit.lua` and `peek.lua` read for this check.
    pub fn script_args(&self, now_ms: u64, lease_ttl: Duration) -> [i64; 5] {
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let until_end = self.window_end_ms.saturating_sub(now_ms);
        match self.kind() {
            Kind::Rate => [1, i(self.limit), i(MINUTE_MS), i(self.capacity), i(self.cost)],
            Kind::Concurrency => [2, i(self.limit), lease_ttl.as_millis() as i64, 0, 0],
            Kind::Window => [3, i(self.limit), i(until_end + WINDOW_GRACE_MS), i(self.cost), i(until_end)],
        }
    }

    pub fn rate(&self) -> super::gcra::Rate {
        super::gcra::Rate { limit: self.limit, period_ms: MINUTE_MS, capacity: self.capacity }
    }
}

/// The five integers `settle.lua` reads for a correction of `delta` units of a token counter.
pub fn settle_args(kind: Kind, limit: u64, window_end_ms: u64, now_ms: u64, delta: i64) -> [i64; 5] {
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    match kind {
        Kind::Rate => [1, i(limit), i(MINUTE_MS), 0, delta],
        Kind::Concurrency => [2, 0, 0, 0, 0],
        Kind::Window => [3, 0, i(window_end_ms.saturating_sub(now_ms) + WINDOW_GRACE_MS), 0, delta],
    }
}

/// The five integers `settle.lua` reads to release lease `id`.
pub fn release_args(id: i64) -> [i64; 5] {
    [2, 0, 0, id, 0]
}

/// The hash tag of a counter name (`lg:{tag}:...`): counters with one tag share a slot.
pub fn tag_of(key: &str) -> &str {
    key.split_once('{').and_then(|(_, rest)| rest.split_once('}')).map_or(key, |(tag, _)| tag)
}

/// A request's demand on the limits.
#[derive(Debug, Clone, Copy)]
pub struct Demand<'a> {
    /// The model name the client asked for.
    pub model: &'a str,
    /// Counted locally from the prompt.
    pub prompt_tokens: u64,
    /// The completion budget the client asked for, if any.
    pub max_tokens: Option<u64>,
    /// Whether the request produces completion tokens at all (not embeddings).
    pub completion: bool,
    /// Completions generated (`n`, `best_of`): each may spend the whole completion budget.
    pub choices: u64,
    /// The dearest price of every deployment the request may be sent to (failover included);
    /// `None`: free, or nothing to price.
    pub worst_price: Option<crate::spend::Price>,
}

impl Demand<'_> {
    /// Tokens reserved at admission: the prompt plus the completion budget (asked or default)
    /// for each choice.
    pub fn estimate(&self, settings: &LimitSettings) -> u64 {
        let completion = if self.completion { self.max_tokens.unwrap_or(settings.default_max_tokens) } else { 0 };
        self.prompt_tokens.saturating_add(completion.saturating_mul(self.choices.max(1)))
    }

    /// Money reserved at admission (micro-units): the estimate at the worst price.
    pub fn worst_cost(&self, settings: &LimitSettings) -> u64 {
        let Some(price) = &self.worst_price else { return 0 };
        let completion = self.estimate(settings).saturating_sub(self.prompt_tokens);
        crate::spend::price::worst_case(price, self.prompt_tokens, completion)
    }
}

/// What a request reserves: tokens and money.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Units {
    pub tokens: u64,
    /// Micro-units of `spend.currency`.
    pub money: u64,
}

/// Every check a request from `principal` must pass, with each limit divided by `divisor`
/// (1 for the shared limits; the replica count for the per-replica fallback).
pub fn checks(
    principal: &Principal,
    model: Option<&str>,
    estimate: Units,
    settings: &LimitSettings,
    now_ms: u64,
    divisor: u64,
) -> Vec<Check> {
    let policy = &principal.policy;
    let models: Vec<(&String, &Limits)> = match model {
        Some(m) => policy.model_limits.get_key_value(m).into_iter().collect(),
        None => policy.model_limits.iter().collect(),
    };
    build(principal, models, estimate, settings, now_ms, divisor)
}

/// The checks of the caller's key (or token subject) and team only, none of the team's per-model
/// limits: for answers about no one model (`GET /v1/models`).
pub fn subject_checks(principal: &Principal, settings: &LimitSettings, now_ms: u64, divisor: u64) -> Vec<Check> {
    build(principal, Vec::new(), Units::default(), settings, now_ms, divisor)
}

fn build(
    principal: &Principal,
    models: Vec<(&String, &Limits)>,
    estimate: Units,
    settings: &LimitSettings,
    now_ms: u64,
    divisor: u64,
) -> Vec<Check> {
    let grant = &principal.grant;
    let policy = &principal.policy;
    let mut out = Vec::new();
    if grant.limits.is_empty() && policy.limits.is_empty() && models.is_empty() {
        return out;
    }
    let tag = hash_tag(&principal.team);
    if !grant.limits.is_empty() {
        let scope = match grant.subject.split_once(':') {
            Some(("u", id)) => format!("user {id}"),
            Some((_, id)) => format!("key {id}"),
            None => format!("key {}", grant.subject),
        };
        push(&mut out, &tag, &grant.subject, scope.into(), &grant.limits, estimate, settings, now_ms, divisor);
    }
    if !policy.limits.is_empty() {
        let scope: Arc<str> = format!("team {}", principal.team).into();
        push(&mut out, &tag, "t", scope, &policy.limits, estimate, settings, now_ms, divisor);
    }
    for (name, limits) in models {
        let scope: Arc<str> = format!("team {} on model {name}", principal.team).into();
        push(&mut out, &tag, &format!("m:{name}"), scope, limits, estimate, settings, now_ms, divisor);
    }
    out
}

#[expect(clippy::too_many_arguments, reason = "one call site, every argument distinct")]
fn push(
    out: &mut Vec<Check>,
    tag: &str,
    subject: &str,
    scope: Arc<str>,
    limits: &Limits,
    estimate: Units,
    settings: &LimitSettings,
    now_ms: u64,
    divisor: u64,
) {
    let share = |v: u64| (v / divisor.max(1)).max(1);
    let day = clock::day(now_ms);
    let month = clock::month(now_ms);
    let dims = [
        (Dim::Rpm, limits.rpm, 1, None),
        (Dim::Tpm, limits.tpm, estimate.tokens, None),
        (Dim::Concurrency, limits.max_concurrent, 1, None),
        (Dim::DailyTokens, limits.daily_tokens, estimate.tokens, Some(day)),
        (Dim::MonthlyTokens, limits.monthly_tokens, estimate.tokens, Some(month)),
        (Dim::DailyRequests, limits.daily_requests, 1, Some(day)),
        (Dim::DailySpend, limits.daily_spend, estimate.money, Some(day)),
        (Dim::MonthlySpend, limits.monthly_spend, estimate.money, Some(month)),
    ];
    for (dim, limit, cost, window) in dims {
        let Some(limit) = limit.map(share) else { continue };
        let capacity = match dim {
            Dim::Rpm => (limit * settings.request_burst.as_millis() as u64).div_ceil(MINUTE_MS).max(1),
            _ => limit,
        };
        let key = match window {
            Some(w) => format!("lg:{{{tag}}}:{}:{subject}:{}", dim.code(), w.id),
            None => format!("lg:{{{tag}}}:{}:{subject}", dim.code()),
        };
        out.push(Check {
            dim,
            scope: scope.clone(),
            key,
            limit,
            capacity,
            cost,
            window_end_ms: window.map(|w| w.end_ms).unwrap_or(0),
        });
    }
}

/// The team's name when it is safe inside `{…}`, else a hash of it.
fn hash_tag(team: &str) -> String {
    let safe = !team.is_empty()
        && team.len() <= 64
        && team.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if safe {
        team.to_owned()
    } else {
        crate::config::sha256(team.as_bytes())[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TeamPolicy;
    use crate::ctx::Grant;

    fn principal(team: &str, key: Limits, team_limits: Limits) -> Principal {
        Principal {
            team: team.into(),
            key_id: "k1".into(),
            policy: Arc::new(TeamPolicy {
                limits: team_limits,
                model_limits: [("m".to_owned(), Limits { tpm: Some(50), ..Limits::default() })].into(),
                ..TeamPolicy::default()
            }),
            grant: Arc::new(Grant { subject: "k:k1".into(), limits: key, ..Grant::default() }),
        }
    }

    fn tokens(tokens: u64) -> Units {
        Units { tokens, money: 0 }
    }

    /// `n` (or `best_of`) completions each spend the completion budget: the reservation covers
    /// them all, asked or default.
    #[test]
    fn each_choice_reserves_the_completion_budget() {
        let s = LimitSettings::default();
        let demand = |max_tokens, choices| Demand {
            model: "m",
            prompt_tokens: 10,
            max_tokens,
            completion: true,
            choices,
            worst_price: None,
        };
        assert_eq!(demand(Some(100), 1).estimate(&s), 110);
        assert_eq!(demand(Some(100), 4).estimate(&s), 410);
        assert_eq!(demand(None, 3).estimate(&s), 10 + 3 * s.default_max_tokens);
        let embeddings = Demand { completion: false, ..demand(None, 3) };
        assert_eq!(embeddings.estimate(&s), 10);
    }

    #[test]
    fn one_check_per_limit_all_in_the_team_slot() {
        let p = principal(
            "team-a",
            Limits { rpm: Some(60), ..Limits::default() },
            Limits { rpm: Some(600), tpm: Some(1000), daily_tokens: Some(5), ..Limits::default() },
        );
        let s = LimitSettings::default();
        let c = checks(&p, Some("m"), tokens(100), &s, 0, 1);
        let keys: Vec<&str> = c.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "lg:{team-a}:rpm:k:k1",
                "lg:{team-a}:rpm:t",
                "lg:{team-a}:tpm:t",
                "lg:{team-a}:dt:t:0",
                "lg:{team-a}:tpm:m:m"
            ]
        );
        assert_eq!(c[0].capacity, 10, "60 a minute with a 10-second burst");
        assert_eq!(c[2].capacity, 1000, "token buckets hold a minute");
        assert_eq!(c[2].cost, 100);
        assert_eq!(c[3].window_end_ms, clock::DAY_MS);
        assert_eq!(&*c[4].scope, "team team-a on model m");
        assert!(checks(&p, Some("other"), tokens(1), &s, 0, 1).iter().all(|c| !c.key.contains(":m:")));
        let subject: Vec<String> = subject_checks(&p, &s, 0, 1).into_iter().map(|c| c.key).collect();
        assert_eq!(subject, ["lg:{team-a}:rpm:k:k1", "lg:{team-a}:rpm:t", "lg:{team-a}:tpm:t", "lg:{team-a}:dt:t:0"]);
        let halves = checks(&p, Some("m"), tokens(100), &s, 0, 2);
        assert_eq!(halves.iter().map(|c| c.limit).collect::<Vec<_>>(), [30, 300, 500, 2, 25]);
    }

    #[test]
    fn odd_team_names_get_a_hashed_tag() {
        assert_eq!(hash_tag("a.b-c_1"), "a.b-c_1");
        let tag = hash_tag("weird{team}");
        assert_eq!(tag.len(), 16);
        assert!(!tag.contains('{'));
    }
}

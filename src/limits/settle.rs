//! The end of a request for its limits: what its token and money counters get back or owe
//! (usage against the estimate, cost against the reservation), the refusal messages, and the
//! observer that settles every finished request.

use super::*;

/// Units to add to the token counters at the end: usage − estimate (negative refunds). A
/// request that failed without usage used nothing. (One that reached an upstream without a
/// final usage arrives counted by `Settler`; without that count, it would keep its reservation,
/// or what a partial usage reported when that is more.)
pub(super) fn settle_delta(estimate: u64, outcome: &Outcome) -> i64 {
    let used = match outcome.usage {
        Some(u) if outcome.usage_partial => u.total_tokens.max(u.prompt_tokens + u.completion_tokens).max(estimate),
        Some(u) => u.total_tokens.max(u.prompt_tokens + u.completion_tokens),
        None if outcome.status >= 400 => 0,
        None => estimate,
    };
    i64::try_from(used).unwrap_or(i64::MAX) - i64::try_from(estimate).unwrap_or(i64::MAX)
}

/// Micro-units to add to the money budgets at the end: the real cost − the reservation. Without
/// a cost, a failed request cost nothing and any other keeps its reservation.
pub(super) fn money_delta(reserved: u64, outcome: &Outcome, cost: Option<u64>) -> i64 {
    let used = match cost {
        Some(cost) => cost,
        None if outcome.status >= 400 && outcome.usage.is_none() => 0,
        None => reserved,
    };
    i64::try_from(used).unwrap_or(i64::MAX) - i64::try_from(reserved).unwrap_or(i64::MAX)
}

fn spend_message(check: &Check, used: Option<u64>, currency: &str, wait: &str) -> String {
    let amount = |m: u64| format!("{} {currency}", crate::spend::price::format_micros(m));
    let (scope, budget) = (&check.scope, amount(check.limit));
    let period = if check.dim == Dim::DailySpend { "daily" } else { "monthly" };
    let spent = used.map(|u| format!(", spent {}", amount(u))).unwrap_or_default();
    format!(
        "The {period} spend budget of {scope} is exhausted: budget {budget}{spent}, this request may cost up to {}. \
         It resets at {} (in {wait}).",
        amount(check.cost),
        clock::format_timestamp(check.window_end_ms / 1000)
    )
}

pub(super) fn refusal_message(check: &Check, retry_after_ms: Option<u64>, used: Option<u64>, currency: &str) -> String {
    let wait = retry_after_ms.map(crate::api::ratelimit::format_reset).unwrap_or_default();
    let scope = &check.scope;
    let limit = check.limit;
    match check.dim {
        Dim::Rpm => format!(
            "Rate limit reached for requests per minute (RPM) on {scope}: limit {limit}. Please try again in {wait}."
        ),
        Dim::Tpm if retry_after_ms.is_none() => format!(
            "Request too large for tokens per minute (TPM) on {scope}: limit {limit}, requested {} (prompt plus max_tokens). Lower max_tokens or shorten the prompt.",
            check.cost
        ),
        Dim::Tpm => format!(
            "Rate limit reached for tokens per minute (TPM) on {scope}: limit {limit}, requested {}. Please try again in {wait}.",
            check.cost
        ),
        Dim::Concurrency => {
            format!("Too many concurrent requests on {scope}: limit {limit}. Please try again in {wait}.")
        }
        Dim::DailyTokens => format!(
            "Daily token budget exhausted on {scope}: {limit} tokens a day, this request reserves {}. It resets in {wait}.",
            check.cost
        ),
        Dim::MonthlyTokens => format!(
            "Monthly token budget exhausted on {scope}: {limit} tokens a month, this request reserves {}. It resets in {wait}.",
            check.cost
        ),
        Dim::DailyRequests => {
            format!("Daily request quota reached on {scope}: {limit} requests a day. It resets in {wait}.")
        }
        Dim::DailySpend | Dim::MonthlySpend => spend_message(check, used, currency, &wait),
    }
}

/// Settles each request's reservation when it ends (wired in `app`), with what it used: the
/// upstream's usage, else the gateway's own count of what it relayed (the same count metering
/// charges), never the bare estimate — a stream cut before its usage, with no `max_tokens`, would
/// otherwise be charged its default while the upstream produced far more.
pub struct Settler {
    limiter: Arc<Limiter>,
    count: Arc<dyn LocalCount>,
}

impl Settler {
    pub fn new(limiter: Arc<Limiter>, count: Arc<dyn LocalCount>) -> Self {
        Self { limiter, count }
    }
}

/// What the request cost (micro-units) at its deployment's price: nothing for a cache hit;
/// `None` without usage.
fn real_cost(priced: Option<crate::spend::Priced>, outcome: &Outcome) -> Option<u64> {
    let usage = outcome.usage.as_ref()?;
    if outcome.cached {
        return Some(0);
    }
    Some(crate::spend::cost(&priced?.price, usage))
}

impl Observer for Settler {
    fn finished(&self, ctx: &RequestCtx, outcome: &Outcome) {
        let Some(reservation) = &ctx.reservation else { return };
        if !outcome.counted_locally(ctx) {
            let cost = real_cost(ctx.priced, outcome);
            self.limiter.settle_costing(reservation, outcome, cost);
            return;
        }
        // The concurrency lease goes back now; the tokens once they are counted.
        let (leases, tokens) = reservation.split();
        self.limiter.settle(&leases, outcome);
        let (limiter, count, reservation, priced) = (self.limiter.clone(), self.count.clone(), tokens, ctx.priced);
        let (deployment, endpoint, body) = (ctx.deployment.clone().unwrap_or_default(), ctx.endpoint, ctx.body.clone());
        let mut outcome = outcome.clone();
        let mut settle = move || {
            let usage = count.usage(&deployment, endpoint, &body, outcome.generated.as_ref(), outcome.usage.as_ref());
            outcome.usage = Some(usage);
            outcome.usage_partial = false;
            let cost = real_cost(priced, &outcome);
            limiter.settle_costing(&reservation, &outcome, cost);
        };
        // Counting a long answer takes a tokenizer pass: off the serving threads.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(settle)),
            Err(_) => settle(),
        }
    }
}

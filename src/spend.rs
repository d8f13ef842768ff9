//! Spend: what every deployment costs, what every request cost, in integer micro-units of the
//! configured currency (no floating point anywhere in money).
//!
//! ```text
//! price (µ/Mtok)  = config `price:`  | `free: true` | catalogue (USD only) | self-hosted: 0 | unknown: 0, warned
//! cost (µ)        = round_half_up( Σ tokens_of_type × price_of_type / 1e6 )
//! ```
//!
//! Each token type's product is exact (u128 pico-units); the request's sum is rounded once, and a
//! request's per-type costs (its metering events) are apportioned so that they add up to it.
//! The cost reaches the client in `x-llm-gateway-cost` (whole answers; a stream's headers are
//! gone before its usage arrives, so a stream's cost is in its metering event, its request-log
//! row and the metrics), Prometheus (`llm_gateway_spend_total`, and for cache hits, which cost
//! nothing upstream, `llm_gateway_spend_saved_total`).

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::api::Usage;
use crate::api::{TokenType, token_parts};
pub use crate::config::price::{self, Price, Priced, Source, SpendSettings, resolve, sort_price};
use crate::config::{Config, ProviderSpec};
use crate::ctx::{LocalCount, Observer, Outcome, RequestCtx};
use crate::telemetry::metrics::spend as metrics;

/// The cost of a whole answer, in micro-units of `x-llm-gateway-cost-currency`.
pub const COST_HEADER: HeaderName = HeaderName::from_static("x-llm-gateway-cost");
pub const CURRENCY_HEADER: HeaderName = HeaderName::from_static("x-llm-gateway-cost-currency");
/// A cache hit's: what the answer would have cost from its model's first deployment.
pub const SAVED_HEADER: HeaderName = HeaderName::from_static("x-llm-gateway-cost-saved");

/// Micro-units per million tokens × tokens = pico-units; this many pico-units make a micro-unit.
const PICOS_PER_MICRO: u128 = 1_000_000;

/// The exact cost of `parts` in pico-units (cannot overflow: 2^64 tokens × 2^64 price < 2^128,
/// and five of them < 2^131 — saturating keeps even that case bounded). Cache writes all at the
/// short-lived price: see `part_picos` for writes of both lifetimes.
pub fn picos(price: &Price, parts: &[(TokenType, u64)]) -> u128 {
    parts.iter().fold(0u128, |sum, (t, n)| sum.saturating_add(part_picos(price, *t, *n, 0)))
}

/// The exact cost of `tokens` of `token_type` in pico-units; of cache writes, `long` (at most
/// all of them) at the long-lived cache's price, the rest at the short-lived one's.
pub fn part_picos(price: &Price, token_type: TokenType, tokens: u64, long: u64) -> u128 {
    if token_type != TokenType::CacheWrite {
        return u128::from(tokens) * u128::from(price.of(token_type));
    }
    let long = long.min(tokens);
    u128::from(tokens - long) * u128::from(price.cache_write) + u128::from(long) * u128::from(price.cache_write_long)
}

/// How many of `usage`'s cache writes went to the long-lived cache (`part_picos` caps it at the
/// writes).
pub fn long_writes(usage: &Usage) -> u64 {
    usage.cache_write_long_tokens
}

/// The exact cost of `usage` in pico-units, each cache write at its lifetime's price.
pub fn usage_picos(price: &Price, usage: &Usage) -> u128 {
    let long = long_writes(usage);
    token_parts(usage).iter().fold(0u128, |sum, (t, n)| sum.saturating_add(part_picos(price, *t, *n, long)))
}

/// Pico-units → micro-units, half rounded up, saturating at `u64::MAX`.
pub fn micros_of(picos: u128) -> u64 {
    u64::try_from(picos.saturating_add(PICOS_PER_MICRO / 2) / PICOS_PER_MICRO).unwrap_or(u64::MAX)
}

/// What `usage` (OpenAI semantics: cached and cache-write tokens inside `prompt_tokens`,
/// reasoning inside `completion_tokens`) costs at `price`, in micro-units.
pub fn cost(price: &Price, usage: &Usage) -> u64 {
    micros_of(usage_picos(price, usage))
}

/// The cost of each part in micro-units, adding up to the cost of all of them (largest
/// remainders get the micro-units that rounding each part down left over); `long` of the cache
/// writes at the long-lived cache's price.
pub fn apportion(price: &Price, parts: &[(TokenType, u64)], long: u64) -> Vec<u64> {
    let exact: Vec<u128> = parts.iter().map(|(t, n)| part_picos(price, *t, *n, long)).collect();
    let total = micros_of(exact.iter().fold(0u128, |s, p| s.saturating_add(*p)));
    let mut shares: Vec<u64> = exact.iter().map(|p| micros_of_floor(*p)).collect();
    let mut left = total.saturating_sub(shares.iter().fold(0u64, |s, p| s.saturating_add(*p)));
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(exact[i] % PICOS_PER_MICRO));
    for i in order {
        if left == 0 {
            break;
        }
        if !exact[i].is_multiple_of(PICOS_PER_MICRO) {
            shares[i] += 1;
            left -= 1;
        }
    }
    shares
}

/// Pico-units → nano-units, half rounded up, saturating (the events' `cost_nanos`).
pub fn nanos_of(picos: u128) -> u64 {
    u64::try_from(picos.saturating_add(500) / 1000).unwrap_or(u64::MAX)
}

fn micros_of_floor(picos: u128) -> u64 {
    u64::try_from(picos / PICOS_PER_MICRO).unwrap_or(u64::MAX)
}

/// Every deployment's price, resolved once at start.
#[derive(Debug, Default)]
pub struct Prices {
    currency: String,
    /// `currency` as the `x-llm-gateway-currency` header's value (`None`: not a valid one).
    currency_header: Option<HeaderValue>,
    /// (FxHash maps: built once from the config, read several times per request by the cost
    /// header and the end-of-request observers, never grown by a request.)
    known: HashMap<String, Priced>,
    /// A model group's (or alias's) first deployment: what a cache hit saved is priced at.
    first_of_group: HashMap<String, String>,
    /// A model group's dearest price over its deployments and those of its fallbacks: what a
    /// money budget reserves at.
    worst_of_group: HashMap<String, Price>,
    providers: HashMap<String, Arc<ProviderSpec>>,
}

impl Prices {
    pub fn new(config: &Config) -> Self {
        let currency = config.spend.currency.clone();
        let mut this = Self {
            providers: config
                .providers
                .values()
                .chain(config.default_backend.iter())
                .map(|p| (p.name.clone(), p.clone()))
                .collect(),
            currency_header: HeaderValue::from_str(&currency).ok(),
            currency,
            ..Self::default()
        };
        for (name, model) in &config.models {
            for d in &model.deployments {
                // Resolved when the config was built (`price::resolve_deployments`).
                this.known.insert(d.id.clone(), d.priced);
            }
            if let Some(first) = model.deployments.first() {
                this.first_of_group.insert(name.clone(), first.id.clone());
            }
        }
        for (name, model) in &config.models {
            let groups = std::iter::once(name)
                .chain(&model.fallbacks)
                .chain(&model.context_window_fallbacks)
                .chain(&model.content_policy_fallbacks);
            let worst = groups
                .filter_map(|g| config.models.get(g).or_else(|| config.models.get(config.aliases.get(g)?)))
                .flat_map(|m| &m.deployments)
                .fold(Price::FREE, |worst, d| worst.max(this.of(&d.id).price));
            this.worst_of_group.insert(name.clone(), worst);
        }
        for (alias, target) in &config.aliases {
            if let Some(first) = this.first_of_group.get(target).cloned() {
                this.first_of_group.insert(alias.clone(), first);
            }
        }
        this
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// The price of deployment `id` (`provider/model`); ids made up at run time (the default
    /// backend serving any name) are resolved on the fly.
    pub fn of(&self, id: &str) -> Priced {
        if let Some(priced) = self.known.get(id) {
            return *priced;
        }
        let (provider, model) = id.split_once('/').unwrap_or((id, ""));
        match self.providers.get(provider) {
            Some(p) => resolve(&self.currency, p, model),
            None => Priced::UNKNOWN,
        }
    }

    /// The price a cache hit on `model` (a client-facing name) saved.
    pub fn of_model(&self, model: &str) -> Option<Priced> {
        self.first_of_group.get(model).map(|id| self.of(id))
    }

    /// What a request to model group `group` reserves against money budgets, per token type;
    /// `None` when every deployment it may reach is free.
    pub fn worst_of(&self, group: &str) -> Option<Price> {
        self.worst_of_group.get(group).copied().filter(|p| *p != Price::FREE)
    }

    /// The configured deployments of paying vendors with no price, sorted.
    pub fn unpriced(&self) -> Vec<&str> {
        let mut ids: Vec<&str> =
            self.known.iter().filter(|(_, p)| p.source == Source::Unknown).map(|(id, _)| id.as_str()).collect();
        ids.sort_unstable();
        ids
    }
}

/// Logs (once, at start) every deployment that a paying vendor bills but nothing prices.
pub fn warn_unpriced(prices: &Prices, metrics: &metrics::SpendMetrics) {
    for id in prices.unpriced() {
        metrics.set_unpriced(id);
        tracing::warn!(
            deployment = id,
            currency = prices.currency(),
            "spend: no price for this deployment of a paying vendor; its requests are counted at zero cost \
             (set `price:` or `free: true` on the deployment)"
        );
    }
}

/// `x-llm-gateway-cost` (and `-saved` on a cache hit) on a whole answer.
pub fn cost_headers(headers: &mut HeaderMap, prices: &Prices, ctx: &RequestCtx, outcome: &Outcome) {
    let Some(usage) = &outcome.usage else { return };
    let (cost, saved) = match (&ctx.priced, outcome.cached) {
        (_, true) => (0, prices.of_model(&ctx.client_model).map(|p| cost(&p.price, usage))),
        (Some(priced), false) => (cost(&priced.price, usage), None),
        (None, false) => return,
    };
    headers.insert(COST_HEADER, HeaderValue::from(cost));
    if let Some(saved) = saved {
        headers.insert(SAVED_HEADER, HeaderValue::from(saved));
    }
    if let Some(currency) = &prices.currency_header {
        headers.insert(CURRENCY_HEADER, currency.clone());
    }
}

/// A request's cost in nano-units for its request-log row: 0 for a cache hit, `None` without
/// usage (a request that never reached an upstream, or one counted only by metering).
pub fn request_nanos(ctx: &RequestCtx, outcome: &Outcome) -> Option<u64> {
    let usage = outcome.usage.as_ref()?;
    if outcome.cached {
        return Some(0);
    }
    Some(nanos_of(usage_picos(&ctx.priced?.price, usage)))
}

/// Counts every finished request's cost (or, for a cache hit, what it saved) in Prometheus; a
/// request without (complete) usage — a stream cut before its usage — at the same local count
/// its budget is charged and its metering events carry.
pub struct SpendObserver {
    pub prices: Arc<Prices>,
    pub metrics: Arc<metrics::SpendMetrics>,
    /// For the model label (a configured name or `other`).
    pub labels: Arc<crate::telemetry::metrics::Metrics>,
    pub count: Arc<dyn LocalCount>,
}

impl Observer for SpendObserver {
    fn finished(&self, ctx: &RequestCtx, outcome: &Outcome) {
        let team = ctx.principal.as_ref().map(|p| p.team.clone()).unwrap_or_else(|| Arc::from(""));
        let model = self.labels.model_label(&ctx.client_model);
        if outcome.counted_locally(ctx) {
            let (Some(deployment), Some(priced)) = (ctx.deployment.clone(), ctx.priced) else { return };
            if priced.price == Price::FREE {
                // Costs nothing whatever it used: no tokenizer is loaded (tens of MB) to say so.
                return;
            }
            let (metrics, count) = (self.metrics.clone(), self.count.clone());
            let (endpoint, body, outcome, model) = (ctx.endpoint, ctx.body.clone(), outcome.clone(), model.to_owned());
            let settle = move || {
                let usage =
                    count.usage(&deployment, endpoint, &body, outcome.generated.as_ref(), outcome.usage.as_ref());
                metrics.spent(team, &model, cost(&priced.price, &usage));
            };
            // A tokenizer pass: off the serving threads.
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(settle)),
                Err(_) => settle(),
            }
            return;
        }
        let Some(usage) = &outcome.usage else { return };
        if outcome.cached {
            if let Some(priced) = self.prices.of_model(&ctx.client_model) {
                self.metrics.saved(team, model, cost(&priced.price, usage));
            }
        } else if let Some(priced) = &ctx.priced {
            self.metrics.spent(team, model, cost(&priced.price, usage));
        }
    }
}

#[cfg(test)]
mod tests;

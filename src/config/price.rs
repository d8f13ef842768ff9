//! Prices as integers: micro-units of the configured currency per million tokens (the same
//! number as pico-units per token), read from the catalogue's nano-dollars per token or from
//! a deployment's `price:` (decimal per million tokens), never through floating point.

use serde::Deserialize;

use crate::api::TokenType;
use crate::config::ProviderSpec;
use crate::providers::ModelInfo;

/// The catalogue is in US dollars: only then do its prices apply.
pub const CATALOGUE_CURRENCY: &str = "USD";

/// What one token of each type costs, in micro-units per million tokens. Reasoning tokens
/// bill as output. `cache_write` is the vendor's short-lived cache write (Anthropic's 5 minutes,
/// OpenAI's 30), `cache_write_long` the long-lived one (Anthropic's 1 hour), where usage tells
/// them apart (`Usage::cache_write_long_tokens`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    pub cache_write_long: u64,
}

impl Price {
    pub const FREE: Price = Price { input: 0, output: 0, cached_input: 0, cache_write: 0, cache_write_long: 0 };

    /// The catalogue's nano-dollars per token (× 1000); cache prices fall back to the input's
    /// (the long cache write to the short one's).
    pub fn from_catalogue(info: &ModelInfo) -> Option<Price> {
        if info.input_nanos_per_token.is_none() && info.output_nanos_per_token.is_none() {
            return None;
        }
        let micro = |n: Option<u64>| n.map(|n| n.saturating_mul(1000));
        let input = micro(info.input_nanos_per_token).unwrap_or(0);
        let cache_write = micro(info.cache_write_nanos_per_token).unwrap_or(input);
        Some(Price {
            input,
            output: micro(info.output_nanos_per_token).unwrap_or(0),
            cached_input: micro(info.cached_input_nanos_per_token).unwrap_or(input),
            cache_write,
            cache_write_long: micro(info.cache_write_long_nanos_per_token).unwrap_or(cache_write),
        })
    }

    /// Micro-units per million tokens of `token_type`.
    pub fn of(&self, token_type: TokenType) -> u64 {
        match token_type {
            TokenType::Input => self.input,
            TokenType::Output | TokenType::Reasoning => self.output,
            TokenType::CacheRead => self.cached_input,
            TokenType::CacheWrite => self.cache_write,
        }
    }

    /// The dearest per-token price of any type (what a worst case is priced at).
    pub fn highest(&self) -> u64 {
        self.input.max(self.output).max(self.cached_input).max(self.cache_write).max(self.cache_write_long)
    }
}

/// `spend:` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpend {
    /// ISO 4217 code of every price, cost and budget (default `USD`).
    pub currency: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendSettings {
    pub currency: String,
}

impl Default for SpendSettings {
    fn default() -> Self {
        Self { currency: CATALOGUE_CURRENCY.to_owned() }
    }
}

impl SpendSettings {
    pub fn validate(raw: Option<RawSpend>) -> Result<Self, String> {
        let currency = raw.and_then(|r| r.currency).unwrap_or_else(|| CATALOGUE_CURRENCY.to_owned());
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!("spend.currency: {currency:?} is not an ISO 4217 code such as USD or EUR"));
        }
        Ok(Self { currency })
    }
}

/// A deployment's `price:`: amounts of the currency per million tokens, as decimals.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    #[serde(default)]
    pub input: Option<Amount>,
    #[serde(default)]
    pub output: Option<Amount>,
    #[serde(default)]
    pub cached_input: Option<Amount>,
    #[serde(default)]
    pub cache_write: Option<Amount>,
    /// The long-lived cache write (Anthropic's 1-hour); `cache_write_1h` is the same field.
    #[serde(default, alias = "cache_write_1h")]
    pub cache_write_long: Option<Amount>,
}

impl RawPrice {
    /// Missing cache prices fall back to the input's (the long cache write to the short one's);
    /// a missing input or output is zero.
    pub fn to_price(&self) -> Price {
        let input = self.input.map(|a| a.0).unwrap_or(0);
        let cache_write = self.cache_write.map(|a| a.0).unwrap_or(input);
        Price {
            input,
            output: self.output.map(|a| a.0).unwrap_or(0),
            cached_input: self.cached_input.map(|a| a.0).unwrap_or(input),
            cache_write,
            cache_write_long: self.cache_write_long.map(|a| a.0).unwrap_or(cache_write),
        }
    }
}

/// A non-negative decimal amount with at most six decimal places, held in micro-units.
/// YAML may write it as a string (`"2.50"`) or a number (`2.5`); a number is read back through
/// its shortest decimal form, so `0.0375` is 37500 micro-units exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount(pub u64);

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Int(u64),
            Text(String),
            Number(f64),
        }
        let text = match Written::deserialize(d)? {
            Written::Int(n) => n.to_string(),
            Written::Text(s) => s,
            Written::Number(f) if f.is_finite() => format!("{f}"),
            Written::Number(f) => return Err(serde::de::Error::custom(format!("{f} is not an amount"))),
        };
        parse_micros(&text).map(Amount).map_err(serde::de::Error::custom)
    }
}

/// `"2.5"` → 2_500_000: a decimal with at most six places, in micro-units.
pub fn parse_micros(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not an amount (a decimal >= 0 with at most 6 decimal places, e.g. \"2.50\")");
    let t = text.trim();
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) || frac.len() > 6 {
        return Err(bad());
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
    let frac: u64 = if frac.is_empty() { 0 } else { format!("{frac:0<6}").parse().map_err(|_| bad())? };
    whole.checked_mul(1_000_000).and_then(|w| w.checked_add(frac)).ok_or_else(bad)
}

/// Micro-units as a decimal (`4125` → `"0.004125"`).
pub fn format_micros(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// `serde(with)` for an optional amount held in micro-units: read as `Amount`, written as the
/// decimal string it was read from (`"50.000000"`).
pub mod opt_amount {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{Amount, format_micros};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Ok(Option::<Amount>::deserialize(d)?.map(|a| a.0))
    }

    pub fn serialize<S: Serializer>(value: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(micros) => s.serialize_str(&format_micros(*micros)),
            None => s.serialize_none(),
        }
    }
}

/// The worst case of `prompt` tokens and `completion` tokens at `price`, in micro-units rounded
/// up: prompt tokens at the dearer of input and the short-lived cache write, completion at
/// output. (Long-lived writes are opt-in per request and rare; one that costs more than its
/// reservation settles at its real cost all the same.)
pub fn worst_case(price: &Price, prompt: u64, completion: u64) -> u64 {
    let picos = u128::from(prompt) * u128::from(price.input.max(price.cache_write))
        + u128::from(completion) * u128::from(price.output);
    u64::try_from(picos.div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

impl Price {
    /// Each type's price the dearer of the two (the worst case over failover candidates).
    pub fn max(self, other: Price) -> Price {
        Price {
            input: self.input.max(other.input),
            output: self.output.max(other.output),
            cached_input: self.cached_input.max(other.cached_input),
            cache_write: self.cache_write.max(other.cache_write),
            cache_write_long: self.cache_write_long.max(other.cache_write_long),
        }
    }
}

/// Where a deployment's price came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The deployment's `price:`.
    Config,
    /// `free: true`.
    Free,
    Catalogue,
    /// A self-hosted vendor (vLLM, Ollama, ...) or a provider with no vendor: zero.
    SelfHosted,
    /// A paying vendor's model the catalogue does not price (or not in this currency): zero,
    /// reported at start.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priced {
    pub price: Price,
    pub source: Source,
}

impl Priced {
    /// No price known: zero, and reported at start when a paying vendor bills it.
    pub const UNKNOWN: Priced = Priced { price: Price::FREE, source: Source::Unknown };
}

/// Resolves every deployment's price once, in `currency`: its `price:` (`free: true`), else a
/// `price:` the config gives the same `provider/model` in another group, else the catalogue's.
pub fn resolve_deployments(models: &mut std::collections::BTreeMap<String, crate::config::ModelSpec>, currency: &str) {
    let mut configured: std::collections::HashMap<String, Price> = std::collections::HashMap::new();
    for d in models.values().flat_map(|m| &m.deployments) {
        if let Some(price) = d.price {
            configured.entry(d.id.clone()).or_insert(price);
        }
    }
    for d in models.values_mut().flat_map(|m| &mut m.deployments) {
        d.priced = match d.price.or_else(|| configured.get(&d.id).copied()) {
            Some(price) if price == Price::FREE => Priced { price, source: Source::Free },
            Some(price) => Priced { price, source: Source::Config },
            None => resolve(currency, &d.provider, &d.model),
        };
    }
}

/// A deployment's price without a `price:` of its own.
pub fn resolve(currency: &str, provider: &ProviderSpec, model: &str) -> Priced {
    let self_hosted = match &provider.vendor {
        Some(vendor) => crate::providers::lookup(vendor).map(|d| d.self_hosted).unwrap_or(false),
        None => true,
    };
    if self_hosted {
        return Priced { price: Price::FREE, source: Source::SelfHosted };
    }
    let catalogue = provider.known_models.get(model).and_then(Price::from_catalogue);
    match catalogue {
        Some(price) if currency == CATALOGUE_CURRENCY => Priced { price, source: Source::Catalogue },
        _ => Priced { price: Price::FREE, source: Source::Unknown },
    }
}

/// What the `cheapest` routing strategy orders a deployment by: input plus output price per
/// million tokens, the config's or the catalogue's (in USD: with another currency, give the
/// deployments of a `cheapest` group prices of their own); a paying vendor's model with no price
/// sorts last.
pub fn sort_price(provider: &ProviderSpec, model: &str, price: Option<Price>) -> u64 {
    let priced = match price {
        Some(price) => Priced { price, source: Source::Config },
        None => resolve(CATALOGUE_CURRENCY, provider, model),
    };
    match priced.source {
        Source::Unknown => u64::MAX,
        _ => priced.price.input.saturating_add(priced.price.output),
    }
}

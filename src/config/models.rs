//! `models`, `aliases`, `circuit_breaker` and `retry`: model groups and their deployments, each
//! on a provider of the config; aliases and fallbacks that must land on a group, and never loop.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{BreakerPolicy, ConfigError, DeploymentSpec, ModelSpec, ProviderSpec, RetryPolicy, Strategy, raw};

fn err(path: String, msg: String) -> ConfigError {
    ConfigError(format!("{path}: {msg}"))
}

/// The model groups, with their fallbacks resolved to group names (aliases followed).
pub(super) fn groups(
    raw_models: BTreeMap<String, raw::RawModel>,
    aliases: &BTreeMap<String, String>,
    providers: &BTreeMap<String, Arc<ProviderSpec>>,
    circuit_breaker: Option<&raw::RawBreaker>,
    retry: Option<&raw::RawRetry>,
) -> Result<BTreeMap<String, ModelSpec>, ConfigError> {
    let default_breaker = breaker_policy(BreakerPolicy::default(), circuit_breaker, "circuit_breaker")?;
    let default_retry = retry_policy(RetryPolicy::default(), retry, "retry")?;
    let mut models = BTreeMap::new();
    for (name, model) in raw_models {
        let path = format!("models.{name}");
        if model.deployments.is_empty() {
            return Err(err(format!("{path}.deployments"), "at least one deployment is required".into()));
        }
        let strategy = strategy_of(model.strategy.as_deref(), &path)?;
        let mut deployments = Vec::with_capacity(model.deployments.len());
        for (i, d) in model.deployments.into_iter().enumerate() {
            deployments.push(deployment(d, &name, providers, default_breaker, &format!("{path}.deployments[{i}]"))?);
        }
        if deployments.iter().all(|d| d.weight == 0.0) {
            return Err(err(format!("{path}.deployments"), "at least one deployment needs a weight above 0".into()));
        }
        let retry = retry_policy(default_retry, model.retry.as_ref(), &format!("{path}.retry"))?;
        models.insert(
            name.clone(),
            ModelSpec {
                name,
                strategy,
                deployments,
                fallbacks: model.fallbacks,
                context_window_fallbacks: model.context_window_fallbacks,
                content_policy_fallbacks: model.content_policy_fallbacks,
                retry,
            },
        );
    }
    resolve_fallbacks(models, aliases)
}

fn strategy_of(name: Option<&str>, path: &str) -> Result<Strategy, ConfigError> {
    Ok(match name.unwrap_or("weighted") {
        "weighted" => Strategy::Weighted,
        "least-busy" => Strategy::LeastBusy,
        "latency" => Strategy::Latency,
        "priority" => Strategy::Priority,
        "cheapest" => Strategy::Cheapest,
        other => {
            return Err(err(
                format!("{path}.strategy"),
                format!("unknown strategy {other:?} (expected weighted, least-busy, latency, priority or cheapest)"),
            ));
        }
    })
}

/// One deployment of group `group`, on a provider of the config, at `dpath`.
fn deployment(
    d: raw::RawDeployment,
    group: &str,
    providers: &BTreeMap<String, Arc<ProviderSpec>>,
    default_breaker: BreakerPolicy,
    dpath: &str,
) -> Result<DeploymentSpec, ConfigError> {
    let provider = providers
        .get(&d.provider)
        .cloned()
        .ok_or_else(|| err(format!("{dpath}.provider"), format!("unknown provider {:?}", d.provider)))?;
    let upstream = d.model.unwrap_or_else(|| group.to_owned());
    if upstream.is_empty() {
        return Err(err(format!("{dpath}.model"), "must not be empty".into()));
    }
    let weight = d.weight.unwrap_or(1.0);
    if !weight.is_finite() || weight < 0.0 {
        return Err(err(format!("{dpath}.weight"), format!("must be a number >= 0, not {weight}")));
    }
    let context_window =
        d.context_window.or_else(|| provider.known_models.get(&upstream).and_then(|m| m.context_window));
    let breaker = breaker_policy(default_breaker, d.circuit_breaker.as_ref(), &format!("{dpath}.circuit_breaker"))?;
    let price = match (&d.price, d.free) {
        (Some(_), Some(true)) => {
            return Err(err(format!("{dpath}.free"), "a deployment has either a price or free: true".into()));
        }
        (_, Some(true)) => Some(crate::config::price::Price::FREE),
        (Some(price), _) => Some(price.to_price()),
        (None, _) => None,
    };
    let sort_price = crate::config::price::sort_price(&provider, &upstream, price);
    Ok(DeploymentSpec {
        id: format!("{}/{}", provider.name, upstream),
        provider,
        model: upstream,
        weight,
        priority: d.priority.unwrap_or(0),
        context_window,
        breaker,
        price,
        sort_price,
        // Resolved once the currency is known (`price::resolve_deployments`).
        priced: crate::config::price::Priced::UNKNOWN,
    })
}

/// Aliases and fallbacks must land on a model group, and fallbacks must not loop; each
/// fallback is rewritten to the group it lands on.
fn resolve_fallbacks(
    mut models: BTreeMap<String, ModelSpec>,
    aliases: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, ModelSpec>, ConfigError> {
    for (alias, target) in aliases {
        if models.contains_key(alias) {
            return Err(err(format!("aliases.{alias}"), "an alias cannot shadow a model of the same name".into()));
        }
        if !models.contains_key(target) {
            return Err(err(format!("aliases.{alias}"), format!("unknown model {target:?}")));
        }
    }
    let names: std::collections::BTreeSet<String> = models.keys().cloned().collect();
    for (name, model) in models.iter_mut() {
        for (field, list) in [
            ("fallbacks", &mut model.fallbacks),
            ("context_window_fallbacks", &mut model.context_window_fallbacks),
            ("content_policy_fallbacks", &mut model.content_policy_fallbacks),
        ] {
            for (i, target) in list.iter_mut().enumerate() {
                *target = resolve_in(|n| names.contains(n), aliases, target)
                    .ok_or_else(|| err(format!("models.{name}.{field}[{i}]"), format!("unknown model {target:?}")))?;
                if target == name {
                    return Err(err(
                        format!("models.{name}.{field}[{i}]"),
                        "a model cannot fall back to itself".into(),
                    ));
                }
            }
        }
    }
    if let Some(cycle) = fallback_cycle(&models) {
        return Err(err(format!("models.{}.fallbacks", cycle[0]), format!("fallback cycle: {}", cycle.join(" -> "))));
    }
    Ok(models)
}

/// The model group `name` stands for: itself, or the group an alias names.
pub(super) fn resolve(
    models: &BTreeMap<String, ModelSpec>,
    aliases: &BTreeMap<String, String>,
    name: &str,
) -> Option<String> {
    resolve_in(|n| models.contains_key(n), aliases, name)
}

/// `resolve` over any set of group names (`is_group`).
fn resolve_in(is_group: impl Fn(&str) -> bool, aliases: &BTreeMap<String, String>, name: &str) -> Option<String> {
    if is_group(name) { Some(name.to_owned()) } else { aliases.get(name).cloned() }
}

fn breaker_policy(
    base: BreakerPolicy,
    raw: Option<&raw::RawBreaker>,
    path: &str,
) -> Result<BreakerPolicy, ConfigError> {
    let Some(raw) = raw else { return Ok(base) };
    let err = |field: &str, msg: &str| ConfigError(format!("{path}.{field}: {msg}"));
    let policy = BreakerPolicy {
        consecutive_failures: raw.consecutive_failures.unwrap_or(base.consecutive_failures),
        failure_ratio: raw.failure_ratio.or(base.failure_ratio),
        window: raw.window.unwrap_or(base.window),
        open_for: raw.open_for.unwrap_or(base.open_for),
        max_open_for: raw.max_open_for.unwrap_or(base.max_open_for),
        half_open_probes: raw.half_open_probes.unwrap_or(base.half_open_probes),
    };
    if policy.consecutive_failures == 0 {
        return Err(err("consecutive_failures", "must be at least 1"));
    }
    if let Some(r) = policy.failure_ratio
        && !(r > 0.0 && r <= 1.0)
    {
        return Err(err("failure_ratio", "must be in (0, 1]"));
    }
    if policy.window == 0 {
        return Err(err("window", "must be at least 1"));
    }
    if policy.open_for.is_zero() || policy.max_open_for < policy.open_for {
        return Err(err("max_open_for", "must be at least open_for, which must be above 0"));
    }
    if policy.half_open_probes == 0 {
        return Err(err("half_open_probes", "must be at least 1"));
    }
    Ok(policy)
}

fn retry_policy(base: RetryPolicy, raw: Option<&raw::RawRetry>, path: &str) -> Result<RetryPolicy, ConfigError> {
    let Some(raw) = raw else { return Ok(base) };
    let policy = RetryPolicy {
        max_attempts: raw.max_attempts.unwrap_or(base.max_attempts),
        backoff: raw.backoff.unwrap_or(base.backoff),
        max_backoff: raw.max_backoff.unwrap_or(base.max_backoff),
    };
    if policy.max_attempts == 0 {
        return Err(ConfigError(format!("{path}.max_attempts: must be at least 1")));
    }
    Ok(policy)
}

/// A loop through `fallbacks` / `context_window_fallbacks` / `content_policy_fallbacks`, if any.
fn fallback_cycle(models: &BTreeMap<String, ModelSpec>) -> Option<Vec<String>> {
    fn visit<'a>(
        name: &'a str,
        models: &'a BTreeMap<String, ModelSpec>,
        stack: &mut Vec<&'a str>,
        done: &mut std::collections::BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| *n == name) {
            let mut cycle: Vec<String> = stack[at..].iter().map(|s| (*s).to_owned()).collect();
            cycle.push(name.to_owned());
            return Some(cycle);
        }
        if !done.insert(name) {
            return None;
        }
        stack.push(name);
        let model = models.get(name)?;
        let next = model.fallbacks.iter().chain(&model.context_window_fallbacks).chain(&model.content_policy_fallbacks);
        for target in next {
            if let Some(cycle) = visit(target, models, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        None
    }
    let mut done = std::collections::BTreeSet::new();
    for name in models.keys() {
        let mut stack = Vec::new();
        if let Some(cycle) = visit(name, models, &mut stack, &mut done) {
            return Some(cycle);
        }
    }
    None
}

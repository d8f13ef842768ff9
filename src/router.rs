//! Routing: the client's model name (after team overrides and aliases) → an ordered plan of
//! deployments: its group's tiers by priority, each ordered by the group's strategy, open
//! breakers and cooling-down deployments skipped, then the fallback groups. Prompts that do not
//! fit a deployment's context window go to the context-window fallbacks.

pub mod balance;
pub mod breaker;
pub mod failover;
pub mod health;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::{Config, DeploymentSpec, ModelSpec, ProviderSpec, RetryPolicy};
use crate::ctx::Principal;
use crate::error::GatewayError;
use balance::Member;
use health::DeploymentHealth;

pub struct Router {
    groups: BTreeMap<String, Group>,
    aliases: BTreeMap<String, String>,
    default_backend: Option<Arc<ProviderSpec>>,
    /// One health record per deployment id, shared by every group that lists it.
    health: HashMap<String, Arc<DeploymentHealth>>,
    /// Health records of catch-all deployments, made on first use.
    catch_all_health: Mutex<HashMap<String, Arc<DeploymentHealth>>>,
    /// `spend.currency`, named when a price ceiling leaves nothing to route to.
    currency: String,
}

#[derive(Debug)]
struct Group {
    spec: ModelSpec,
    members: Vec<Member>,
}

/// A client's model name, resolved for one caller (`Router::resolve`).
#[derive(Debug, Clone, Copy)]
pub struct Resolved<'a> {
    /// The name the client sent (named in errors).
    requested: &'a str,
    /// The group it goes to, after team overrides and aliases (a default-backend model: its
    /// name): what per-model limits and the cache apply to, whatever the client called it.
    pub group: &'a str,
    /// The name after team overrides: what the default backend is asked for.
    target: &'a str,
    /// The configured group; `None`: the default backend serves `target`.
    members: Option<&'a Group>,
    /// The caller's price ceiling (`max_price_per_mtok` of its key and team, the lower).
    ceiling: Option<u64>,
    team: &'a str,
}

/// Where one request may go, in the order to try.
#[derive(Debug)]
pub struct Plan {
    pub candidates: Vec<Candidate>,
    /// Tried instead when an upstream refuses the content.
    pub content_policy: Vec<Candidate>,
    /// Tried instead when an upstream says the prompt is too long.
    pub context_window: Vec<Candidate>,
    pub retry: RetryPolicy,
}

#[derive(Debug, Clone)]
pub struct Candidate {
    pub deployment: Arc<DeploymentSpec>,
    pub health: Arc<DeploymentHealth>,
}

/// What the router needs to know about the request itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestShape {
    /// Prompt tokens plus the completion budget asked for.
    pub tokens_needed: u64,
}

impl Router {
    pub fn new(config: &Config) -> Self {
        let mut health: HashMap<String, Arc<DeploymentHealth>> = HashMap::new();
        let groups = config
            .models
            .iter()
            .map(|(name, spec)| {
                let members = spec
                    .deployments
                    .iter()
                    .map(|d| {
                        let h = health
                            .entry(d.id.clone())
                            .or_insert_with(|| Arc::new(DeploymentHealth::new(d.id.clone(), d.breaker)))
                            .clone();
                        (Arc::new(d.clone()), h)
                    })
                    .collect();
                (name.clone(), Group { spec: spec.clone(), members })
            })
            .collect();
        Self {
            groups,
            aliases: config.aliases.clone(),
            default_backend: config.default_backend.clone(),
            health,
            catch_all_health: Mutex::new(HashMap::new()),
            currency: config.spend.currency.clone(),
        }
    }

    /// The group `requested` goes to for `principal` (team overrides, then aliases; a
    /// default-backend model is its own group), or why it may not be used: resolved once per
    /// request, for its per-model limits, its cache key and its plan.
    pub fn resolve<'a>(&'a self, principal: &'a Principal, requested: &'a str) -> Result<Resolved<'a>, GatewayError> {
        let known = self.groups.contains_key(requested) || self.aliases.contains_key(requested);
        if !known && self.default_backend.is_none() {
            return Err(GatewayError::ModelNotFound(format!("The model `{requested}` does not exist.")));
        }
        if !principal.allows(requested) {
            return Err(GatewayError::ModelNotAllowed(format!(
                "Team `{}` is not allowed to use the model `{requested}`.",
                principal.team
            )));
        }
        let target = principal.policy.model_overrides.get(requested).map(String::as_str).unwrap_or(requested);
        let name = self.group_name(target);
        Ok(Resolved {
            requested,
            group: name.unwrap_or(target),
            target,
            members: name.and_then(|g| self.groups.get(g)),
            ceiling: principal.grant.limits.ceiling(&principal.policy.limits),
            team: &principal.team,
        })
    }

    /// Plans the attempts for `requested` on behalf of `principal`.
    pub fn plan(&self, principal: &Principal, requested: &str, shape: RequestShape) -> Result<Plan, GatewayError> {
        self.plan_for(&self.resolve(principal, requested)?, shape)
    }

    /// Plans the attempts for a resolved model.
    pub fn plan_for(&self, resolved: &Resolved<'_>, shape: RequestShape) -> Result<Plan, GatewayError> {
        let Some(group) = resolved.members else {
            return self.catch_all(resolved);
        };
        let now = Instant::now();
        let mut rng = fastrand::Rng::new();
        let ceiling = resolved.ceiling;

        let within: Vec<&Member> = group.members.iter().filter(|(d, _)| affordable(d, ceiling)).collect();
        let priced_out = within.is_empty() && !group.members.is_empty();
        let (fitting, too_small): (Vec<&Member>, Vec<&Member>) =
            within.into_iter().partition(|(d, _)| d.context_window.is_none_or(|w| shape.tokens_needed <= w));
        let none_fit = fitting.is_empty() && !priced_out;
        let context_window = self.expand(&group.spec.context_window_fallbacks, shape, ceiling, now, &mut rng);
        let mut candidates = if none_fit {
            // Nothing in this group can hold the prompt: the context-window fallbacks take over.
            context_window.clone()
        } else {
            let mut c = order_group(&group.spec, fitting, now, &mut rng);
            c.extend(self.expand(&group.spec.fallbacks, shape, ceiling, now, &mut rng));
            c
        };
        candidates.dedup_by(|a, b| a.deployment.id == b.deployment.id);
        if candidates.is_empty() {
            if priced_out {
                let cheapest = group.members.iter().map(|(d, _)| d.sort_price).min().unwrap_or(u64::MAX);
                return Err(self.over_ceiling(resolved, cheapest));
            }
            if none_fit && !too_small.is_empty() {
                let window = too_small.iter().filter_map(|(d, _)| d.context_window).max().unwrap_or(0);
                return Err(GatewayError::ContextLength(format!(
                    "This model's maximum context length is {window} tokens, but about {} were requested.",
                    shape.tokens_needed
                )));
            }
            return Err(unavailable(resolved.requested, group.members.iter().map(|(_, h)| h), now));
        }
        Ok(Plan {
            candidates,
            content_policy: self.expand(&group.spec.content_policy_fallbacks, shape, ceiling, now, &mut rng),
            context_window,
            retry: group.spec.retry,
        })
    }

    /// The refusal when every deployment of the model costs more than the caller's ceiling.
    fn over_ceiling(&self, resolved: &Resolved<'_>, cheapest: u64) -> GatewayError {
        let money = crate::config::price::format_micros;
        let ceiling = resolved.ceiling.unwrap_or(0);
        let cheapest =
            if cheapest == u64::MAX { "unknown".to_owned() } else { format!("{} {}", money(cheapest), self.currency) };
        GatewayError::ModelNotAllowed(format!(
            "Team `{}` may not use the model `{}`: its price ceiling max_price_per_mtok is {} {} per million \
             tokens (input + output), and every deployment of the model costs more (the cheapest: {cheapest}).",
            resolved.team,
            resolved.requested,
            money(ceiling),
            self.currency
        ))
    }

    fn group_name<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        if self.groups.contains_key(name) { Some(name) } else { self.aliases.get(name).map(String::as_str) }
    }

    /// The candidates of fallback groups (and their own fallbacks), in order.
    fn expand(
        &self,
        names: &[String],
        shape: RequestShape,
        ceiling: Option<u64>,
        now: Instant,
        rng: &mut fastrand::Rng,
    ) -> Vec<Candidate> {
        let mut out = Vec::new();
        let mut seen = Vec::new();
        let mut queue: Vec<&str> = names.iter().map(String::as_str).collect();
        while !queue.is_empty() {
            let name = queue.remove(0);
            if seen.contains(&name) {
                continue;
            }
            seen.push(name);
            let Some(group) = self.groups.get(name) else { continue };
            let fitting: Vec<&Member> = group
                .members
                .iter()
                .filter(|(d, _)| affordable(d, ceiling) && d.context_window.is_none_or(|w| shape.tokens_needed <= w))
                .collect();
            out.extend(order_group(&group.spec, fitting, now, rng));
            queue.extend(group.spec.fallbacks.iter().map(String::as_str));
        }
        out
    }

    fn catch_all(&self, resolved: &Resolved<'_>) -> Result<Plan, GatewayError> {
        let model = resolved.target;
        let provider = self
            .default_backend
            .clone()
            .ok_or_else(|| GatewayError::ModelNotFound(format!("The model `{model}` does not exist.")))?;
        if let Some(ceiling) = resolved.ceiling {
            let price = crate::config::price::sort_price(&provider, model, None);
            if price > ceiling {
                return Err(self.over_ceiling(resolved, price));
            }
        }
        let deployment = Arc::new(DeploymentSpec::catch_all(provider, model, &self.currency));
        let health = {
            let mut map = self.catch_all_health.lock().unwrap_or_else(|p| p.into_inner());
            // Bounded: client-chosen names must not grow this without end.
            if map.len() >= 4096 && !map.contains_key(&deployment.id) {
                map.clear();
            }
            map.entry(deployment.id.clone())
                .or_insert_with(|| Arc::new(DeploymentHealth::new(deployment.id.clone(), deployment.breaker)))
                .clone()
        };
        let now = Instant::now();
        if !health.available(now) {
            return Err(unavailable(model, std::iter::once(&health), now));
        }
        Ok(Plan {
            candidates: vec![Candidate { deployment, health }],
            content_policy: Vec::new(),
            context_window: Vec::new(),
            retry: RetryPolicy::default(),
        })
    }

    /// Client-facing model names the team may use, for `GET /v1/models`.
    pub fn visible_models<'a>(&'a self, principal: &'a Principal) -> impl Iterator<Item = &'a str> + 'a {
        self.groups.keys().chain(self.aliases.keys()).map(String::as_str).filter(|name| principal.allows(name))
    }

    /// Whether `model` names something routable at all (for `GET /v1/models/{id}`).
    pub fn knows(&self, model: &str) -> bool {
        self.groups.contains_key(model) || self.aliases.contains_key(model) || self.default_backend.is_some()
    }

    /// Every deployment's live state, for `/health` and metrics.
    pub fn deployments(&self) -> impl Iterator<Item = &Arc<DeploymentHealth>> {
        self.health.values()
    }

    /// The health records of a provider's deployments (for its active health check).
    pub fn deployments_of(&self, provider: &str) -> Vec<Arc<DeploymentHealth>> {
        let mut out: Vec<Arc<DeploymentHealth>> = self
            .groups
            .values()
            .flat_map(|g| g.members.iter())
            .filter(|(d, _)| d.provider.name == provider)
            .map(|(_, h)| h.clone())
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.dedup_by(|a, b| a.id == b.id);
        out
    }
}

/// The error for a model none of whose deployments can be tried now: 429 with the shortest
/// cool-down when they are all rate limited upstream, else 503 with the shortest open period.
pub fn unavailable<'a>(
    model: &str,
    health: impl Iterator<Item = &'a Arc<DeploymentHealth>>,
    now: Instant,
) -> GatewayError {
    let mut cooldown: Option<std::time::Duration> = None;
    let mut open: Option<std::time::Duration> = None;
    let mut all_cooling = true;
    for h in health {
        let (c, o) = h.wait_hint(now);
        if let Some(o) = o {
            open = Some(open.map_or(o, |x| x.min(o)));
            all_cooling = false;
        } else if let Some(c) = c {
            cooldown = Some(cooldown.map_or(c, |x| x.min(c)));
        } else {
            all_cooling = false;
        }
    }
    let secs = |d: std::time::Duration| d.as_secs_f64().ceil().max(1.0) as u64;
    match cooldown {
        Some(c) if all_cooling => GatewayError::CoolingDown {
            message: format!(
                "Every deployment of the model `{model}` is rate limited upstream; retry after {} s.",
                secs(c)
            ),
            retry_after_secs: secs(c),
        },
        _ => GatewayError::Unavailable {
            message: format!(
                "Every deployment of the model `{model}` is unavailable (circuit open or cooling down); try again later."
            ),
            retry_after_secs: open.or(cooldown).map(secs),
        },
    }
}

/// Whether a deployment's price (input + output per million tokens) is within `ceiling`; a
/// paying vendor's model with no known price never is.
fn affordable(deployment: &DeploymentSpec, ceiling: Option<u64>) -> bool {
    ceiling.is_none_or(|c| deployment.sort_price <= c)
}

/// One group's available deployments: lowest priority tier first, each tier ordered by strategy.
fn order_group(spec: &ModelSpec, members: Vec<&Member>, now: Instant, rng: &mut fastrand::Rng) -> Vec<Candidate> {
    let mut available: Vec<Member> =
        members.into_iter().filter(|(_, h)| h.available(now)).map(|(d, h)| (d.clone(), h.clone())).collect();
    // Tiers are runs of equal priority (a stable sort keeps the configured order within one).
    available.sort_by_key(|(d, _)| d.priority);
    let mut ordered = Vec::with_capacity(available.len());
    while !available.is_empty() {
        let priority = available[0].0.priority;
        let rest = available.iter().position(|(d, _)| d.priority != priority).unwrap_or(available.len());
        let tail = available.split_off(rest);
        let tier = std::mem::replace(&mut available, tail);
        let tier = if tier.len() == 1 { tier } else { balance::order(spec.strategy, tier, rng) };
        ordered.extend(tier.into_iter().map(|(deployment, health)| Candidate { deployment, health }));
    }
    ordered
}

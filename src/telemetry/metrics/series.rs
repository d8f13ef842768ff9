//! The series a request touches, found without building a label set: one entry per configured
//! model and deployment, made when the configuration is built, each handle taken from its family
//! (`get_or_create`) the first time it is needed and kept. Label values stay bounded: a model
//! clients make up is `other`, an unknown deployment `<provider>/other`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;

use super::encode::GapHistogram;
use super::labels::{Attempt, Deployment, GenAiTokens, Model, StatusModel, Tokens};

/// Token types of `llm_gateway_tokens_total`, in `ModelSeries::tokens` order.
pub const TOKEN_TYPES: [&str; 4] = ["input", "output", "cached_input", "reasoning"];

/// The handle in `cell`, taken from `family` the first time.
pub fn once<'a, L, M, C>(cell: &'a OnceLock<M>, family: &Family<L, M, C>, label: impl FnOnce() -> L) -> &'a M
where
    L: Clone + std::hash::Hash + Eq,
    M: Clone,
    C: MetricConstructor<M>,
{
    cell.get_or_init(|| family.get_or_create_owned(&label()))
}

/// One client-facing model's series.
#[derive(Debug, Default)]
pub struct ModelSeries {
    pub name: Arc<str>,
    /// `llm_requests_total{status="200"}`: other statuses go through the family.
    pub ok: OnceLock<Counter>,
    pub duration: OnceLock<Histogram>,
    pub first_token: OnceLock<Histogram>,
    pub gaps: OnceLock<GapHistogram>,
    /// `gen_ai_client_token_usage`: input, output.
    pub usage: [OnceLock<Histogram>; 2],
    /// `llm_gateway_tokens_total` with `team=""` (team labels off), by `TOKEN_TYPES`.
    pub tokens: [OnceLock<Counter>; 4],
}

impl ModelSeries {
    fn new(name: &str) -> Self {
        Self { name: name.into(), ..Default::default() }
    }

    pub fn requests<'a>(&'a self, family: &Family<StatusModel, Counter>, status: u16) -> CounterRef<'a> {
        if status == 200 {
            return CounterRef::Kept(once(&self.ok, family, || StatusModel { status, model: self.name.clone() }));
        }
        CounterRef::Found(family.get_or_create_owned(&StatusModel { status, model: self.name.clone() }))
    }

    pub fn duration(&self, family: &Family<Model, Histogram>) -> &Histogram {
        once(&self.duration, family, || Model { model: self.name.clone() })
    }

    pub fn first_token(&self, family: &Family<Model, Histogram>) -> &Histogram {
        once(&self.first_token, family, || Model { model: self.name.clone() })
    }

    pub fn gaps(&self, family: &Family<Model, GapHistogram>) -> &GapHistogram {
        once(&self.gaps, family, || Model { model: self.name.clone() })
    }

    pub fn usage(&self, family: &Family<GenAiTokens, Histogram>, output: bool) -> &Histogram {
        let kind = if output { "output" } else { "input" };
        once(&self.usage[usize::from(output)], family, || GenAiTokens {
            gen_ai_token_type: kind,
            gen_ai_request_model: self.name.clone(),
        })
    }

    /// The tokens counter of `TOKEN_TYPES[kind]`, for `team` when team labels are on.
    pub fn tokens<'a>(
        &'a self,
        family: &Family<Tokens, Counter>,
        kind: usize,
        team: Option<&Arc<str>>,
    ) -> CounterRef<'a> {
        let label = |team: Arc<str>| Tokens { r#type: TOKEN_TYPES[kind], model: self.name.clone(), team };
        match team {
            Some(team) => CounterRef::Found(family.get_or_create_owned(&label(team.clone()))),
            None => CounterRef::Kept(once(&self.tokens[kind], family, || label(Arc::from("")))),
        }
    }
}

/// A counter kept in a series entry, or found in its family for a rarer label set.
pub enum CounterRef<'a> {
    Kept(&'a Counter),
    Found(Counter),
}

impl CounterRef<'_> {
    pub fn inc_by(&self, n: u64) {
        match self {
            Self::Kept(c) => c.inc_by(n),
            Self::Found(c) => c.inc_by(n),
        };
    }
}

/// One deployment's series.
#[derive(Debug, Default)]
pub struct DeploymentSeries {
    pub name: Arc<str>,
    /// `llm_gateway_upstream_attempts_total{outcome="ok"}`: failures go through the family.
    pub ok: OnceLock<Counter>,
    pub first_byte: OnceLock<Histogram>,
}

impl DeploymentSeries {
    fn new(name: &str) -> Self {
        Self { name: name.into(), ..Default::default() }
    }

    pub fn attempt<'a>(&'a self, family: &Family<Attempt, Counter>, outcome: &'static str) -> CounterRef<'a> {
        let label = || Attempt { deployment: self.name.clone(), outcome };
        if outcome == "ok" {
            return CounterRef::Kept(once(&self.ok, family, label));
        }
        CounterRef::Found(family.get_or_create_owned(&label()))
    }

    pub fn first_byte(&self, family: &Family<Deployment, Histogram>) -> &Histogram {
        once(&self.first_byte, family, || Deployment { deployment: self.name.clone() })
    }
}

/// Every model's and deployment's entry.
#[derive(Debug, Default)]
pub struct Series {
    models: HashMap<Box<str>, ModelSeries>,
    other_model: ModelSeries,
    deployments: HashMap<Box<str>, DeploymentSeries>,
    /// `<provider>/other`, by provider, for the providers of the configured deployments.
    other_deployments: HashMap<Box<str>, DeploymentSeries>,
}

impl Series {
    pub fn new(models: &BTreeSet<String>, deployments: &BTreeSet<String>) -> Self {
        let providers: BTreeSet<&str> = deployments.iter().map(|d| provider_of(d)).collect();
        Self {
            models: models.iter().map(|m| (m.as_str().into(), ModelSeries::new(m))).collect(),
            other_model: ModelSeries::new("other"),
            deployments: deployments.iter().map(|d| (d.as_str().into(), DeploymentSeries::new(d))).collect(),
            other_deployments: providers
                .into_iter()
                .map(|p| (p.into(), DeploymentSeries::new(&format!("{p}/other"))))
                .collect(),
        }
    }

    pub fn model(&self, model: &str) -> &ModelSeries {
        self.models.get(model).unwrap_or(&self.other_model)
    }

    /// A deployment's entry; `None` for one of a provider no configured deployment uses (the
    /// default backend answering names clients make up): its label is made on the spot.
    pub fn deployment(&self, deployment: &str) -> Option<&DeploymentSeries> {
        self.deployments.get(deployment).or_else(|| self.other_deployments.get(provider_of(deployment)))
    }

    pub fn model_names(&self) -> BTreeSet<String> {
        self.models.keys().map(|m| m.to_string()).collect()
    }

    pub fn is_known_model(&self, model: &str) -> bool {
        self.models.contains_key(model)
    }
}

pub fn provider_of(deployment: &str) -> &str {
    deployment.split_once('/').map_or(deployment, |(p, _)| p)
}

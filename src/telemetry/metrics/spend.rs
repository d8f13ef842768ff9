//! Spend in Prometheus: integer counters of micro-units of the configured currency, by team and
//! client-facing model, and the deployments nothing prices.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::telemetry::metrics::labels::{Deployment, Reason};
use crate::telemetry::metrics::register;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TeamModel {
    pub team: Arc<str>,
    pub model: Arc<str>,
}

#[derive(Debug)]
pub struct SpendMetrics {
    spend: Family<TeamModel, Counter>,
    saved: Family<TeamModel, Counter>,
    unpriced: Family<Deployment, Gauge>,
    alerts: Family<Reason, Counter>,
    registry: Registry,
}

impl Default for SpendMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SpendMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let (spend, saved, unpriced, alerts) =
            (Family::default(), Family::default(), Family::default(), Family::default());
        register(
            &mut registry,
            "llm_gateway_spend_total",
            "What requests cost at their deployment's price, in micro-units of spend.currency (1000000 = 1 USD).",
            spend.clone(),
        );
        register(
            &mut registry,
            "llm_gateway_spend_saved_total",
            "What cache hits would have cost upstream, in micro-units of spend.currency.",
            saved.clone(),
        );
        register(
            &mut registry,
            "llm_gateway_unpriced_deployments",
            "1 for each configured deployment of a paying vendor that has no price (counted at zero cost).",
            unpriced.clone(),
        );
        register(
            &mut registry,
            "llm_gateway_spend_budget_alerts_total",
            "Money budgets that passed 80% of their limit in a window (once per budget, window and replica).",
            alerts.clone(),
        );
        Self { spend, saved, unpriced, alerts, registry }
    }

    pub fn spent(&self, team: Arc<str>, model: &str, micros: u64) {
        self.spend.get_or_create(&TeamModel { team, model: model.into() }).inc_by(micros);
    }

    pub fn saved(&self, team: Arc<str>, model: &str, micros: u64) {
        self.saved.get_or_create(&TeamModel { team, model: model.into() }).inc_by(micros);
    }

    /// `budget`: `daily_spend` or `monthly_spend`.
    pub fn budget_alert(&self, budget: &'static str) {
        self.alerts.get_or_create(&Reason::from(budget)).inc();
    }

    pub fn set_unpriced(&self, deployment: &str) {
        self.unpriced.get_or_create(&Deployment { deployment: deployment.into() }).set(1);
    }

    /// Appends these metrics to a Prometheus text exposition.
    pub fn render(&self, out: &mut String) {
        crate::telemetry::metrics::encode_into(out, &self.registry);
    }
}

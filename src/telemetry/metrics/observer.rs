//! Feeds the request metrics from each request's attempts and outcome, through the series
//! handles kept per model and deployment: no label set is built on the way.

use std::sync::Arc;
use std::time::Duration;

use crate::ctx::{Observer, Outcome, RequestCtx};

use super::Metrics;
use super::labels::{Attempt, Deployment};
use super::series::TOKEN_TYPES;

/// The observer that counts requests.
pub struct RequestMetrics(pub Arc<Metrics>);

impl Observer for RequestMetrics {
    fn started(&self, _ctx: &RequestCtx) {
        self.0.in_flight.inc();
    }

    fn attempted(&self, _ctx: &RequestCtx, deployment: &str, outcome: &'static str, first_byte: Option<Duration>) {
        let m = &self.0;
        match m.series.deployment(deployment) {
            Some(series) => {
                series.attempt(&m.upstream_attempts, outcome).inc_by(1);
                if let Some(d) = first_byte {
                    series.first_byte(&m.upstream_latency).observe(d.as_secs_f64());
                }
            }
            None => {
                // A provider no configured deployment uses: rare enough to build the label.
                let deployment = m.deployment_label(deployment);
                m.upstream_attempts.get_or_create(&Attempt { deployment: deployment.clone(), outcome }).inc();
                if let Some(d) = first_byte {
                    m.upstream_latency.get_or_create(&Deployment { deployment }).observe(d.as_secs_f64());
                }
            }
        }
    }

    fn finished(&self, ctx: &RequestCtx, outcome: &Outcome) {
        let m = &self.0;
        m.in_flight.dec();
        let model = m.series.model(&ctx.client_model);
        // Not a valid status code: 0, as the label always was.
        let status = if (100..1000).contains(&outcome.status) { outcome.status } else { 0 };
        model.requests(&m.requests, status).inc_by(1);
        model.duration(&m.request_duration).observe(ctx.started.elapsed().as_secs_f64());
        if let Some(ttft) = outcome.time_to_first_chunk {
            model.first_token(&m.time_to_first_token).observe(ttft.as_secs_f64());
        }
        if let Some(gaps) = &outcome.gaps {
            model.gaps(&m.inter_chunk_gap).merge(gaps);
        }
        if ctx.stream && outcome.status == 200 {
            let how = if outcome.client_gone {
                2
            } else if outcome.error.is_some() {
                1
            } else {
                0
            };
            m.stream_outcomes[how].inc();
        }
        // A cache hit cost no upstream tokens: its usage is the stored answer's, for metering.
        if let Some(usage) = outcome.usage.filter(|_| !ctx.cache.is_hit()) {
            let team = ctx.principal.as_ref().map(|p| &p.team).filter(|_| m.team_label);
            let cached = usage.prompt_tokens_details.map(|d| d.cached_tokens).unwrap_or(0);
            let reasoning = usage.completion_tokens_details.map(|d| d.reasoning_tokens).unwrap_or(0);
            let counts = [usage.prompt_tokens, usage.completion_tokens, cached, reasoning];
            debug_assert_eq!(counts.len(), TOKEN_TYPES.len());
            for (kind, n) in counts.into_iter().enumerate() {
                if n > 0 {
                    model.tokens(&m.tokens, kind, team).inc_by(n);
                }
            }
            model.usage(&m.token_usage, false).observe(usage.prompt_tokens as f64);
            model.usage(&m.token_usage, true).observe(usage.completion_tokens as f64);
        }
    }
}

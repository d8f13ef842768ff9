use std::collections::BTreeSet;

use super::labels::{Deployment, Model, StatusModel};
use super::*;

#[test]
fn renders_counters_and_cumulative_histograms() {
    let m = Metrics::new(["gpt-4o".to_owned()].into(), false);
    let label = StatusModel { status: 200, model: "gpt-4o".into() };
    m.requests.get_or_create(&label).inc();
    m.requests.get_or_create(&label).inc();
    let h = m.request_duration.get_or_create_owned(&Model { model: "gpt-4o".into() });
    h.observe(0.003);
    h.observe(0.2);
    h.observe(1000.0);
    let text = m.render();
    assert!(text.contains("# TYPE llm_requests_total counter\n"), "{text}");
    assert!(text.contains("llm_requests_total{status=\"200\",model=\"gpt-4o\"} 2\n"), "{text}");
    assert!(text.contains("llm_request_duration_seconds_bucket{model=\"gpt-4o\",le=\"0.005\"} 1\n"));
    assert!(text.contains("llm_request_duration_seconds_bucket{model=\"gpt-4o\",le=\"0.25\"} 2\n"));
    assert!(text.contains("llm_request_duration_seconds_bucket{model=\"gpt-4o\",le=\"+Inf\"} 3\n"));
    assert!(text.contains("llm_request_duration_seconds_count{model=\"gpt-4o\"} 3\n"));
    assert_eq!(m.model_label("made-up-by-a-client"), "other");
    let m = Metrics::new(BTreeSet::new(), false).with_deployments(["p/known".to_owned()].into());
    assert_eq!(&*m.deployment_label("p/known"), "p/known");
    assert_eq!(&*m.deployment_label("p/made-up-by-a-client"), "p/other");
    assert_eq!(&*m.deployment_label("q/made-up-by-a-client"), "q/other");
}

#[test]
fn label_values_are_escaped() {
    let m = Metrics::new(BTreeSet::new(), true);
    m.breaker_state.get_or_create(&Deployment { deployment: "p/a\"b\\c".into() }).set(1);
    assert!(m.render().contains("llm_gateway_breaker_state{deployment=\"p/a\\\"b\\\\c\"} 1\n"));
}

#[test]
fn every_family_is_listed_before_its_first_series_with_the_names_prometheus_sees() {
    let text = Metrics::new(BTreeSet::new(), false).render();
    for line in [
        "# HELP llm_requests_total Requests answered, by HTTP status and client-facing model.\n",
        "# TYPE llm_requests_total counter\n",
        "# TYPE llm_request_duration_seconds histogram\n",
        "# TYPE llm_gateway_rate_limited_total counter\n",
        "# TYPE llm_gateway_in_flight_requests gauge\n",
        "llm_gateway_in_flight_requests 0\n",
        "llm_gateway_valkey_errors_total 0\n",
        "llm_gateway_limit_check_seconds_count 0\n",
        "llm_gateway_limit_decisions_total{decided_by=\"valkey\"} 0\n",
        "llm_gateway_trace_spans_dropped_total{reason=\"export_failed\"} 0\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }
    assert!(!text.contains("_total_total") && !text.contains(".."), "{text}");
    assert!(!text.contains("# EOF"), "a 0.0.4 exposition has no EOF marker");
}

#[test]
fn stream_gaps_are_merged_bucket_by_bucket() {
    let m = Metrics::new(["m".to_owned()].into(), false);
    let mut gaps = crate::ctx::ChunkGaps::default();
    for ms in [0, 3, 3, 2000, 9000] {
        gaps.record(std::time::Duration::from_millis(ms));
    }
    m.series.model("m").gaps(&m.inter_chunk_gap).merge(&gaps);
    let text = m.render();
    assert!(text.contains("llm_gateway_inter_chunk_gap_seconds_bucket{model=\"m\",le=\"0.001\"} 1\n"), "{text}");
    assert!(text.contains("llm_gateway_inter_chunk_gap_seconds_bucket{model=\"m\",le=\"0.005\"} 3\n"), "{text}");
    assert!(text.contains("llm_gateway_inter_chunk_gap_seconds_bucket{model=\"m\",le=\"5\"} 4\n"), "{text}");
    assert!(text.contains("llm_gateway_inter_chunk_gap_seconds_bucket{model=\"m\",le=\"+Inf\"} 5\n"), "{text}");
    assert!(text.contains("llm_gateway_inter_chunk_gap_seconds_count{model=\"m\"} 5\n"), "{text}");
}

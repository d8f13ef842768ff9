use std::time::Duration;

use http::StatusCode;

use super::{Decision, Fallbacks, backoff, decide, retry_after_duration};
use crate::api::ErrorBody;
use crate::config::RetryPolicy;
use crate::error::GatewayError;

fn upstream(status: u16, code: Option<&str>, message: &str, retry_after: Option<&str>) -> GatewayError {
    GatewayError::UpstreamStatus {
        status: StatusCode::from_u16(status).unwrap(),
        body: ErrorBody::new(message, "invalid_request_error", None, code),
        retry_after: retry_after.map(str::to_owned),
    }
}

fn lists(content_policy: &[&'static str], context_window: &[&'static str]) -> Fallbacks<&'static str> {
    Fallbacks::new(content_policy.to_vec(), context_window.to_vec())
}

#[test]
fn a_429_cools_the_deployment_down_for_its_retry_after() {
    let mut none = lists(&[], &[]);
    assert_eq!(
        decide(&upstream(429, None, "slow down", Some("7")), &mut none),
        Decision::CoolDown(Duration::from_secs(7))
    );
    assert_eq!(decide(&upstream(429, None, "slow down", None), &mut none), Decision::CoolDown(Duration::from_secs(1)));
}

#[test]
fn a_refusal_switches_once_to_the_fallback_list_made_for_it() {
    let mut fallbacks = lists(&["safe"], &["long"]);
    let filtered = upstream(400, Some("content_filter"), "no", None);
    let too_long = upstream(400, None, "This model's maximum context length is 8192 tokens", None);
    let anthropic_too_long = upstream(400, None, "prompt is too long: 215000 tokens > 200000 maximum", None);
    assert_eq!(decide(&filtered, &mut fallbacks), Decision::Fallback(vec!["safe"]));
    // Each list serves one switch: the same refusal again is the answer.
    assert_eq!(decide(&filtered, &mut fallbacks), Decision::Refused);
    assert_eq!(decide(&too_long, &mut fallbacks), Decision::Fallback(vec!["long"]));
    assert_eq!(decide(&anthropic_too_long, &mut fallbacks), Decision::Refused);

    let mut fallbacks = lists(&["safe"], &["long"]);
    let by_code = upstream(400, Some("context_length_exceeded"), "too long", None);
    assert_eq!(decide(&by_code, &mut fallbacks), Decision::Fallback(vec!["long"]));
    assert_eq!(
        decide(&upstream(400, Some("content_policy_violation"), "no", None), &mut fallbacks),
        Decision::Fallback(vec!["safe"])
    );
}

#[test]
fn a_refusal_without_a_fallback_is_the_answer_and_the_deployment_stays_healthy() {
    let mut none = lists(&[], &[]);
    assert_eq!(decide(&upstream(400, Some("content_filter"), "no", None), &mut none), Decision::Refused);
    assert_eq!(
        decide(&upstream(404, None, "no such model", None), &mut lists(&["safe"], &["long"])),
        Decision::Refused
    );
    assert_eq!(decide(&upstream(401, None, "bad key", None), &mut none), Decision::Refused);
}

#[test]
fn upstream_failures_are_retried_elsewhere_and_the_rest_stop() {
    let mut none = lists(&[], &[]);
    assert_eq!(decide(&upstream(503, None, "busy", None), &mut none), Decision::Retry);
    let unreachable = GatewayError::UpstreamUnreachable { deployment: "p/m".into(), detail: "refused".into() };
    assert_eq!(decide(&unreachable, &mut none), Decision::Retry);
    let timeout = GatewayError::UpstreamTimeout { deployment: "p/m".into(), phase: "first chunk", after_ms: 5 };
    assert_eq!(decide(&timeout, &mut none), Decision::Retry);
    assert_eq!(decide(&GatewayError::bad_request("bad", None), &mut none), Decision::Stop);
    assert_eq!(decide(&GatewayError::Internal("no pool".into()), &mut none), Decision::Stop);
}

#[test]
fn backoff_doubles_up_to_its_cap_with_jitter_over_the_upper_half() {
    let policy =
        RetryPolicy { max_attempts: 10, backoff: Duration::from_millis(100), max_backoff: Duration::from_millis(1000) };
    for (attempts, full) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (40, 1000)] {
        let full = Duration::from_millis(full);
        assert_eq!(backoff(&policy, attempts, 0.0), full / 2, "attempt {attempts}");
        for step in 0..100 {
            let wait = backoff(&policy, attempts, f64::from(step) / 100.0);
            assert!(wait >= full / 2 && wait < full, "attempt {attempts}: {wait:?}");
        }
    }
}

#[test]
fn retry_after_is_seconds_defaulting_to_one_and_capped() {
    assert_eq!(retry_after_duration(Some(" 2.5 ")), Duration::from_millis(2500));
    assert_eq!(retry_after_duration(Some("0")), Duration::ZERO);
    assert_eq!(retry_after_duration(Some("86400")), Duration::from_secs(300));
    for unreadable in [Some("Wed, 21 Oct 2015 07:28:00 GMT"), Some("-3"), Some("NaN"), None] {
        assert_eq!(retry_after_duration(unreadable), Duration::from_secs(1), "{unreadable:?}");
    }
}

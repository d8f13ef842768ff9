use super::settle_delta;
use crate::api::Usage;
use crate::ctx::Outcome;

fn streamed(usage: Option<Usage>, partial: bool) -> Outcome {
    Outcome { status: 200, usage, usage_partial: partial, ..Outcome::failed(200, "ok") }
}

fn usage(prompt: u64, completion: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        ..Default::default()
    }
}

#[test]
fn reservations_settle_to_what_was_used() {
    // Final usage: refund the unused part of a 1,000-token reservation, or charge the excess.
    assert_eq!(settle_delta(1000, &streamed(Some(usage(100, 50)), false)), -850);
    assert_eq!(settle_delta(100, &streamed(Some(usage(100, 50)), false)), 50);
    // No usage from a stream: what it used is unknown, the reservation stands.
    assert_eq!(settle_delta(1000, &streamed(None, false)), 0);
    // A failure without usage used nothing.
    assert_eq!(settle_delta(1000, &Outcome::failed(502, "upstream_unreachable")), -1000);
}

#[test]
fn partial_usage_keeps_the_reservation_unless_it_reported_more() {
    // An Anthropic stream cut after message_start (input 100, output 1 so far).
    assert_eq!(settle_delta(1000, &streamed(Some(usage(100, 1)), true)), 0);
    assert_eq!(settle_delta(50, &streamed(Some(usage(100, 1)), true)), 51);
}

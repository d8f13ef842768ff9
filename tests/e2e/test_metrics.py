"""`GET /metrics` after a scripted mix of requests: each counter and histogram moves by exactly
the expected amount, and the exposition parses with the Prometheus client's text parser."""

from __future__ import annotations

from typing import Iterator

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e_env import PROVIDER_KEY, PROVIDER_KEY_ENV, TEAM_A_KEY, Gateway, gateway_config
from e2e_support import GatewayProcess
from mock_openai import MockOpenAI, closed_port


@pytest.fixture()
def fresh(upstream: MockOpenAI, tmp_path) -> Iterator[Gateway]:
    """A gateway of its own, so every counter starts at zero."""
    cfg = gateway_config(upstream.base_url, f"http://127.0.0.1:{closed_port()}/v1")
    proc = GatewayProcess(cfg, tmp_path, env={PROVIDER_KEY_ENV: PROVIDER_KEY}).start()
    try:
        yield Gateway(proc=proc, upstream=upstream)
    finally:
        proc.stop()


def scrape(gw: Gateway) -> dict[tuple[str, tuple], float]:
    resp = gw.request_once("GET", "/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_and_histograms_move_by_exactly_the_scripted_amounts(fresh: Gateway) -> None:
    before = scrape(fresh)
    assert value(before, "llm_gateway_in_flight_requests") == 0
    client = fresh.client()
    usage_in = usage_out = 0
    streamed_chunks = 0
    for i in range(3):
        r = client.chat.completions.create(model="echo-model", messages=[{"role": "user", "content": f"hello {i}"}])
        usage_in += r.usage.prompt_tokens
        usage_out += r.usage.completion_tokens
    for _ in range(2):
        chunks = list(
            client.chat.completions.create(
                model="echo-model",
                messages=[{"role": "user", "content": "stream please"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        streamed_chunks += len(chunks)
        usage_in += chunks[-1].usage.prompt_tokens
        usage_out += chunks[-1].usage.completion_tokens
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="err429-model", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="err500-model", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        fresh.client("sk-not-a-key").chat.completions.create(model="echo-model", messages=[{"role": "user", "content": "x"}])

    after = scrape(fresh)
    assert value(after, "llm_requests_total", status="200", model="echo-model") == 5
    assert value(after, "llm_requests_total", status="429", model="err429-model") == 1
    assert value(after, "llm_requests_total", status="500", model="err500-model") == 1
    # The refused request never named a model the gateway knows for it: bounded label "other".
    assert value(after, "llm_requests_total", status="401", model="other") == 1
    assert value(after, "llm_request_duration_seconds_count", model="echo-model") == 5
    assert value(after, "llm_request_duration_seconds_bucket", model="echo-model", le="+Inf") == 5
    assert value(after, "llm_gateway_time_to_first_token_seconds_count", model="echo-model") == 2
    assert value(after, "llm_gateway_tokens_total", type="input", model="echo-model", team="") == usage_in
    assert value(after, "llm_gateway_tokens_total", type="output", model="echo-model", team="") == usage_out
    assert value(after, "gen_ai_client_token_usage_count", gen_ai_token_type="output", gen_ai_request_model="echo-model") == 5
    assert value(after, "llm_gateway_stream_outcomes_total", outcome="completed") == 2
    # One gap between each pair of consecutive frames; a stream's frames are its chunks + [DONE].
    assert value(after, "llm_gateway_inter_chunk_gap_seconds_count", model="echo-model") == streamed_chunks
    assert value(after, "llm_gateway_upstream_attempts_total", deployment="upstream/echo", outcome="ok") == 5
    assert value(after, "llm_gateway_upstream_attempts_total", deployment="upstream/err500", outcome="upstream_status") == 1
    assert value(after, "llm_gateway_upstream_first_byte_seconds_count", deployment="upstream/echo") == 5
    assert value(after, "llm_gateway_breaker_state", deployment="upstream/echo") == 0
    assert value(after, "llm_gateway_in_flight_requests") == 0


def test_metrics_carry_no_keys_or_prompt_text(fresh: Gateway) -> None:
    secret_prompt = "the-launch-code-is-4242"
    fresh.client().chat.completions.create(model="echo-model", messages=[{"role": "user", "content": secret_prompt}])
    text = fresh.request_once("GET", "/metrics").text
    assert secret_prompt not in text
    assert TEAM_A_KEY not in text and PROVIDER_KEY not in text

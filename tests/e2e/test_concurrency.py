"""Many simultaneous streams through one gateway do not mix up their contents."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai

from e2e_env import Gateway


def test_parallel_streams_are_isolated(gateway: Gateway) -> None:
    client = gateway.client()

    def run(i: int) -> tuple[str, str]:
        model = "split-model" if i % 2 else "echo-model"
        text = f"request number {i} " + "word " * (i % 5)
        chunks = list(client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": text}], stream=True,
            stream_options={"include_usage": True},
        ))
        got = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert all(c.model == model for c in chunks)
        assert chunks[-1].usage is not None and chunks[-1].choices == []
        return f"Echo: {text}", got

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(run, range(24)))
    for expected, got in results:
        assert got == expected


def test_parallel_mixed_outcomes(gateway: Gateway) -> None:
    client = gateway.client()
    # outcomes that must not depend on per-deployment health state: successes, client errors,
    # an upstream 400 (a client error must never count against the upstream's health)
    cases = ["echo-model", "no-such-model", "mock-model", "err400-model", "echo-model", "tools-model"] * 3

    def run(model: str) -> tuple[str, object]:
        try:
            r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": model}])
            return model, r.choices[0].message.content
        except openai.APIStatusError as e:
            return model, e.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(run, cases))
    expected = {
        "echo-model": "Echo: echo-model",
        "no-such-model": 404,
        "mock-model": "Mock response to: mock-model",
        "err400-model": 400,
        "tools-model": None,
    }
    for model, outcome in results:
        assert outcome == expected[model], f"{model}: {outcome!r}"

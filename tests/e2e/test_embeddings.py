"""Embeddings through the gateway (OpenAI upstream and the built-in mock dialect)."""

from __future__ import annotations

import math

import openai
import pytest

import mock_openai as m
from e2e_env import TEAM_A_KEY, Gateway
from openai_schemas import assert_valid


def test_embeddings_upstream_sdk_default_base64(gateway: Gateway, client: openai.OpenAI, marker: str) -> None:
    inputs = [f"first {marker}", "second"]
    resp = client.embeddings.create(model="embed-model", input=inputs)
    assert resp.model == "embed-model"
    assert [d.index for d in resp.data] == [0, 1]
    for d, text in zip(resp.data, inputs):
        assert d.embedding == pytest.approx(m.embedding_vector(text), abs=1e-6)
    (rec,) = gateway.upstream.with_marker(marker)
    assert rec.path == "/v1/embeddings" and rec.model == "echo"
    assert rec.body["input"] == inputs
    assert rec.body["encoding_format"] == "base64", "the SDK's encoding_format must be forwarded verbatim"


def test_embeddings_upstream_float_wire(http) -> None:
    r = http.post(
        "/v1/embeddings",
        json={"model": "embed-model", "input": "hello world", "encoding_format": "float", "dimensions": 4},
        headers={"Authorization": f"Bearer {TEAM_A_KEY}"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert_valid("CreateEmbeddingResponse", body)
    assert body["model"] == "embed-model"
    assert body["data"][0]["embedding"] == pytest.approx(m.embedding_vector("hello world", 4), abs=1e-6)
    assert body["usage"] == {"prompt_tokens": 2, "total_tokens": 2}


def test_embeddings_mock_dialect(client: openai.OpenAI, http) -> None:
    a1 = client.embeddings.create(model="mock-embed", input="alpha", encoding_format="float").data[0].embedding
    a2 = client.embeddings.create(model="mock-embed", input="alpha", encoding_format="float").data[0].embedding
    b = client.embeddings.create(model="mock-embed", input="beta", encoding_format="float").data[0].embedding
    assert len(a1) == 16
    assert a1 == a2, "mock embeddings must be deterministic"
    assert a1 != b, "different inputs must give different vectors"
    assert math.sqrt(sum(x * x for x in a1)) == pytest.approx(1.0, abs=1e-4)
    small = client.embeddings.create(model="mock-embed", input=["x", "y", "z"], dimensions=8)
    assert [len(d.embedding) for d in small.data] == [8, 8, 8]
    assert [d.index for d in small.data] == [0, 1, 2]
    assert all(math.sqrt(sum(x * x for x in d.embedding)) == pytest.approx(1.0, abs=1e-4) for d in small.data)
    assert small.model == "mock-embed"
    r = http.post("/v1/embeddings", json={"model": "mock-embed", "input": ["x"], "encoding_format": "float"},
                  headers={"Authorization": f"Bearer {TEAM_A_KEY}"})
    assert r.status_code == 200, r.text
    assert_valid("CreateEmbeddingResponse", r.json())

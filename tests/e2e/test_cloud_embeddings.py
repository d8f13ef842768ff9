"""``/v1/embeddings`` on the three cloud platforms with the openai SDK (its default base64
encoding, and floats): the Gemini API's ``:batchEmbedContents`` (API key), Vertex AI's
``:predict`` (a service account's OAuth2 token), Bedrock's InvokeModel for Titan (one call per
input) and Cohere (SigV4, recomputed by the mock with botocore). Each mock checks the body's
shape; the vectors come back in input order; the usage the platform reports is metered exactly."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Iterator

import pytest

import mock_bedrock_invoke as mbi
import mock_gemini as mg
from cloud_env import client, metered_gateway, metered_tokens, post, rid
from e2e_support import GatewayProcess
from mock_bedrock import MockBedrock
from mock_gemini import MockGemini
from mock_google_oauth import MockOAuth
from openmeter_server import OpenMeterServer

KEY = "AIza-e2e-" + secrets.token_hex(12)
REGION = "eu-central-1"
ACCESS_KEY = "AKIAE2E" + secrets.token_hex(6).upper()
SECRET = secrets.token_urlsafe(30)
TEXTS = ["the quick brown fox", "jumps over", "the lazy dog today"]


@pytest.fixture(scope="module")
def oauth() -> Iterator[MockOAuth]:
    server = MockOAuth("embedder@e2e-project.iam.gserviceaccount.com").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def google(oauth: MockOAuth) -> Iterator[MockGemini]:
    server = MockGemini(api_key=KEY, token_ok=oauth.valid).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bedrock() -> Iterator[MockBedrock]:
    server = MockBedrock({ACCESS_KEY: SECRET}, REGION, "unused").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(google: MockGemini, oauth: MockOAuth, bedrock: MockBedrock, openmeter: OpenMeterServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    work: Path = tmp_path_factory.mktemp("cloud-embeddings")
    (work / "sa.json").write_text(oauth.service_account_json())
    providers = {
        "gemini": {"dialect": "gemini", "base_url": google.base_url},
        "vertex": {"dialect": "vertex", "project": "e2e-project", "location": "us-central1", "base_url": google.base_url},
        "bedrock": {"dialect": "bedrock", "region": REGION, "base_url": bedrock.base_url},
    }
    models = {
        "gemini-embed": [{"provider": "gemini", "model": "gemini-embedding-001"}],
        "vertex-embed": [{"provider": "vertex", "model": "text-embedding-005"}],
        "vertex-gemini-embed": [{"provider": "vertex", "model": "gemini-embedding-001"}],
        "titan": [{"provider": "bedrock", "model": "amazon.titan-embed-text-v2:0"}],
        "cohere": [{"provider": "bedrock", "model": "cohere.embed-english-v3"}],
        "claude": [{"provider": "bedrock", "model": "anthropic.claude-v2:1"}],
    }
    env = {"GEMINI_API_KEY": KEY, "GOOGLE_APPLICATION_CREDENTIALS": str(work / "sa.json"), "AWS_ACCESS_KEY_ID": ACCESS_KEY,
           "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": "", "AWS_BEARER_TOKEN_BEDROCK": ""}
    proc = metered_gateway(work, openmeter, providers, models, env)
    yield proc
    proc.stop()


def embed(gateway: GatewayProcess, model: str, **extra) -> tuple[list[list[float]], int, str]:
    request_id = rid()
    reply = client(gateway).embeddings.create(model=model, input=TEXTS, extra_headers={"x-request-id": request_id}, **extra)
    assert reply.model == model and [d.index for d in reply.data] == [0, 1, 2]
    assert reply.usage.total_tokens == reply.usage.prompt_tokens
    return [d.embedding for d in reply.data], reply.usage.prompt_tokens, request_id


def close(got: list[list[float]], want: list[list[float]]) -> bool:
    return len(got) == len(want) and all(len(g) == len(w) and all(abs(a - b) < 1e-6 for a, b in zip(g, w)) for g, w in zip(got, want))


def test_gemini_api_batch_embed_contents(gateway: GatewayProcess, google: MockGemini, openmeter: OpenMeterServer) -> None:
    vectors, tokens, request_id = embed(gateway, "gemini-embed", dimensions=16)
    assert close(vectors, [mg.vector(t, 16) for t in TEXTS])
    sent = google.requests[-1]
    assert sent.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents" and sent.headers["x-goog-api-key"] == KEY
    assert [r["content"]["parts"][0]["text"] for r in sent.body["requests"]] == TEXTS
    # The Gemini API reports no count: the gateway's estimate, metered as such.
    assert tokens > 0 and metered_tokens(openmeter, request_id) == {"input": tokens}


def test_vertex_predict_with_its_token_counts(gateway: GatewayProcess, google: MockGemini, oauth: MockOAuth, openmeter: OpenMeterServer) -> None:
    vectors, tokens, request_id = embed(gateway, "vertex-embed", encoding_format="float")
    assert close(vectors, [mg.vector(t, 768) for t in TEXTS])
    sent = google.requests[-1]
    assert sent.path == "/v1/projects/e2e-project/locations/us-central1/publishers/google/models/text-embedding-005:predict"
    assert oauth.valid(sent.headers["authorization"][7:]) and sent.body == {"instances": [{"content": t} for t in TEXTS]}
    assert tokens == sum(mg.words(t) for t in TEXTS) and metered_tokens(openmeter, request_id) == {"input": tokens}
    # gemini-embedding-001 takes one instance a request: three calls, in order.
    before = len(google.requests)
    vectors, _, _ = embed(gateway, "vertex-gemini-embed")
    assert close(vectors, [mg.vector(t, 768) for t in TEXTS]) and len(google.requests) == before + 3


def test_bedrock_titan_one_call_per_input(gateway: GatewayProcess, bedrock: MockBedrock, openmeter: OpenMeterServer) -> None:
    before = len(bedrock.requests)
    vectors, tokens, request_id = embed(gateway, "titan", dimensions=256)
    assert close(vectors, [mbi.embedding_of(t, 256) for t in TEXTS])
    calls = bedrock.requests[before:]
    assert len(calls) == 3 and all(c.path == "/model/amazon.titan-embed-text-v2%3A0/invoke" for c in calls)
    assert sorted(c.body["inputText"] for c in calls) == sorted(TEXTS) and all(c.body["dimensions"] == 256 for c in calls)
    assert all(c.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/") for c in calls)
    assert tokens == sum(mbi.words(t) for t in TEXTS) and metered_tokens(openmeter, request_id) == {"input": tokens}


def test_bedrock_cohere_in_one_call(gateway: GatewayProcess, bedrock: MockBedrock, openmeter: OpenMeterServer) -> None:
    vectors, tokens, request_id = embed(gateway, "cohere")
    assert close(vectors, [mbi.embedding_of(t, 1024) for t in TEXTS])
    sent = bedrock.requests[-1]
    assert sent.path == "/model/cohere.embed-english-v3/invoke" and sent.body == {"texts": TEXTS, "input_type": "search_document"}
    # Counted from Bedrock's x-amzn-bedrock-input-token-count header.
    assert tokens == sum(mbi.words(t) for t in TEXTS) and metered_tokens(openmeter, request_id) == {"input": tokens}


def test_what_a_platform_cannot_embed_is_a_clear_400(gateway: GatewayProcess) -> None:
    r = post(gateway, "/v1/embeddings", {"model": "claude", "input": "x"})
    assert r.status_code == 400 and "amazon.titan-embed-* or cohere.embed-*" in r.json()["error"]["message"]
    r = post(gateway, "/v1/embeddings", {"model": "titan", "input": [[1, 2, 3]]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input" and "token arrays" in r.json()["error"]["message"]

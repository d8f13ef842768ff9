"""Cloud credentials over time: a refresh that fails (STS, the OAuth token endpoint) is visible
in ``/health`` (degraded, the provider's source failing with the endpoint's reason, no secret)
and counted by ``llm_gateway_credential_refresh_failures_total{provider}``, while the current
credentials serve on until they expire, so no request fails; when the endpoint comes back the
next refresh clears it. Vertex AI's token from the GKE metadata server (``GCE_METADATA_HOST``)."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

import mock_bedrock as mb
from cloud_env import client, metered_gateway
from e2e_support import GatewayProcess
from metering_env import metric
from mock_bedrock import MockBedrock
from mock_gemini import MockGemini
from mock_google_oauth import MockOAuth
from openmeter_server import OpenMeterServer

REGION = "ap-southeast-2"
LIFETIME = 16  # seconds: refreshed after half of it, expired after all of it (served on until 5 s before)
MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


def health(gateway: GatewayProcess) -> dict:
    return httpx.get(gateway.url + "/health", timeout=10).json()


def failures(gateway: GatewayProcess, provider: str) -> float:
    return metric(gateway, f'llm_gateway_credential_refresh_failures_total{{provider="{provider}"}}')


def ask(gateway: GatewayProcess, model: str) -> str:
    reply = client(gateway).chat.completions.create(model=model, messages=[{"role": "user", "content": "tick"}], max_tokens=16)
    return reply.choices[0].message.content


def outage_then_recovery(gateway: GatewayProcess, provider: str, model: str, endpoint, source: str, secret: str) -> str:
    """Runs the outage and the recovery; the degraded /health body, as text."""
    assert ask(gateway, model) == "Echo: tick"
    body = health(gateway)
    assert body["status"] == "ok" and body["credentials"] == [
        {**body["credentials"][0], "provider": provider, "source": source, "status": "ok", "refresh_failures": 0}]
    assert failures(gateway, provider) == 0
    endpoint.outage = True
    time.sleep(LIFETIME / 2 + 0.5)
    # Past the refresh point, before expiry: the refresh fails, the current credentials serve.
    assert ask(gateway, model) == "Echo: tick"
    body = health(gateway)
    report = body["credentials"][0]
    assert body["status"] == "degraded" and report["status"] == "failing" and "HTTP 503" in report["reason"]
    assert report["refresh_failures"] >= 1 and failures(gateway, provider) >= 1
    endpoint.outage = False
    assert ask(gateway, model) == "Echo: tick"
    body = health(gateway)
    assert body["status"] == "ok" and body["credentials"][0]["status"] == "ok" and "reason" not in body["credentials"][0]
    assert failures(gateway, provider) >= 1
    assert secret not in str(report)
    return str(report)


def test_an_sts_outage_is_degraded_health_and_counted_without_a_failed_request(openmeter: OpenMeterServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    bedrock = MockBedrock({}, REGION, "unused").start()
    work: Path = tmp_path_factory.mktemp("sts-outage")
    web_token = "eyJ.e2e-projected-sa-token." + secrets.token_hex(8)
    (work / "token").write_text(web_token)
    role = "arn:aws:iam::111122223333:role/llm-gateway"
    sts = mb.MockSTS(bedrock, role, web_token, LIFETIME)
    providers = {"bedrock": {"dialect": "bedrock", "region": REGION, "base_url": bedrock.base_url}}
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_BEARER_TOKEN_BEDROCK": "", "AWS_ROLE_ARN": role,
           "AWS_WEB_IDENTITY_TOKEN_FILE": str(work / "token"), "AWS_ENDPOINT_URL_STS": sts.url}
    proc = metered_gateway(work, openmeter, providers, {"claude": [{"provider": "bedrock", "model": MODEL}]}, env)
    try:
        report = outage_then_recovery(proc, "bedrock", "claude", sts, "web identity", web_token)
        assert "ServiceUnavailable" in report and not any(secret in report for secret in bedrock.secrets.values())
    finally:
        proc.stop()
        sts.stop()
        bedrock.stop()


def test_an_oauth_outage_is_degraded_health_and_counted_without_a_failed_request(openmeter: OpenMeterServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    oauth = MockOAuth("gateway@e2e-project.iam.gserviceaccount.com", lifetime=LIFETIME).start()
    vertex = MockGemini(api_key="unused", token_ok=oauth.valid).start()
    work: Path = tmp_path_factory.mktemp("oauth-outage")
    account = oauth.service_account_json()
    (work / "sa.json").write_text(account)
    providers = {"vertex": {"dialect": "vertex", "project": "e2e-project", "location": "us-central1", "base_url": vertex.base_url}}
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(work / "sa.json")}
    proc = metered_gateway(work, openmeter, providers, {"gemini": [{"provider": "vertex", "model": "gemini-echo"}]}, env)
    try:
        report = outage_then_recovery(proc, "vertex", "gemini", oauth, "service account", "PRIVATE KEY")
        assert "temporarily_unavailable" in report
    finally:
        proc.stop()
        vertex.stop()
        oauth.stop()


def test_vertex_takes_its_token_from_the_gke_metadata_server(openmeter: OpenMeterServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    metadata = MockOAuth("gke-node@e2e-project.iam.gserviceaccount.com").start()
    vertex = MockGemini(api_key="unused", token_ok=metadata.valid).start()
    host = metadata.token_uri.removeprefix("http://").removesuffix("/token")
    providers = {"vertex": {"dialect": "vertex", "project": "e2e-project", "location": "us-central1", "base_url": vertex.base_url}}
    env = {"GOOGLE_APPLICATION_CREDENTIALS": "", "GCE_METADATA_HOST": host}
    proc = metered_gateway(tmp_path_factory.mktemp("gke"), openmeter, providers, {"gemini": [{"provider": "vertex", "model": "gemini-echo"}]}, env)
    try:
        assert ask(proc, "gemini") == "Echo: tick" and ask(proc, "gemini") == "Echo: tick"
        assert health(proc)["credentials"][0]["source"] == "metadata server"
    finally:
        proc.stop()
        vertex.stop()
        metadata.stop()
    # One token, fetched once with the header the metadata server requires, used by both requests.
    assert len(metadata.metadata_calls) == 1
    call = metadata.metadata_calls[0]
    assert call["metadata-flavor"] == "Google" and "x-forwarded-for" not in call
    assert call["path"] == "/computeMetadata/v1/instance/service-accounts/default/token?scopes=https://www.googleapis.com/auth/cloud-platform"
    assert vertex.requests[-1].headers["authorization"].startswith("Bearer ya29.gke-")

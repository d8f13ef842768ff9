"""Fixtures for the end-to-end suite.

One mock OpenAI upstream, one mock Anthropic upstream and one gateway process are started per
session. The gateway binary defaults to ``target/debug/llm-gateway`` in this repo; set
``LLM_GATEWAY_BIN`` to test another build. Run: ``pytest -q tests/e2e``.
"""

from __future__ import annotations

import uuid
from typing import Iterator

import httpx
import openai
import pytest

from e2e_env import PROVIDER_KEY, PROVIDER_KEY_ENV, TEAM_B_KEY, Gateway, gateway_config
from e2e_support import GatewayProcess
from mock_anthropic import MockAnthropic
from mock_openai import MockOpenAI, closed_port


@pytest.fixture(scope="session")
def upstream() -> Iterator[MockOpenAI]:
    mock = MockOpenAI().start()
    try:
        yield mock
    finally:
        mock.stop()


@pytest.fixture(scope="session")
def anthropic_upstream() -> Iterator[MockAnthropic]:
    mock = MockAnthropic(api_key=PROVIDER_KEY).start()
    try:
        yield mock
    finally:
        mock.stop()


@pytest.fixture(scope="session")
def gateway(
    upstream: MockOpenAI, anthropic_upstream: MockAnthropic, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    cfg = gateway_config(
        upstream.base_url, f"http://127.0.0.1:{closed_port()}/v1", anthropic_base_url=anthropic_upstream.base_url
    )
    proc = GatewayProcess(cfg, tmp_path_factory.mktemp("gateway"), env={PROVIDER_KEY_ENV: PROVIDER_KEY})
    try:
        proc.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield Gateway(proc=proc, upstream=upstream)
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def client(gateway: Gateway) -> openai.OpenAI:
    return gateway.client()


@pytest.fixture(scope="session")
def client_b(gateway: Gateway) -> openai.OpenAI:
    return gateway.client(TEAM_B_KEY)


@pytest.fixture()
def http(gateway: Gateway) -> Iterator[httpx.Client]:
    with gateway.http() as c:
        yield c


@pytest.fixture()
def marker() -> str:
    """A unique token to put in a prompt so the upstream request can be found again."""
    return "mk" + uuid.uuid4().hex[:12]

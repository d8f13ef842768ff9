"""Fixtures for the end-to-end suite.

One mock OpenAI upstream, one mock Anthropic upstream and one gateway process are started per
session. The gateway binary defaults to ``target/debug/llm-gateway`` in this repo; set
``LLM_GATEWAY_BIN`` to test another build. Run: ``pytest -q tests/e2e``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import openai
import pytest

from e2e_env import PROVIDER_KEY, PROVIDER_KEY_ENV, TEAM_B_KEY, Gateway, gateway_config
from e2e_support import REPO_ROOT, GatewayProcess
from mock_anthropic import MockAnthropic
from mock_openai import MockOpenAI, closed_port
from metering_env import OpenMeterServer  # metering_env puts tests/ (openmeter_server) on the path

TIKTOKEN_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}


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


@pytest.fixture(scope="module")
def openmeter() -> Iterator[OpenMeterServer]:
    """An OpenMeter ingest server of the test module's own (its gateways meter into it)."""
    server = OpenMeterServer().start()
    yield server
    server.stop()


@pytest.fixture()
def marker() -> str:
    """A unique token to put in a prompt so the upstream request can be found again."""
    return "mk" + uuid.uuid4().hex[:12]


def _crate_assets() -> Path:
    """The assets directory of the tiktoken-rs crate the gateway is built with."""
    try:
        meta = subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--offline"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=120,
        )
        for pkg in json.loads(meta.stdout)["packages"]:
            if pkg["name"] == "tiktoken-rs":
                return Path(pkg["manifest_path"]).parent / "assets"
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        pass
    home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    found = sorted(glob.glob(f"{home}/registry/src/*/tiktoken-rs-*/assets"))
    if not found:
        pytest.fail("tiktoken-rs sources not found (build the gateway first)")
    return Path(found[-1])


@pytest.fixture(scope="session")
def tiktoken_encodings(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """OpenAI's ``tiktoken`` encodings, from the rank files the gateway's ``tiktoken-rs`` embeds
    (tiktoken checks them against OpenAI's published hashes): the reference for local counts."""
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    assets = _crate_assets()
    for name, url in TIKTOKEN_URLS.items():
        (cache / hashlib.sha1(url.encode()).hexdigest()).write_bytes((assets / f"{name}.tiktoken").read_bytes())
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    import tiktoken

    return {name: tiktoken.get_encoding(name) for name in TIKTOKEN_URLS}

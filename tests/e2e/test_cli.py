"""The binary's command line and environment overlay."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import openai
import pytest
import yaml

from e2e_env import PROVIDER_KEY, PROVIDER_KEY_ENV, TEAM_A_KEY, gateway_config
from e2e_support import GatewayProcess, gateway_bin, gateway_env
from mock_openai import closed_port

BASE = gateway_config("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1")


def _check(tmp_path: Path, cfg: dict, env: dict | None = None, use_flag: bool = True) -> subprocess.CompletedProcess:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    args = [gateway_bin(), "--check-config"]
    e = {PROVIDER_KEY_ENV: PROVIDER_KEY, **(env or {})}
    if use_flag:
        args[1:1] = ["--config", str(path)]
    else:
        e["LLM_GATEWAY_CONFIG"] = str(path)
    return subprocess.run(args, env=gateway_env(e), capture_output=True, text=True, timeout=30, cwd=tmp_path)


def test_check_config_ok(tmp_path: Path) -> None:
    p = _check(tmp_path, BASE)
    assert p.returncode == 0, p.stderr
    assert "config OK" in p.stdout


def test_check_config_path_from_env(tmp_path: Path) -> None:
    p = _check(tmp_path, BASE, use_flag=False)
    assert p.returncode == 0, p.stderr
    assert "config OK" in p.stdout


def test_check_config_unknown_provider(tmp_path: Path) -> None:
    cfg = copy.deepcopy(BASE)
    cfg["models"]["echo-model"]["deployments"].append({"provider": "nope", "model": "m"})
    p = _check(tmp_path, cfg)
    assert p.returncode == 1
    assert 'models.echo-model.deployments[1].provider: unknown provider "nope"' in p.stderr, p.stderr


@pytest.mark.parametrize(
    "section,mutate,needles",
    [
        ("server", lambda c: c["server"].update(bogus_field=1), ("server", "bogus_field")),
        ("provider", lambda c: c["providers"]["upstream"].update(colour="red"), ("providers.upstream", "colour")),
        ("team", lambda c: c["teams"]["team-b"].update(modles=["x"]), ("teams.team-b", "modles")),
    ],
)
def test_check_config_unknown_field_rejected_with_path(tmp_path: Path, section: str, mutate, needles: tuple) -> None:
    cfg = copy.deepcopy(BASE)
    mutate(cfg)
    p = _check(tmp_path, cfg)
    assert p.returncode == 1, f"unknown field in {section} accepted: {p.stdout}"
    for n in needles:
        assert n in p.stderr, f"{n!r} not in error message: {p.stderr!r}"


def _keys_only_config() -> dict:
    return {
        "server": {"listen": "127.0.0.1:0"},
        "keys": [{"key": TEAM_A_KEY, "team": "team-a"}],
        "teams": {"team-a": {"models": ["*"]}},
    }


def test_llm_backend_mock_serves_any_model(tmp_path: Path) -> None:
    gw = GatewayProcess(_keys_only_config(), tmp_path, env={"LLM_BACKEND": "mock"})
    gw.start()
    try:
        c = openai.OpenAI(base_url=gw.base_url, api_key=TEAM_A_KEY, max_retries=0, timeout=15)
        resp = c.chat.completions.create(model="whatever-model-7", messages=[{"role": "user", "content": "ping"}])
        assert resp.model == "whatever-model-7"
        assert resp.choices[0].message.content == "Mock response to: ping"
    finally:
        gw.stop()


@pytest.mark.parametrize("var", ["LLM_GATEWAY_LISTEN", "PORT"])
def test_listen_overlay_env(tmp_path: Path, var: str) -> None:
    port = closed_port()
    value = f"127.0.0.1:{port}" if var == "LLM_GATEWAY_LISTEN" else str(port)
    gw = GatewayProcess(_keys_only_config(), tmp_path, env={"LLM_BACKEND": "mock", var: value})
    gw.start()
    try:
        assert gw.addr == f"127.0.0.1:{port}"
        assert openai.OpenAI(base_url=gw.base_url, api_key=TEAM_A_KEY, max_retries=0, timeout=15).models.list() is not None
    finally:
        gw.stop()

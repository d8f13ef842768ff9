"""GET /v1/models is filtered by the caller's team."""

from __future__ import annotations

import openai

from e2e_env import MODELS, TEAM_A_KEY, TEAM_B_KEY, TEAM_B_MODELS
from openai_schemas import assert_valid


def test_team_a_sees_every_configured_model(client: openai.OpenAI, http) -> None:
    ids = [mo.id for mo in client.models.list()]
    assert sorted(ids) == sorted(MODELS)
    r = http.get("/v1/models", headers={"Authorization": f"Bearer {TEAM_A_KEY}"})
    assert r.status_code == 200
    assert_valid("ListModelsResponse", r.json())


def test_team_b_sees_only_its_model(client_b: openai.OpenAI, http) -> None:
    ids = [mo.id for mo in client_b.models.list()]
    assert ids == TEAM_B_MODELS
    r = http.get("/v1/models", headers={"x-api-key": TEAM_B_KEY})
    assert r.status_code == 200
    body = r.json()
    assert_valid("ListModelsResponse", body)
    assert [d["id"] for d in body["data"]] == TEAM_B_MODELS

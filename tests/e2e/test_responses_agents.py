"""The OpenAI Agents SDK (PyPI `openai-agents`) through the gateway: an agent with one function
tool, on the Responses API (its default), served by a chat-only upstream
(tests/e2e/mock_openai.py's ``tools-once``: it calls the tools, then answers with their results).
"""

from __future__ import annotations

import asyncio
from typing import Iterator

import openai
import pytest
from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool

from e2e_env import TEAM_A_KEY, one_model_gateway
from e2e_support import GatewayProcess
from mock_anthropic import MockAnthropic
from mock_openai import MockOpenAI


@pytest.fixture(scope="module")
def gw(
    upstream: MockOpenAI, anthropic_upstream: MockAnthropic, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    with one_model_gateway(upstream, anthropic_upstream.base_url, "agent-model", "tools-once", tmp_path_factory.mktemp("agents")) as proc:
        yield proc


def test_an_agent_runs_its_function_tool_through_the_gateway(gw: GatewayProcess, upstream: MockOpenAI) -> None:
    ran: list[tuple[str, str]] = []

    @function_tool
    def get_weather(city: str, unit: str) -> str:
        """The weather in a city."""
        ran.append((city, unit))
        return f"sunny in {city}"

    @function_tool
    def get_time(tz: str) -> str:
        """The time in a time zone."""
        return f"14:05 {tz}"

    client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=TEAM_A_KEY, max_retries=0, timeout=30.0)
    agent = Agent(
        name="weather",
        instructions="Answer with the tools.",
        tools=[get_weather, get_time],
        model=OpenAIResponsesModel(model="agent-model", openai_client=client),
    )
    result = asyncio.run(
        Runner.run(agent, "Weather and time in Paris?", run_config=RunConfig(tracing_disabled=True))
    )
    assert ran == [("Paris", "c")], "the agent ran the tool the model called"
    assert result.final_output == "Tool results: sunny in Paris; 14:05 Europe/Paris"
    # The second turn reached the upstream as chat with the calls and their results paired.
    last = upstream.find(lambda r: r.model == "tools-once" and "sunny in Paris" in r.raw_body.decode())[-1].body
    assert [m["role"] for m in last["messages"]][-3:] == ["assistant", "tool", "tool"]
    assert last["messages"][0] == {"role": "system", "content": "Answer with the tools."}

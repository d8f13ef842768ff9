"""`previous_response_id` chains on deployments that serve `/responses` themselves.

Two native upstreams (a small mock in this file, which keeps its own responses as OpenAI does,
and refuses an id it did not make with OpenAI's 400 ``previous_response_not_found``) behind one
model group, tried in order (``strategy: priority``, A first). A chain continues on the
deployment that made its previous response; with that one stopped it fails over to the other
with the stored history replayed as ``input`` (and no ``previous_response_id``, which the other
would not know), and the mock checks that it got the whole conversation; while that deployment's
breaker is open it is not even tried, though it is up again. An id the gateway never
stored goes to the native deployments in turn until one knows it; a bridged one cannot take it.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import openai
import pytest

from e2e_env import PROVIDER_KEY, PROVIDER_KEY_ENV, TEAM_A_KEY, gateway_config
from e2e_support import GatewayProcess
from mock_openai import closed_port


def user_texts(items: list[dict]) -> list[str]:
    out = []
    for item in items:
        if item.get("role") != "user":
            continue
        content = item.get("content", "")
        out.append(content if isinstance(content, str) else "".join(p.get("text", "") for p in content))
    return out


def events(response: dict) -> list[dict]:
    """The stream of a one-message response, as OpenAI sends it."""
    message = response["output"][0]
    text, at = message["content"][0]["text"], {"item_id": message["id"], "output_index": 0}
    started = {**response, "status": "in_progress", "output": [], "usage": None}
    out = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {"type": "response.output_item.added", "output_index": 0, "item": {**message, "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", **at, "content_index": 0,
         "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}},
        {"type": "response.output_text.delta", **at, "content_index": 0, "delta": text, "logprobs": []},
        {"type": "response.output_text.done", **at, "content_index": 0, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **at, "content_index": 0, "part": message["content"][0]},
        {"type": "response.output_item.done", "output_index": 0, "item": message},
        {"type": "response.completed", "response": response},
    ]
    return [{**e, "sequence_number": i} for i, e in enumerate(out)]


class NativeResponses:
    """An upstream serving `POST /v1/responses` (streamed or not), answering "Heard: <every user
    turn of the conversation>": its own stored conversation under ``previous_response_id``,
    then ``input``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests: list[dict] = []
        self.conversations: dict[str, list[dict]] = {}
        # Requests still to refuse with a 500 (an upstream failure, which counts for the breaker).
        self.fail_next = 0
        mock = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                status, answer = mock.answer(self.path, self.headers.get("authorization"), body)
                if status == 200 and body.get("stream") is True:
                    data = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events(answer)).encode()
                    content_type = "text/event-stream"
                else:
                    data, content_type = json.dumps(answer).encode(), "application/json"
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str, authorization: str | None, body: dict) -> tuple[int, dict]:
        def error(status: int, message: str, param: str | None, code: str | None) -> tuple[int, dict]:
            return status, {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}

        if path != "/v1/responses" or authorization != f"Bearer {PROVIDER_KEY}":
            return error(401, "Incorrect API key or path.", None, "invalid_api_key")
        self.requests.append(body)
        if self.fail_next > 0:
            self.fail_next -= 1
            return 500, {"error": {"message": "The server had an error.", "type": "server_error", "param": None,
                                   "code": None}}
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.conversations:
            return error(400, f"Previous response with id '{previous}' not found.", "previous_response_id",
                         "previous_response_not_found")
        inp = body["input"]
        items = [{"role": "user", "content": inp}] if isinstance(inp, str) else list(inp)
        conversation = self.conversations.get(previous, []) + items
        rid = f"resp_{self.name}_{len(self.requests)}"
        text = "Heard: " + " | ".join(user_texts(conversation))
        message = {"type": "message", "id": f"msg_{rid}", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}
        self.conversations[rid] = conversation + [message]
        usage = {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5,
                 "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15}
        return 200, {"id": rid, "object": "response", "created_at": 1764140000, "status": "completed", "error": None,
                     "incomplete_details": None, "instructions": None, "model": body["model"], "output": [message],
                     "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "previous_response_id": previous,
                     "store": body.get("store", True), "metadata": {}, "temperature": 1.0, "top_p": 1.0,
                     "text": {"format": {"type": "text"}}, "truncation": "disabled", "usage": usage}


@pytest.fixture(scope="module")
def natives() -> Iterator[tuple[NativeResponses, NativeResponses]]:
    a, b = NativeResponses("a"), NativeResponses("b")
    yield a, b
    a.stop()


def chain_gateway(first: NativeResponses, second: NativeResponses, path, **extra: Any) -> GatewayProcess:
    """A started gateway with group ``chain`` (``first`` then ``second``, in that order), group
    ``chain-<second's name>`` (``second`` alone) and a bridged group; ``extra`` is added to the
    config."""
    refused = f"http://127.0.0.1:{closed_port()}/v1"
    cfg = gateway_config(refused, refused)
    for name, mock in (("native-1", first), ("native-2", second)):
        cfg["providers"][name] = {"dialect": "openai", "base_url": mock.base_url, "api_key_env": PROVIDER_KEY_ENV,
                                  "responses_api": True}
    cfg["models"] = {
        "chain": {"strategy": "priority", "deployments": [{"provider": "native-1", "model": "gpt-x"},
                                                          {"provider": "native-2", "model": "gpt-x"}]},
        f"chain-{second.name}": {"deployments": [{"provider": "native-2", "model": "gpt-x"}]},
        "bridged": {"deployments": [{"provider": "mock", "model": "mock-chat"}]},
    }
    cfg.update(extra)
    proc = GatewayProcess(cfg, path, env={PROVIDER_KEY_ENV: PROVIDER_KEY})
    proc.start()
    return proc


@pytest.fixture(scope="module")
def gw(natives: tuple[NativeResponses, NativeResponses], tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = chain_gateway(*natives, tmp_path_factory.mktemp("chains"))
    try:
        yield proc
    finally:
        proc.stop()


def test_an_id_the_gateway_did_not_store(gw, natives) -> None:
    a, b = natives
    sdk = openai.OpenAI(base_url=gw.base_url, api_key=TEAM_A_KEY, max_retries=0, timeout=30.0)
    # Not stored by the gateway (`store: false`), but the upstream keeps its own: passed through.
    unstored = sdk.responses.create(model="chain", input="secret", store=False)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(unstored.id)
    more = sdk.responses.create(model="chain", input="more", previous_response_id=unstored.id)
    assert more.output_text == "Heard: secret | more"
    assert a.requests[-1]["previous_response_id"] == unstored.id

    # Made on B without the gateway (only B knows it): A refuses it, so B is asked next.
    _, direct = b.answer("/v1/responses", f"Bearer {PROVIDER_KEY}", {"model": "gpt-x", "input": "direct"})
    asked_a = len(a.requests)
    more = sdk.responses.create(model="chain", input="more", previous_response_id=direct["id"])
    assert more.output_text == "Heard: direct | more"
    assert len(a.requests) == asked_a + 1 and b.requests[-1]["previous_response_id"] == direct["id"]

    # Unknown to every upstream: the last one's answer, in OpenAI's shape.
    with pytest.raises(openai.BadRequestError) as e:
        sdk.responses.create(model="chain", input="x", previous_response_id="resp_nowhere")
    assert (e.value.body["code"], e.value.body["param"]) == ("previous_response_not_found", "previous_response_id")

    # A bridged deployment has nothing to pass it to: the gateway's 400, the same shape.
    with pytest.raises(openai.BadRequestError) as e:
        sdk.responses.create(model="bridged", input="x", previous_response_id="resp_nowhere")
    assert e.value.body["code"] == "previous_response_not_found"
    assert e.value.body["message"] == "Previous response with id 'resp_nowhere' not found."


def test_a_chain_stays_on_its_deployment_then_fails_over_with_the_history(gw, natives) -> None:
    a, b = natives
    sdk = openai.OpenAI(base_url=gw.base_url, api_key=TEAM_A_KEY, max_retries=0, timeout=30.0)
    asked_a = len(a.requests)
    first = sdk.responses.create(model="chain-b", input="one")
    assert first.output_text == "Heard: one" and first.id.startswith("resp_b_")

    # The group tries A first, but the chain was made on B: it continues there, under its id.
    second = sdk.responses.create(model="chain", input="two", previous_response_id=first.id)
    assert second.output_text == "Heard: one | two"
    assert len(a.requests) == asked_a
    assert b.requests[-1] == {"model": "gpt-x", "input": "two", "previous_response_id": first.id}

    # B goes away: A gets the whole conversation, without the id it would not know.
    b.stop()
    with sdk.responses.stream(model="chain", input="three", previous_response_id=second.id) as stream:
        deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        third = stream.get_final_response()
    assert deltas == third.output_text
    assert third.output_text == "Heard: one | two | three"
    assert third.previous_response_id == second.id, "the client still sees the id it continued"
    sent = a.requests[-1]
    assert sent["stream"] is True and "previous_response_id" not in sent
    assert not any("id" in item for item in sent["input"]), "ids valid only where they were made are dropped"
    assert [(i.get("role"), i.get("type")) for i in sent["input"]] == [
        ("user", "message"), ("assistant", "message"), ("user", "message"), ("assistant", "message"), ("user", None)
    ]
    assert user_texts(sent["input"]) == ["one", "two", "three"]
    assert [i["content"][0]["text"] for i in sent["input"] if i.get("role") == "assistant"] == [
        "Heard: one", "Heard: one | two"
    ]

    # Now the chain is A's: the next turn goes there under the id again.
    fourth = sdk.responses.create(model="chain", input="four", previous_response_id=third.id)
    assert fourth.output_text == "Heard: one | two | three | four"
    assert a.requests[-1]["previous_response_id"] == third.id and a.requests[-1]["input"] == "four"


def test_a_chain_whose_deployment_has_its_breaker_open_goes_elsewhere_untried(tmp_path) -> None:
    """The deployment that made a chain's previous response is skipped, not tried, while its
    breaker is open: the chain continues on another deployment with the history replayed."""
    a, c = NativeResponses("a2"), NativeResponses("c")
    proc = chain_gateway(a, c, tmp_path, circuit_breaker={"consecutive_failures": 1, "open_for": "5m"})
    try:
        sdk = openai.OpenAI(base_url=proc.base_url, api_key=TEAM_A_KEY, max_retries=0, timeout=30.0)
        first = sdk.responses.create(model="chain-c", input="one")
        other = sdk.responses.create(model="chain-c", input="uno")
        assert first.id.startswith("resp_c_") and other.id.startswith("resp_c_")

        # C fails the first chain's turn: the breaker opens, and A takes the turn with the history.
        c.fail_next = 1
        second = sdk.responses.create(model="chain", input="two", previous_response_id=first.id)
        assert second.output_text == "Heard: one | two"
        assert c.requests[-1]["previous_response_id"] == first.id, "C was tried first, and failed"
        with proc.http() as http:
            states = {d["deployment"]: d for d in http.get("/health").json()["deployments"]}
        assert states["native-2/gpt-x"]["breaker"] == "open", states

        # The other chain was made on C, which is up again, but its breaker is open: C is not
        # asked at all, and A gets that chain's whole conversation.
        asked_c = len(c.requests)
        third = sdk.responses.create(model="chain", input="dos", previous_response_id=other.id)
        assert third.output_text == "Heard: uno | dos"
        assert len(c.requests) == asked_c, "a deployment whose breaker is open is not tried"
        assert user_texts(a.requests[-1]["input"]) == ["uno", "dos"]
        assert "previous_response_id" not in a.requests[-1]
    finally:
        proc.stop()
        a.stop()
        c.stop()

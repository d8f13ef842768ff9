"""Bedrock's InvokeModel side, for ``mock_bedrock``: Claude's Messages body
(``anthropic_version: bedrock-2023-05-31``, no ``model``, no ``stream``: Bedrock refuses both
with its real ``ValidationException`` text), answered as the Messages API answers, and streamed
as InvokeModelWithResponseStream does: ``chunk`` event-stream messages whose ``bytes`` are the
base64 JSON of each Messages event, the last one carrying ``amazon-bedrock-invocationMetrics``.
Also the embedding models: Titan (``{"inputText"}``, one text a call) and Cohere
(``{"texts", "input_type"}``).

Behaviour by model id, as for Converse: ``*tools*`` calls ``get_weather`` until the last turn
carries its ``tool_result``; otherwise ``Echo: <last user text>``. With ``thinking`` enabled a
thinking block comes first. Usage: input = words of every text, output = words of the answer,
cache read 2 and cache write 1 when a ``cache_control`` is present anywhere, else 0.
"""

from __future__ import annotations

import base64
import json
from typing import Any

VERSION = "bedrock-2023-05-31"
MESSAGES_FIELDS = {"anthropic_version", "anthropic_beta", "max_tokens", "messages", "system", "stop_sequences", "temperature",
                   "top_p", "top_k", "tools", "tool_choice", "thinking", "metadata", "output_config"}
THOUGHT = "I should answer plainly."


def words(text: str) -> int:
    return len(text.split())


def check_messages(body: Any) -> str | None:
    """Bedrock's ValidationException message for a body it refuses, else None."""
    if not isinstance(body, dict):
        return "Malformed input request, please reformat your input and try again."
    unknown = [k for k in body if k not in MESSAGES_FIELDS]
    if unknown:
        return f"Malformed input request: #: extraneous key [{unknown[0]}] is not permitted, please reformat your input and try again."
    if body.get("anthropic_version") != VERSION:
        return "Malformed input request: #/anthropic_version: expected value bedrock-2023-05-31"
    if not isinstance(body.get("max_tokens"), int):
        return "Malformed input request: #: required key [max_tokens] not found, please reformat your input and try again."
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or messages[0].get("role") != "user":
        return "messages: first message must use the \"user\" role"
    return None


def texts_of(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out = []
    for block in content or []:
        if block.get("type") == "text":
            out.append(block["text"])
        elif block.get("type") == "tool_use":
            out.append(json.dumps(block["input"]))
        elif block.get("type") == "tool_result":
            out += texts_of(block.get("content"))
    return out


def has_cache_control(body: dict) -> bool:
    return '"cache_control"' in json.dumps(body)


def answer(model: str, body: dict) -> tuple[list[dict], str]:
    last = body["messages"][-1]["content"]
    blocks = last if isinstance(last, list) else [{"type": "text", "text": last}]
    thinking = [{"type": "thinking", "thinking": THOUGHT, "signature": "e2e-sig"}] if (body.get("thinking") or {}).get("type") == "enabled" else []
    if "tools" in model:
        results = [b for b in blocks if b.get("type") == "tool_result"]
        if results:
            return thinking + [{"type": "text", "text": "The weather: " + " ".join(texts_of(results[0].get("content")))}], "end_turn"
        use = {"type": "tool_use", "id": "toolu_bdrk_e2e1", "name": "get_weather", "input": {"city": "Paris"}}
        return thinking + [use], "tool_use"
    return thinking + [{"type": "text", "text": "Echo: " + " ".join(t for b in blocks if b.get("type") == "text" for t in [b["text"]])}], "end_turn"


def usage(body: dict, content: list[dict]) -> dict:
    system = body.get("system")
    texts = texts_of(system) if system else []
    for m in body["messages"]:
        texts += texts_of(m["content"])
    cached = has_cache_control(body)
    out = sum(words(b.get("text") or b.get("thinking") or "") + (3 if b["type"] == "tool_use" else 0) for b in content)
    return {"input_tokens": words(" ".join(texts)), "output_tokens": out,
            "cache_read_input_tokens": 2 if cached else 0, "cache_creation_input_tokens": 1 if cached else 0}


def message(model: str, content: list[dict], stop: str, use: dict) -> dict:
    return {"id": "msg_bdrk_e2e", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop, "stop_sequence": None, "usage": use}


def stream_events(model: str, content: list[dict], stop: str, use: dict) -> list[dict]:
    start = message(model, [], None, {**use, "output_tokens": 1})
    out: list[dict] = [{"type": "message_start", "message": start}]
    for i, block in enumerate(content):
        if block["type"] == "text":
            out.append({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}})
            text = block["text"]
            out += [{"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": text[at : at + 6]}}
                    for at in range(0, len(text), 6)]
        elif block["type"] == "thinking":
            out.append({"type": "content_block_start", "index": i, "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
            out.append({"type": "content_block_delta", "index": i, "delta": {"type": "thinking_delta", "thinking": block["thinking"]}})
            out.append({"type": "content_block_delta", "index": i, "delta": {"type": "signature_delta", "signature": block["signature"]}})
        else:
            out.append({"type": "content_block_start", "index": i, "content_block": {**block, "input": {}}})
            args = json.dumps(block["input"])
            out += [{"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": args[at : at + 5]}}
                    for at in range(0, len(args), 5)]
        out.append({"type": "content_block_stop", "index": i})
    out.append({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": use["output_tokens"]}})
    metrics = {"inputTokenCount": use["input_tokens"], "outputTokenCount": use["output_tokens"], "invocationLatency": 20, "firstByteLatency": 8}
    out.append({"type": "message_stop", "amazon-bedrock-invocationMetrics": metrics})
    return out


def chunk(event: dict) -> dict:
    return {"bytes": base64.b64encode(json.dumps(event).encode()).decode()}


def embedding_of(text: str, dims: int) -> list[float]:
    """A deterministic vector: the same text always embeds the same."""
    seed = sum(text.encode()) % 97
    return [((seed + i) % 13) / 13.0 for i in range(dims)]


def embed(model: str, body: Any) -> tuple[int, dict]:
    """(status, answer) for an embedding model's InvokeModel body."""
    if "titan-embed" in model:
        if not isinstance(body, dict) or not isinstance(body.get("inputText"), str) or set(body) - {"inputText", "dimensions", "normalize", "embeddingTypes"}:
            return 400, {"message": "Malformed input request: #: required key [inputText] not found, please reformat your input and try again."}
        dims = body.get("dimensions", 1024)
        return 200, {"embedding": embedding_of(body["inputText"], dims), "inputTextTokenCount": words(body["inputText"])}
    if not isinstance(body, dict) or not isinstance(body.get("texts"), list) or body.get("input_type") not in ("search_document", "search_query", "classification", "clustering"):
        return 400, {"message": "Malformed input request: #: required key [input_type] not found, please reformat your input and try again."}
    return 200, {"id": "emb-e2e", "texts": body["texts"], "embeddings": [embedding_of(t, 1024) for t in body["texts"]],
                 "response_type": "embeddings_floats"}

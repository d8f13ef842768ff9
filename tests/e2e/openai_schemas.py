"""Hand-written JSON Schemas (Draft 2020-12) for the OpenAI wire objects the gateway returns.

Written from the facts (required fields, types, enums, nullability) of OpenAI's
published OpenAPI description. Extra properties are allowed everywhere, as in
the OpenAPI document. One deliberate addition: ``CreateCompletionStreamResponse``
(the legacy completions stream chunk) is the ``CreateCompletionResponse`` shape
with a nullable ``finish_reason`` and ``usage``, because that is what the API
streams until the last chunk.

Use ``assert_valid("CreateChatCompletionResponse", obj)``.
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator


def _nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


def _ref(name: str) -> dict:
    return {"$ref": f"#/$defs/{name}"}


def _const_str(value: str) -> dict:
    return {"type": "string", "enum": [value]}


_INT = {"type": "integer"}
_NONNEG_INT = {"type": "integer", "minimum": 0}
_STR = {"type": "string"}

_CHAT_FINISH = ["stop", "length", "tool_calls", "content_filter", "function_call"]
_COMPLETION_FINISH = ["stop", "length", "content_filter"]

DEFS: dict[str, dict] = {
    # ------------------------------------------------------------------ usage
    "CompletionUsage": {
        "type": "object",
        "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "properties": {
            "prompt_tokens": _NONNEG_INT,
            "completion_tokens": _NONNEG_INT,
            "total_tokens": _NONNEG_INT,
            "prompt_tokens_details": {
                "type": "object",
                "additionalProperties": _INT,
            },
            "completion_tokens_details": {
                "type": "object",
                "additionalProperties": _INT,
            },
        },
    },
    # ------------------------------------------------------------------ errors
    "Error": {
        "type": "object",
        "required": ["message", "type", "param", "code"],
        "properties": {
            "message": _STR,
            "type": _STR,
            "param": _nullable(_STR),
            "code": _nullable(_STR),
        },
    },
    "ErrorResponse": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": _ref("Error")},
    },
    # ------------------------------------------------------------------ logprobs
    "TopLogprob": {
        "type": "object",
        "required": ["token", "logprob", "bytes"],
        "properties": {
            "token": _STR,
            "logprob": {"type": "number"},
            "bytes": _nullable({"type": "array", "items": _INT}),
        },
    },
    "ChatCompletionTokenLogprob": {
        "type": "object",
        "required": ["token", "logprob", "bytes", "top_logprobs"],
        "properties": {
            "token": _STR,
            "logprob": {"type": "number"},
            "bytes": _nullable({"type": "array", "items": _INT}),
            "top_logprobs": {"type": "array", "items": _ref("TopLogprob")},
        },
    },
    "ChatChoiceLogprobs": _nullable(
        {
            "type": "object",
            "required": ["content", "refusal"],
            "properties": {
                "content": _nullable({"type": "array", "items": _ref("ChatCompletionTokenLogprob")}),
                "refusal": _nullable({"type": "array", "items": _ref("ChatCompletionTokenLogprob")}),
            },
        }
    ),
    # ------------------------------------------------------------------ tool calls
    "ChatCompletionMessageToolCall": {
        "type": "object",
        "required": ["id", "type", "function"],
        "properties": {
            "id": _STR,
            "type": _const_str("function"),
            "function": {
                "type": "object",
                "required": ["name", "arguments"],
                "properties": {"name": _STR, "arguments": _STR},
            },
        },
    },
    "ChatCompletionMessageCustomToolCall": {
        "type": "object",
        "required": ["id", "type", "custom"],
        "properties": {
            "id": _STR,
            "type": _const_str("custom"),
            "custom": {
                "type": "object",
                "required": ["name", "input"],
                "properties": {"name": _STR, "input": _STR},
            },
        },
    },
    "ChatCompletionMessageToolCallChunk": {
        "type": "object",
        "required": ["index"],
        "properties": {
            "index": _NONNEG_INT,
            "id": _STR,
            "type": _const_str("function"),
            "function": {
                "type": "object",
                "properties": {"name": _STR, "arguments": _STR},
            },
        },
    },
    # ------------------------------------------------------------------ chat
    "ChatCompletionResponseMessage": {
        "type": "object",
        "required": ["role", "content", "refusal"],
        "properties": {
            "role": _const_str("assistant"),
            "content": _nullable(_STR),
            "refusal": _nullable(_STR),
            "tool_calls": {
                "type": "array",
                "items": {
                    "oneOf": [
                        _ref("ChatCompletionMessageToolCall"),
                        _ref("ChatCompletionMessageCustomToolCall"),
                    ]
                },
            },
            "annotations": {"type": "array", "items": {"type": "object"}},
            "function_call": {
                "type": "object",
                "required": ["name", "arguments"],
                "properties": {"name": _STR, "arguments": _STR},
            },
            "audio": _nullable({"type": "object", "required": ["id", "expires_at", "data", "transcript"]}),
        },
    },
    "CreateChatCompletionResponse": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": _STR,
            "object": _const_str("chat.completion"),
            "created": _INT,
            "model": _STR,
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "message", "finish_reason", "logprobs"],
                    "properties": {
                        "index": _NONNEG_INT,
                        "message": _ref("ChatCompletionResponseMessage"),
                        "finish_reason": {"type": "string", "enum": _CHAT_FINISH},
                        "logprobs": _ref("ChatChoiceLogprobs"),
                    },
                },
            },
            "usage": _ref("CompletionUsage"),
            "system_fingerprint": _STR,
            "service_tier": _nullable(_STR),
        },
    },
    "ChatCompletionStreamResponseDelta": {
        "type": "object",
        "properties": {
            "role": {"type": "string", "enum": ["developer", "system", "user", "assistant", "tool"]},
            "content": _nullable(_STR),
            "refusal": _nullable(_STR),
            "tool_calls": {"type": "array", "items": _ref("ChatCompletionMessageToolCallChunk")},
            "function_call": {
                "type": "object",
                "properties": {"name": _STR, "arguments": _STR},
            },
        },
    },
    "CreateChatCompletionStreamResponse": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": _STR,
            "object": _const_str("chat.completion.chunk"),
            "created": _INT,
            "model": _STR,
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "delta", "finish_reason"],
                    "properties": {
                        "index": _NONNEG_INT,
                        "delta": _ref("ChatCompletionStreamResponseDelta"),
                        "finish_reason": _nullable({"type": "string", "enum": _CHAT_FINISH}),
                        "logprobs": _ref("ChatChoiceLogprobs"),
                    },
                },
            },
            "usage": _nullable(_ref("CompletionUsage")),
            "system_fingerprint": _STR,
            "service_tier": _nullable(_STR),
        },
    },
    # ------------------------------------------------------------------ legacy completions
    "CompletionLogprobs": _nullable(
        {
            "type": "object",
            "properties": {
                "text_offset": {"type": "array", "items": _INT},
                "token_logprobs": {"type": "array", "items": {"type": "number"}},
                "tokens": {"type": "array", "items": _STR},
                "top_logprobs": {
                    "type": "array",
                    "items": {"type": "object", "additionalProperties": {"type": "number"}},
                },
            },
        }
    ),
    "CreateCompletionResponse": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": _STR,
            "object": _const_str("text_completion"),
            "created": _INT,
            "model": _STR,
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["text", "index", "logprobs", "finish_reason"],
                    "properties": {
                        "text": _STR,
                        "index": _NONNEG_INT,
                        "logprobs": _ref("CompletionLogprobs"),
                        "finish_reason": {"type": "string", "enum": _COMPLETION_FINISH},
                    },
                },
            },
            "usage": _ref("CompletionUsage"),
            "system_fingerprint": _STR,
        },
    },
    "CreateCompletionStreamResponse": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": _STR,
            "object": _const_str("text_completion"),
            "created": _INT,
            "model": _STR,
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["text", "index", "logprobs", "finish_reason"],
                    "properties": {
                        "text": _STR,
                        "index": _NONNEG_INT,
                        "logprobs": _ref("CompletionLogprobs"),
                        "finish_reason": _nullable({"type": "string", "enum": _COMPLETION_FINISH}),
                    },
                },
            },
            "usage": _nullable(_ref("CompletionUsage")),
            "system_fingerprint": _STR,
        },
    },
    # ------------------------------------------------------------------ embeddings
    "Embedding": {
        "type": "object",
        "required": ["index", "object", "embedding"],
        "properties": {
            "index": _NONNEG_INT,
            "object": _const_str("embedding"),
            "embedding": {"type": "array", "items": {"type": "number"}},
        },
    },
    "CreateEmbeddingResponse": {
        "type": "object",
        "required": ["object", "model", "data", "usage"],
        "properties": {
            "object": _const_str("list"),
            "model": _STR,
            "data": {"type": "array", "items": _ref("Embedding")},
            "usage": {
                "type": "object",
                "required": ["prompt_tokens", "total_tokens"],
                "properties": {"prompt_tokens": _NONNEG_INT, "total_tokens": _NONNEG_INT},
            },
        },
    },
    # ------------------------------------------------------------------ models
    "Model": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": _STR,
            "object": _const_str("model"),
            "created": _INT,
            "owned_by": _STR,
        },
    },
    "ListModelsResponse": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": _const_str("list"),
            "data": {"type": "array", "items": _ref("Model")},
        },
    },
}

SCHEMA_NAMES = tuple(DEFS)

_VALIDATORS: dict[str, Draft202012Validator] = {}


def validator(name: str) -> Draft202012Validator:
    if name not in DEFS:
        raise KeyError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    v = _VALIDATORS.get(name)
    if v is None:
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$defs": DEFS, "$ref": f"#/$defs/{name}"}
        Draft202012Validator.check_schema(schema)
        v = _VALIDATORS[name] = Draft202012Validator(schema)
    return v


def errors(name: str, obj: Any) -> list[str]:
    out = []
    for e in sorted(validator(name).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        where = "/".join(map(str, e.absolute_path)) or "<root>"
        out.append(f"at {where}: {e.message}")
    return out


def is_valid(name: str, obj: Any) -> bool:
    return not errors(name, obj)


def assert_valid(name: str, obj: Any) -> None:
    errs = errors(name, obj)
    if errs:
        shown = json.dumps(obj, ensure_ascii=False)
        if len(shown) > 2000:
            shown = shown[:2000] + "..."
        raise AssertionError(f"{name} schema violation(s):\n  " + "\n  ".join(errs[:10]) + f"\nobject: {shown}")

"""A mock of Amazon Bedrock's Converse API (``/model/{modelId}/converse`` and
``/converse-stream``), and of InvokeModel (``/invoke``, ``/invoke-with-response-stream``: Claude's
Messages body and the embedding models, ``mock_bedrock_invoke``) that checks what Bedrock checks: the SigV4 signature, recomputed
independently by botocore's signer from the secret it knows for the access key id (a wrong one
gets Bedrock's real ``InvalidSignatureException`` 403, an unknown key id
``UnrecognizedClientException``), or a Bedrock API key as a bearer token; and the body's shape
(a ``ValidationException`` otherwise). Streams are written in the real
``application/vnd.amazon.eventstream`` framing, each message with its two CRC-32s.

Behaviour by model id: ``*echo*`` answers ``Echo: <last user text>``; ``*tools*`` calls
``get_weather`` until the last turn carries its ``toolResult``; ``*throttle*`` answers 429
``ThrottlingException``; ``*corrupt*`` streams a message whose CRC is wrong. Usage: input =
words of every text, output = words of the answer, cache read 2, cache write 1.
"""

from __future__ import annotations

import json
import re
import struct
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote, urlsplit

import mock_bedrock_invoke as invoke
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from loopback import LoopbackServer, QuietHandler

PATH = re.compile(r"^/model/(?P<model>[^/]+)/(?P<op>converse|converse-stream|invoke|invoke-with-response-stream)$")
AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, "
    r"SignedHeaders=(?P<signed>[^,]+), Signature=(?P<signature>[0-9a-f]{64})$"
)
BODY_FIELDS = {"messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig", "additionalModelRequestFields",
               "promptVariables", "additionalModelResponseFieldPaths", "requestMetadata", "performanceConfig"}
BLOCKS = {"text", "image", "document", "video", "toolUse", "toolResult", "guardContent", "cachePoint", "reasoningContent"}
BAD_SIGNATURE = ("The request signature we calculated does not match the signature you provided. Check your AWS Secret "
                 "Access Key and signing method. Consult the service documentation for details.")
CACHE_READ, CACHE_WRITE = 2, 1


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any


def words(text: str) -> int:
    return len(text.split())


def header(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    return bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v


def frame(event_type: str, payload: dict, corrupt: bool = False, kind: str = "event") -> bytes:
    """One event-stream message: prelude (lengths, CRC), headers, payload, message CRC."""
    name = ":exception-type" if kind == "exception" else ":event-type"
    headers = header(name, event_type) + header(":content-type", "application/json") + header(":message-type", kind)
    body = json.dumps({**payload, "p": "abcdefgh"}).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + headers + body
    crc = zlib.crc32(message) ^ (0xFFFF if corrupt else 0)
    return message + struct.pack(">I", crc)


def check_body(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "Malformed input request, please reformat your input and try again."
    unknown = [k for k in body if k not in BODY_FIELDS]
    if unknown:
        return f"Malformed input request: extraneous key [{unknown[0]}] is not permitted, please reformat your input and try again."
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or messages[0].get("role") != "user":
        return "A conversation must start with a user message. Try again with a conversation that starts with a user message."
    for i, message in enumerate(messages):
        if message.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: must be user or assistant"
        if i and messages[i - 1]["role"] == message["role"]:
            return "A conversation must alternate between user and assistant roles."
        for block in message.get("content") or [None]:
            if not isinstance(block, dict) or len([k for k in block if k in BLOCKS]) != 1:
                return f"messages.{i}.content: each content block must hold exactly one member"
    has_tools = "toolConfig" in body
    if any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"]) and not has_tools:
        return "The toolConfig field must be defined when using toolUse and toolResult content blocks."
    return None


def all_text(body: dict) -> str:
    texts = [s["text"] for s in body.get("system", []) if "text" in s]
    for m in body["messages"]:
        for b in m["content"]:
            if "text" in b:
                texts.append(b["text"])
            if "toolUse" in b:
                texts.append(json.dumps(b["toolUse"]["input"]))
            if "toolResult" in b:
                texts += [c.get("text") or json.dumps(c.get("json")) for c in b["toolResult"]["content"]]
    return " ".join(texts)


def answer(model: str, body: dict) -> tuple[list[dict], str]:
    last = body["messages"][-1]["content"]
    if "tools" in model:
        results = [b["toolResult"] for b in last if "toolResult" in b]
        if results:
            content = results[0]["content"][0]
            return [{"text": f"The weather: {content.get('text') or json.dumps(content.get('json'))}"}], "end_turn"
        return [{"toolUse": {"toolUseId": "tooluse_e2e1", "name": "get_weather", "input": {"city": "Paris"}}}], "tool_use"
    return [{"text": "Echo: " + " ".join(b["text"] for b in last if "text" in b)}], "end_turn"


def usage(body: dict, content: list[dict]) -> dict:
    out = sum(words(b.get("text", "")) for b in content) + sum(3 for b in content if "toolUse" in b)
    inp = words(all_text(body))
    return {"inputTokens": inp, "outputTokens": out, "totalTokens": inp + out + CACHE_READ + CACHE_WRITE,
            "cacheReadInputTokens": CACHE_READ, "cacheWriteInputTokens": CACHE_WRITE}


def expected_usage(body: dict, content: list[dict]) -> dict:
    u = usage(body, content)
    prompt = u["inputTokens"] + CACHE_READ + CACHE_WRITE
    return {"prompt_tokens": prompt, "completion_tokens": u["outputTokens"], "total_tokens": prompt + u["outputTokens"],
            "prompt_tokens_details": {"cached_tokens": CACHE_READ}}


def events(content: list[dict], stop: str, meta: dict, corrupt: bool) -> list[bytes]:
    out = [frame("messageStart", {"role": "assistant"})]
    for i, block in enumerate(content):
        if "text" in block:
            text = block["text"]
            for at in range(0, len(text), 6):
                out.append(frame("contentBlockDelta", {"contentBlockIndex": i, "delta": {"text": text[at : at + 6]}}, corrupt and at == 6))
        else:
            use = block["toolUse"]
            out.append(frame("contentBlockStart", {"contentBlockIndex": i, "start": {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}}))
            args = json.dumps(use["input"])
            for at in range(0, len(args), 5):
                out.append(frame("contentBlockDelta", {"contentBlockIndex": i, "delta": {"toolUse": {"input": args[at : at + 5]}}}))
        out.append(frame("contentBlockStop", {"contentBlockIndex": i}))
    out.append(frame("messageStop", {"stopReason": stop}))
    out.append(frame("metadata", {"usage": meta, "metrics": {"latencyMs": 12}}))
    return out


class MockSTS(LoopbackServer):
    """STS ``AssumeRoleWithWebIdentity``: checks the role and the web identity token (the file's
    content), and issues temporary credentials that ``bedrock`` accepts for ``lifetime`` seconds."""

    def __init__(self, bedrock: "MockBedrock", role_arn: str, web_token: str, lifetime: int) -> None:
        self.bedrock, self.role_arn, self.web_token, self.lifetime = bedrock, role_arn, web_token, lifetime
        self.calls: list[dict] = []
        self.outage = False  # STS answers 503 ServiceUnavailable while set
        super().__init__(self._handler())
        self.start()

    @property
    def url(self) -> str:
        return self.base_url

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sts = self

        class Handler(QuietHandler):

            def do_POST(self) -> None:  # noqa: N802
                from urllib.parse import parse_qs
                import datetime
                import secrets

                form = {k: v[0] for k, v in parse_qs(self.rfile.read(int(self.headers.get("content-length", "0"))).decode()).items()}
                sts.calls.append(form)
                if sts.outage:
                    return self.send(503, "<ErrorResponse><Error><Type>Receiver</Type><Code>ServiceUnavailable</Code><Message>Service is unavailable. Try again later.</Message></Error></ErrorResponse>")
                if form.get("Action") != "AssumeRoleWithWebIdentity" or form.get("Version") != "2011-06-15" or form.get("RoleArn") != sts.role_arn:
                    return self.send(400, "<ErrorResponse><Error><Code>ValidationError</Code><Message>bad request</Message></Error></ErrorResponse>")
                if form.get("WebIdentityToken") != sts.web_token or not form.get("RoleSessionName"):
                    return self.send(400, "<ErrorResponse><Error><Code>InvalidIdentityToken</Code><Message>Couldn't retrieve verification key from your identity provider</Message></Error></ErrorResponse>")
                akid, secret, token = "ASIA" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30), secrets.token_urlsafe(40)
                sts.bedrock.secrets[akid] = secret
                sts.bedrock.temporary[akid] = (token, time.monotonic() + sts.lifetime)
                expires = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=sts.lifetime)).strftime("%Y-%m-%dT%H:%M:%SZ")
                self.send(200, f"""<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials><AccessKeyId>{akid}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey>
      <SessionToken>{token}</SessionToken><Expiration>{expires}</Expiration></Credentials>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>""")

            def send(self, status: int, text: str) -> None:
                self.reply(status, text.encode(), "text/xml")

        return Handler


class MockBedrock(LoopbackServer):
    def __init__(self, secrets: dict[str, str], region: str, api_key: str) -> None:
        self.secrets, self.region, self.api_key = secrets, region, api_key
        # Temporary credentials (STS): access key id -> (session token, expiry, monotonic).
        self.temporary: dict[str, tuple[str, float]] = {}
        super().__init__(self._handler())

    def refusal(self, raw_path: str, headers: dict, body: bytes) -> tuple[str, str] | None:
        """(error type, message) when the credentials do not hold, else None."""
        auth = headers.get("authorization", "")
        if auth.startswith("Bearer "):
            return None if auth[7:] == self.api_key else ("UnrecognizedClientException", "Invalid API Key format: Must start with pre-defined prefix")
        m = AUTH.match(auth)
        if not m:
            return "MissingAuthenticationTokenException", "Missing Authentication Token"
        secret = self.secrets.get(m["akid"])
        if secret is None:
            return "UnrecognizedClientException", "The security token included in the request is invalid."
        if m["akid"] in self.temporary:
            token, expiry = self.temporary[m["akid"]]
            if headers.get("x-amz-security-token") != token:
                return "UnrecognizedClientException", "The security token included in the request is invalid."
            if time.monotonic() > expiry:
                return "ExpiredTokenException", "The security token included in the request is expired"
        if m["service"] != "bedrock" or m["region"] != self.region or not headers.get("x-amz-date", "").startswith(m["date"]):
            return "InvalidSignatureException", "Credential should be scoped to a valid region and service."
        signed = m["signed"].split(";")
        request = AWSRequest(method="POST", url=f"http://{headers['host']}{raw_path}", data=body,
                             headers={h: headers[h] for h in signed if h != "host"})
        request.context["timestamp"] = headers["x-amz-date"]
        signer = SigV4Auth(Credentials(m["akid"], secret, headers.get("x-amz-security-token")), "bedrock", self.region)
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        return None if expected == m["signature"] else ("InvalidSignatureException", BAD_SIGNATURE)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        mock = self

        class Handler(QuietHandler):

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                path = urlsplit(self.path).path
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with mock.lock:
                    mock.requests.append(Recorded(path, headers, body))
                match = PATH.match(path)
                if not match:
                    return self.error(404, "UnknownOperationException", "Unknown operation")
                refused = mock.refusal(path, headers, raw)
                if refused:
                    return self.error(403, *refused)
                model = unquote(match["model"])
                if match["op"].startswith("invoke"):
                    return self.invoke(model, match["op"], body)
                problem = check_body(body)
                if problem:
                    return self.error(400, "ValidationException", problem)
                if "throttle" in model:
                    return self.error(429, "ThrottlingException", "Too many requests, please wait before trying again.")
                content, stop = answer(model, body)
                meta = usage(body, content)
                if match["op"] == "converse":
                    return self.json(200, {"output": {"message": {"role": "assistant", "content": content}}, "stopReason": stop,
                                           "usage": meta, "metrics": {"latencyMs": 12}})
                self.event_stream(events(content, stop, meta, "corrupt" in model))

            def invoke(self, model: str, op: str, body: Any) -> None:
                if "embed" in model:
                    status, answer = invoke.embed(model, body)
                    if status != 200:
                        return self.error(status, "ValidationException", answer["message"])
                    count = sum(invoke.words(t) for t in body.get("texts") or [body.get("inputText", "")])
                    return self.json(200, answer, {"x-amzn-bedrock-input-token-count": str(count)})
                problem = invoke.check_messages(body)
                if problem:
                    return self.error(400, "ValidationException", problem)
                if "throttle" in model:
                    return self.error(429, "ThrottlingException", "Too many requests, please wait before trying again.")
                content, stop = invoke.answer(model, body)
                use = invoke.usage(body, content)
                if op == "invoke":
                    return self.json(200, invoke.message(model, content, stop, use))
                frames = [frame("chunk", invoke.chunk(e), "corrupt" in model and i == 3)
                          for i, e in enumerate(invoke.stream_events(model, content, stop, use))]
                if "midstream" in model:
                    frames = frames[:3] + [frame("throttlingException", {"message": "Too many tokens, please wait before trying again."}, kind="exception")]
                self.event_stream(frames)

            def event_stream(self, messages: list[bytes]) -> None:
                self.send_response(200)
                self.send_header("content-type", "application/vnd.amazon.eventstream")
                self.send_header("x-amzn-requestid", "e2e-request")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for message in messages:
                    # Split each message across writes: the gateway must reassemble it.
                    for piece in (message[:7], message[7:]):
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                        self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

            def error(self, status: int, kind: str, message: str) -> None:
                data = json.dumps({"message": message}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("x-amzn-errortype", f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def json(self, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
                self.reply(status, json.dumps(obj).encode(), "application/json", extra)

        return Handler

#!/usr/bin/env python3
"""A stand-in for a streaming-JSON model CLI (the Claude Code CLI's `-p --input-format stream-json
--output-format stream-json`), for the gateway's cli backend tests. Python 3 stdlib only.

It answers every prompt with "You said: <the prompt, verbatim>", streamed in chunks, and ends each
answer with a `result` line carrying usage. Prompts are never interpreted: the echo proves that
shell metacharacters arrive as plain text.

Switches (the failure ones fire for "triggered" prompts: those containing --trigger TEXT, or, by
default, every prompt except the keep-alive/warm-up prompt --ping-text):
  --slow-start SECS        sleep before reading any input (a cold start)
  --crash-after-chunks N   exit(3) after N text chunks of a triggered answer
  --hang                   never answer a triggered prompt
  --garbage                print a non-JSON line in the middle of a triggered answer
  --error-result           answer a triggered prompt with an error result (is_error: true)
  --idle-exit SECS         exit when no input arrives for SECS
  --no-usage               leave usage out of result lines
  --chatter                right behind each result line (same write), print a stray assistant
                           message "STALE": it must not become part of the next answer
  --chunk-delay SECS       pause between chunks
  --include-partial-messages  token deltas as stream_event lines (as the real flag does)
  --protocol plain-text    read the whole prompt until end of input, print the answer, exit
  --recall TEXT            remember every prompt (in memory, and as a file prompt-*.txt in the working
                           directory); a prompt containing TEXT is answered with
                           "Recall: {"prompts": [...], "files": {...}, "env": [...], "cwd": ...}": every
                           prompt this process saw before, the prompt files in its working directory
                           and the names of its environment variables (what one caller could learn
                           about another through a shared session)
The real CLI's other flags (-p, --input-format X, --output-format X, --verbose) are accepted.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time
import uuid


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(add_help=True)
    p.add_argument("-p", "--print", action="store_true")
    p.add_argument("--input-format", default="stream-json")
    p.add_argument("--output-format", default="stream-json")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--include-partial-messages", action="store_true")
    p.add_argument("--protocol", choices=["stream-json", "plain-text"], default="stream-json")
    p.add_argument("--slow-start", type=float, default=0.0)
    p.add_argument("--crash-after-chunks", type=int, default=None)
    p.add_argument("--hang", action="store_true")
    p.add_argument("--garbage", action="store_true")
    p.add_argument("--error-result", action="store_true")
    p.add_argument("--idle-exit", type=float, default=None)
    p.add_argument("--no-usage", action="store_true")
    p.add_argument("--chatter", action="store_true")
    p.add_argument("--chunk-delay", type=float, default=0.0)
    p.add_argument("--trigger", default=None)
    p.add_argument("--ping-text", default="ping")
    p.add_argument("--recall", default=None)
    return p.parse_args()


ARGS = parse_args()
SESSION_ID = str(uuid.uuid4())
HISTORY: list[str] = []


def prompt_files() -> dict[str, str]:
    """The prompt files in the working directory (the tree the real CLI's tools may read), by name."""
    found = {}
    for name in sorted(os.listdir(".")):
        if name.startswith("prompt-") and os.path.isfile(name):
            with open(name, encoding="utf-8") as f:
                found[name] = f.read()
    return found


def recall(prompt: str) -> str | None:
    """With --recall: the answer to a recall prompt, else None (and the prompt is remembered)."""
    if ARGS.recall is None or prompt == ARGS.ping_text:
        return None
    if ARGS.recall in prompt:
        seen = {"prompts": HISTORY, "files": prompt_files(), "env": sorted(os.environ), "cwd": os.getcwd()}
        return "Recall: " + json.dumps(seen, sort_keys=True)
    HISTORY.append(prompt)
    with open(f"prompt-{os.getpid()}-{len(HISTORY)}.txt", "w", encoding="utf-8") as f:
        f.write(prompt)
    return None


def log(message: str) -> None:
    sys.stderr.write(f"fake-cli[{os.getpid()}]: {message}\n")
    sys.stderr.flush()


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def triggered(prompt: str) -> bool:
    if ARGS.trigger is not None:
        return ARGS.trigger in prompt
    return prompt != ARGS.ping_text


def chunks_of(text: str) -> list[str]:
    """Word-sized pieces that concatenate back to the text."""
    out, current = [], ""
    for ch in text:
        current += ch
        if ch == " ":
            out.append(current)
            current = ""
    if current:
        out.append(current)
    return out


def crash(after: int) -> None:
    log(f"crashing on purpose after {after} chunks")
    sys.stdout.flush()
    os._exit(3)


def hang() -> None:
    log("hanging on purpose")
    while True:
        time.sleep(3600)


def answer_stream_json(prompt: str, first: bool) -> None:
    if first:
        emit({"type": "system", "subtype": "init", "cwd": os.getcwd(), "session_id": SESSION_ID,
              "tools": [], "mcp_servers": [], "model": "fake-model", "permissionMode": "default",
              "apiKeySource": "none"})
    fire = triggered(prompt)
    if fire and ARGS.hang:
        hang()
    text = "OK" if prompt == ARGS.ping_text else recall(prompt) or f"You said: {prompt}"
    if fire and ARGS.error_result:
        emit({"type": "result", "subtype": "success", "is_error": True, "result": "Invalid API key · Please run /login",
              "session_id": SESSION_ID, "num_turns": 1, "duration_ms": 1})
        return
    pieces = chunks_of(text)
    msg_id = "msg_" + uuid.uuid4().hex[:12]
    if ARGS.include_partial_messages:
        emit({"type": "stream_event", "event": {"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": "fake-model", "content": []}},
            "session_id": SESSION_ID})
        emit({"type": "stream_event", "event": {"type": "content_block_start", "index": 0,
              "content_block": {"type": "text", "text": ""}}, "session_id": SESSION_ID})
    for i, piece in enumerate(pieces):
        if fire and ARGS.crash_after_chunks is not None and i == ARGS.crash_after_chunks:
            crash(i)
        if fire and ARGS.garbage and i == 1:
            sys.stdout.write("Traceback (most recent call last): this is not JSON {{{\n")
            sys.stdout.flush()
        if ARGS.include_partial_messages:
            emit({"type": "stream_event", "event": {"type": "content_block_delta", "index": 0,
                  "delta": {"type": "text_delta", "text": piece}}, "session_id": SESSION_ID})
        if ARGS.chunk_delay:
            time.sleep(ARGS.chunk_delay)
    if fire and ARGS.crash_after_chunks is not None and ARGS.crash_after_chunks >= len(pieces):
        crash(len(pieces))
    if ARGS.include_partial_messages:
        emit({"type": "stream_event", "event": {"type": "content_block_stop", "index": 0}, "session_id": SESSION_ID})
    emit({"type": "assistant", "message": {"id": msg_id, "type": "message", "role": "assistant",
          "model": "fake-model", "content": [{"type": "text", "text": text}]}, "session_id": SESSION_ID})
    result = {"type": "result", "subtype": "success", "is_error": False, "result": text,
              "session_id": SESSION_ID, "num_turns": 1, "duration_ms": 1, "total_cost_usd": 0}
    if not ARGS.no_usage:
        # Deterministic and unlike the gateway's local estimate, so tests can tell them apart.
        result["usage"] = {"input_tokens": len(prompt), "output_tokens": len(pieces),
                           "cache_read_input_tokens": 5, "cache_creation_input_tokens": 2}
    if ARGS.chatter:
        stray = {"type": "assistant", "message": {"role": "assistant", "content": [{"type": "text", "text": "STALE"}]}}
        sys.stdout.write(json.dumps(result) + "\n" + json.dumps(stray) + "\n")
        sys.stdout.flush()
        return
    emit(result)


class Lines:
    """Reads lines from fd 0 with an optional idle limit (no stdio buffering, so select works)."""

    def __init__(self) -> None:
        self.buffer = b""

    def next(self) -> bytes | None:
        while b"\n" not in self.buffer:
            if ARGS.idle_exit is not None:
                ready, _, _ = select.select([0], [], [], ARGS.idle_exit)
                if not ready:
                    log(f"no input for {ARGS.idle_exit}s: exiting")
                    sys.exit(0)
            data = os.read(0, 65536)
            if not data:
                return None
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line


def serve_stream_json() -> None:
    lines = Lines()
    first = True
    while True:
        raw = lines.next()
        if raw is None:
            return  # end of input: exit quietly, as the real CLI does
        if not raw.strip():
            continue
        message = json.loads(raw)
        assert message["type"] == "user", message
        content = message["message"]["content"]
        prompt = content if isinstance(content, str) else "".join(b.get("text", "") for b in content)
        answer_stream_json(prompt, first)
        first = False


def serve_plain_text() -> None:
    data = b""
    while True:
        if ARGS.idle_exit is not None:
            ready, _, _ = select.select([0], [], [], ARGS.idle_exit)
            if not ready:
                log("no input: exiting")
                sys.exit(0)
        part = os.read(0, 65536)
        if not part:
            break
        data += part
    prompt = data.decode("utf-8")
    fire = triggered(prompt)
    if fire and ARGS.hang:
        hang()
    for i, piece in enumerate(chunks_of(f"You said: {prompt}")):
        if fire and ARGS.crash_after_chunks is not None and i == ARGS.crash_after_chunks:
            crash(i)
        sys.stdout.write(piece)
        sys.stdout.flush()
        if ARGS.chunk_delay:
            time.sleep(ARGS.chunk_delay)


def main() -> None:
    if ARGS.slow_start:
        time.sleep(ARGS.slow_start)
    log("ready")
    if ARGS.protocol == "plain-text":
        serve_plain_text()
    else:
        serve_stream_json()


if __name__ == "__main__":
    main()

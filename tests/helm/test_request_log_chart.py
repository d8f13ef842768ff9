"""The chart's request log: off by default; on, the gateway gets the PostgreSQL URL from an
existing Secret or from the CloudNativePG cluster's generated app Secret, and the rendered
``Cluster`` fits the CRD's shape (CRD kinds are not in the Kubernetes schemas: checked here)."""

from __future__ import annotations

import jsonschema
import pytest

from test_chart import NAMESPACE, RELEASE, env_of, gateway_config, gateway_container, kinds, one, render, run_helm, CHART, KUBE_VERSION

# The fields of postgresql.cnpg.io/v1 Cluster the chart renders, with the CRD's types and
# bounds (spec.instances minimum 1; storage.size a quantity string; initdb names strings).
CLUSTER_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "postgresql.cnpg.io/v1"},
        "kind": {"const": "Cluster"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 50}},
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["instances", "storage"],
            "properties": {
                "instances": {"type": "integer", "minimum": 1},
                "imageName": {"type": "string"},
                "bootstrap": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "initdb": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"database": {"type": "string"}, "owner": {"type": "string"}},
                        }
                    },
                },
                "storage": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["size"],
                    "properties": {
                        "size": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"},
                        "storageClass": {"type": "string"},
                    },
                },
            },
        },
    },
}

CNPG = ("requestLog.postgres.enabled=true", "requestLog.postgres.cnpg.enabled=true")


def test_default_render_has_no_request_log():
    docs = render()
    assert "Cluster" not in kinds(docs)
    assert "request_log" not in gateway_config(docs)
    assert "REQUEST_LOG_DATABASE_URL" not in env_of(gateway_container(docs))


def test_cnpg_cluster_fits_the_crd_and_its_app_secret_feeds_the_gateway():
    docs = render(sets=CNPG + ("requestLog.postgres.cnpg.instances=3", "requestLog.postgres.cnpg.storage.storageClass=fast"))
    cluster = one(docs, "Cluster")
    jsonschema.validate(cluster, CLUSTER_SCHEMA)
    assert cluster["metadata"]["namespace"] == NAMESPACE
    assert cluster["spec"]["instances"] == 3 and cluster["spec"]["storage"]["storageClass"] == "fast"
    ref = env_of(gateway_container(docs))["REQUEST_LOG_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": cluster["metadata"]["name"] + "-app", "key": "uri"}, "CNPG's generated app Secret"
    rl = gateway_config(docs)["request_log"]["postgres"]
    assert rl["url_env"] == "REQUEST_LOG_DATABASE_URL" and rl["schema"] == "llm_gateway" and rl["retention_days"] == 30
    assert env_of(gateway_container(docs))["LLM_GATEWAY_REQUEST_LOG_DIR"]["value"].endswith("/request-log")


def test_an_existing_secret_instead_of_cnpg():
    docs = render(sets=("requestLog.postgres.enabled=true", "requestLog.postgres.existingSecret.name=pg-url",
                        "requestLog.postgres.existingSecret.key=url", "requestLog.postgres.capture=full",
                        "requestLog.postgres.redact[0]=sk-[A-Za-z0-9]+"))
    assert "Cluster" not in kinds(docs)
    ref = env_of(gateway_container(docs))["REQUEST_LOG_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "pg-url", "key": "url"}
    rl = gateway_config(docs)["request_log"]["postgres"]
    assert rl["capture"] == "full" and rl["redact"] == ["sk-[A-Za-z0-9]+"]


@pytest.mark.parametrize(
    "sets,message",
    [
        (("requestLog.postgres.enabled=true",), "existingSecret.name is required"),
        (("requestLog.postgres.enabled=true", "requestLog.postgres.existingSecret.name=s", "requestLog.postgres.capture=all"), "capture"),
        (CNPG + ("requestLog.postgres.cnpg.instances=0",), "instances"),
    ],
)
def test_bad_request_log_values_are_refused(sets, message):
    args = ["template", RELEASE, str(CHART), "-n", NAMESPACE, "--kube-version", KUBE_VERSION]
    for s in sets:
        args += ["--set", s]
    proc = run_helm(*args)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr

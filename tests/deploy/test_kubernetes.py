"""deploy/: every manifest valid against the Kubernetes schemas (kubernetes-validate, strict),
and wired together: probes, security, resources, the headless Service, autoscaling, the
disruption budget, Prometheus, and the secrets the server's flags point at."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from bertserve.client.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "deploy").rglob("*.yaml"))


def documents() -> dict[str, dict]:
    found = {}
    for path in FILES:
        for document in yaml.safe_load_all(path.read_text()):
            found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_manifests_are_valid_kubernetes(path):
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)


def test_the_manifests_fit_together():
    found = documents()
    deployment = found["Deployment/bertserve"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    labels = pod["metadata"]["labels"]

    # the server's flags parse with today's CLI, and the paths they name are mounted secrets
    args = build_parser().parse_args(["serve", *container["args"]])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    secrets = {
        v["name"]: v["secret"]["secretName"] for v in pod["spec"]["volumes"] if "secret" in v
    }
    for path in (args.tls_cert, args.tls_key, args.auth_token_file):
        assert mounts[str(Path(path).parent)] in secrets, path
    assert {"bertserve-tls", "bertserve-auth"} == set(secrets.values())
    assert found["Secret/bertserve-tls"]["type"] == "kubernetes.io/tls"

    # gRPC health probes on the serving port; drains within the pod's grace period
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(args.port) == ports["grpc"] and int(args.metrics_port) == ports["metrics"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"], probe
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(args.grace_period)

    # non-root, least privilege, bounded resources
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001  # the image's user
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}

    # Prometheus scrapes the metrics port
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]

    # a headless Service over the pods, for the client's dns:/// round-robin
    service = found["Service/bertserve"]["spec"]
    assert service["clusterIP"] == "None" and service["selector"] == labels
    assert {p["port"] for p in service["ports"]} == set(ports.values())

    # autoscaling and the disruption budget point at the same pods
    hpa = found["HorizontalPodAutoscaler/bertserve"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "bertserve",
    }
    assert hpa["minReplicas"] >= 2
    pdb = found["PodDisruptionBudget/bertserve"]["spec"]
    assert pdb["selector"]["matchLabels"] == labels and pdb["minAvailable"] >= 1

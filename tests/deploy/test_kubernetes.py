"""deploy/: every manifest valid against the Kubernetes schemas (kubernetes-validate, strict),
and wired together: probes, security, resources, the headless Service, autoscaling, the
disruption budget, Prometheus, and the secrets the server's flags point at.

deploy/kserve/ holds KServe custom resources, which kubernetes-validate does not know: their
fields are checked against the KServe API types (kserve/kserve pkg/apis/serving: v1alpha1
ServingRuntimeSpec and SupportedModelFormat, v1beta1 PredictorSpec, ModelSpec,
PredictorExtensionSpec and ComponentExtensionSpec), and every container in them against the
Kubernetes Container schema."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from bertserve.client.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "deploy").rglob("*.yaml"))
KSERVE = sorted((ROOT / "deploy" / "kserve").glob("*.yaml"))
RAY = sorted((ROOT / "deploy" / "ray").glob("*.yaml"))  # KubeRay: tests/dataset
CORE = [path for path in FILES if path not in KSERVE + RAY]


def documents() -> dict[str, dict]:
    found = {}
    for path in FILES:
        for document in yaml.safe_load_all(path.read_text()):
            found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


@pytest.mark.parametrize("path", CORE, ids=[str(p.relative_to(ROOT)) for p in CORE])
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


# The fields of the KServe API types the manifests may use (kserve/kserve, pkg/apis/serving).
SERVING_RUNTIME_SPEC = {
    "supportedModelFormats", "multiModel", "disabled", "protocolVersions", "workerSpec",
    "containers", "volumes", "nodeSelector", "affinity", "tolerations", "labels", "annotations",
    "imagePullSecrets", "hostIPC", "grpcEndpoint", "grpcDataEndpoint", "httpDataEndpoint",
    "replicas", "storageHelper", "builtInAdapter",
}  # fmt: skip
SUPPORTED_MODEL_FORMAT = {"name", "version", "autoSelect", "priority"}
PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}
COMPONENT_EXTENSION = {
    "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "containerConcurrency",
    "timeout", "canaryTrafficPercent", "logger", "batcher", "labels", "annotations",
    "deploymentStrategy",
}  # fmt: skip
MODEL_SPEC = {
    "modelFormat",
    "runtime",
    "storageUri",
    "runtimeVersion",
    "protocolVersion",
    "storage",
}


def valid_container(container: dict) -> None:
    """A KServe container is a Kubernetes Container: validate it inside a Pod."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "check"},
        "spec": {"containers": [container]},
    }
    kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)


def test_kserve_manifests_fit_kserve_and_the_server():
    assert [p.name for p in KSERVE] == ["inferenceservice.yaml", "servingruntime.yaml"]
    found = documents()
    runtime = found["ServingRuntime/bertserve"]
    service = found["InferenceService/bertserve-minilm"]
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    for document in (runtime, service):
        assert set(document) == {"apiVersion", "kind", "metadata", "spec"}

    spec = runtime["spec"]
    assert set(spec) <= SERVING_RUNTIME_SPEC, set(spec) - SERVING_RUNTIME_SPEC
    for model_format in spec["supportedModelFormats"]:
        assert set(model_format) <= SUPPORTED_MODEL_FORMAT and model_format["name"]
    assert spec["protocolVersions"] == ["grpc-v2"]
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"  # the name KServe looks for
    valid_container(container)

    # the server's flags parse; it listens where the h2c port, the probes and Prometheus say
    args = build_parser().parse_args(["serve", *container["args"]])
    (port,) = container["ports"]
    assert port["name"] == "h2c" and port["containerPort"] == int(args.port)
    assert args.host == "0.0.0.0"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == int(args.port)
    assert int(spec["annotations"]["prometheus.kserve.io/port"]) == int(args.metrics_port)
    assert container["securityContext"]["runAsUser"] == 10001  # the image's user

    predictor = service["spec"]["predictor"]
    assert set(service["spec"]) == {"predictor"}
    assert set(predictor) <= COMPONENT_EXTENSION | {"model"}
    model = predictor["model"]
    assert set(model) <= MODEL_SPEC
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"] in [
        {k: v for k, v in f.items() if k in ("name", "version")}
        for f in spec["supportedModelFormats"]
    ]
    assert (
        model["protocolVersion"] in PROTOCOLS
        and model["protocolVersion"] in spec["protocolVersions"]
    )
    assert predictor["minReplicas"] <= predictor["maxReplicas"]
    mode = service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
    assert mode == "RawDeployment"

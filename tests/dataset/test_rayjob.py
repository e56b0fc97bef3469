"""deploy/ray/rayjob.yaml, a KubeRay RayJob. kubernetes-validate has no schema for KubeRay's custom
resources, so its fields are checked against the KubeRay v1 API types (ray-project/kuberay,
ray-operator/apis/ray/v1: RayJobSpec in rayjob_types.go; RayClusterSpec, HeadGroupSpec and
WorkerGroupSpec in raycluster_types.go), every pod template against the Kubernetes Pod schema,
and its command against today's CLI."""

from __future__ import annotations

import shlex
from pathlib import Path

import kubernetes_validate
import yaml
from bertserve.client.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
RAYJOB = ROOT / "deploy" / "ray" / "rayjob.yaml"

RAYJOB_SPEC = {
    "activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate",
    "metadata", "clusterSelector", "submitterConfig", "managedBy", "deletionPolicy",
    "entrypoint", "runtimeEnvYAML", "jobId", "submissionMode", "entrypointResources",
    "entrypointNumCpus", "entrypointNumGpus", "ttlSecondsAfterFinished",
    "shutdownAfterJobFinishes", "suspend",
}  # fmt: skip
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode"}
RAY_CLUSTER_SPEC = {
    "suspend", "managedBy", "autoscalerOptions", "headServiceAnnotations",
    "enableInTreeAutoscaling", "gcsFaultToleranceOptions", "headGroupSpec", "rayVersion",
    "workerGroupSpecs",
}  # fmt: skip
HEAD_GROUP_SPEC = {"template", "headService", "enableIngress", "rayStartParams", "serviceType"}
WORKER_GROUP_SPEC = {
    "suspend", "groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds",
    "rayStartParams", "template", "scaleStrategy", "numOfHosts",
}  # fmt: skip


def valid_pod_template(template: dict) -> None:
    """A PodTemplateSpec is valid when the Pod it makes is."""
    assert set(template) <= {"metadata", "spec"}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, **template}
    pod["metadata"] = {**template.get("metadata", {}), "name": "check"}
    kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)


def cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_the_rayjob_fits_kuberay_kubernetes_and_the_cli():
    (job,) = list(yaml.safe_load_all(RAYJOB.read_text()))
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert set(job) == {"apiVersion", "kind", "metadata", "spec"}
    spec = job["spec"]
    assert set(spec) <= RAYJOB_SPEC, set(spec) - RAYJOB_SPEC
    assert spec["submissionMode"] in SUBMISSION_MODES
    for field in ("activeDeadlineSeconds", "backoffLimit", "ttlSecondsAfterFinished"):
        assert isinstance(spec[field], int) and spec[field] >= 0, field
    assert spec["shutdownAfterJobFinishes"] is True

    cluster = spec["rayClusterSpec"]
    assert set(cluster) <= RAY_CLUSTER_SPEC, set(cluster) - RAY_CLUSTER_SPEC
    # a released Ray that the [ray] extra allows (ray[data,default]>=2.9)
    version = tuple(int(part) for part in cluster["rayVersion"].split("."))
    assert len(version) == 3 and version >= (2, 9, 0)
    head = cluster["headGroupSpec"]
    assert set(head) <= HEAD_GROUP_SPEC and {"template", "rayStartParams"} <= set(head)
    groups = cluster["workerGroupSpecs"]
    for group in groups:
        assert set(group) <= WORKER_GROUP_SPEC, set(group) - WORKER_GROUP_SPEC
        assert {"groupName", "template", "minReplicas", "maxReplicas"} <= set(group)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    templates = [head["template"]] + [group["template"] for group in groups]
    for params in [head["rayStartParams"]] + [g["rayStartParams"] for g in groups]:
        assert all(isinstance(v, str) for v in params.values())  # map[string]string
    for template in templates:
        valid_pod_template(template)

    # the entrypoint parses with today's CLI: a Ray job on the cluster it runs in
    words = shlex.split(spec["entrypoint"])
    assert words[0] == "bertserve"
    args = build_parser().parse_args(words[1:])
    assert args.command == "embed-dataset" and args.engine == "ray"
    assert args.ray_address == "auto"
    # the actors fit the workers' CPUs exactly: threads per actor = the actor's CPUs
    worker_cpus = sum(
        group["replicas"]
        * cpus(group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
        for group in groups
    )
    assert args.actors * args.threads == worker_cpus
    assert head["rayStartParams"]["num-cpus"] == "0"  # the head only drives

    # input, output and models are where every pod sees them, from one image
    images = {c["image"] for t in templates for c in t["spec"]["containers"]}
    assert len(images) == 1
    for template in templates:
        (container,) = template["spec"]["containers"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"] for v in template["spec"]["volumes"]
        }
        for path in (args.input, args.output):
            mount = next(m for m in mounts if str(path).startswith(m + "/"))
            assert claims[mounts[mount]] == "bertserve-datasets"
        assert template["spec"]["securityContext"]["runAsUser"] == 10001  # the image's user
    assert str(args.repo) == "/models"  # baked into the image (Dockerfile)

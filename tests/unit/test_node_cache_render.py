"""spec.artifactsCache in the rendered worker pods: the claim mounted in the init container only, and only the pod's
namespace's subdirectory of it; the pull told where the cache is and its limit; pods stay within the restricted
profile (a PVC, not a hostPath)."""

import re

from bernini.render.capacity import plan
from bernini.render.pods import CACHE_MOUNT_PATH
from bernini.render.prewarm import prewarm_daemonset
from bernini.render.rayservice import render_rayservice
from tests.unit.specs import make_manifest, make_spec

CACHE = {"claimName": "bernini-cache", "sizeLimit": "120Gi"}


def _worker_pod(spec, namespace: str = "models") -> dict:
    rendered = render_rayservice("bernini", namespace, "uid", spec, make_manifest(), "ab" * 32, plan(spec))
    return rendered["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]


def _prewarm_pod(spec, namespace: str) -> dict:
    return prewarm_daemonset("bernini", namespace, "uid", spec, make_manifest(), "ab" * 32)["spec"]["template"]["spec"]


def _cache_subdirectory(container: dict, namespace: str) -> str | None:
    """The directory of the claim the kubelet mounts for the container in a pod of namespace, as the kubelet expands
    a subPathExpr: each $(VAR) from the container's own env, here a downward-API field of the pod (None: the whole
    claim)."""
    mount, = (m for m in container["volumeMounts"] if m["name"] == "artifacts-cache")
    fields = {"metadata.namespace": namespace}
    env = {e["name"]: e.get("value") or fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
           for e in container.get("env", [])}
    expression = mount.get("subPathExpr", mount.get("subPath"))
    return re.sub(r"\$\((\w+)\)", lambda variable: env[variable.group(1)], expression) if expression else None


def test_the_cache_claim_reaches_the_puller_and_nothing_else():
    pod = _worker_pod(make_spec(artifactsCache=CACHE))
    assert {"name": "artifacts-cache", "persistentVolumeClaim": {"claimName": "bernini-cache"}} in pod["volumes"]
    puller, = pod["initContainers"]
    mount, = (m for m in puller["volumeMounts"] if m["name"] == "artifacts-cache")
    assert mount["mountPath"] == CACHE_MOUNT_PATH and "readOnly" not in mount
    assert puller["command"][-4:] == ["--cache-dir", CACHE_MOUNT_PATH, "--cache-limit-gib", "120"]
    assert all(m["name"] != "artifacts-cache" for c in pod["containers"] for m in c["volumeMounts"])
    assert not any("hostPath" in volume for volume in pod["volumes"])


def test_each_namespace_mounts_only_its_own_subdirectory_of_the_cache():
    """The puller runs the tenant's image with the cache writable: two namespaces whose claims reach one host
    directory get disjoint subdirectories of it, the workers' and the pre-warm pods' alike."""
    spec = make_spec(artifactsCache={**CACHE, "prewarm": True})
    for namespace in ("team-a", "team-b"):
        for pod in (_worker_pod(spec, namespace), _prewarm_pod(spec, namespace)):
            puller, = pod["initContainers"]
            assert _cache_subdirectory(puller, namespace) == namespace


def test_without_a_cache_each_pod_pulls_alone():
    pod = _worker_pod(make_spec())
    assert all(volume["name"] != "artifacts-cache" for volume in pod["volumes"])
    assert "--cache-dir" not in pod["initContainers"][0]["command"]
    assert "env" not in pod["initContainers"][0]

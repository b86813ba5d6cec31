"""spec.artifactsCache in the rendered worker pods: the claim mounted in the init container only, the pull told
where the cache is and its limit; pods stay within the restricted profile (a PVC, not a hostPath)."""

from bernini.render.capacity import plan
from bernini.render.pods import CACHE_MOUNT_PATH
from bernini.render.rayservice import render_rayservice
from tests.unit.specs import make_manifest, make_spec


def _worker_pod(spec) -> dict:
    rendered = render_rayservice("bernini", "models", "uid", spec, make_manifest(), "ab" * 32, plan(spec))
    return rendered["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]


def test_the_cache_claim_reaches_the_puller_and_nothing_else():
    pod = _worker_pod(make_spec(artifactsCache={"claimName": "bernini-cache", "sizeLimit": "120Gi"}))
    assert {"name": "artifacts-cache", "persistentVolumeClaim": {"claimName": "bernini-cache"}} in pod["volumes"]
    puller, = pod["initContainers"]
    assert {"name": "artifacts-cache", "mountPath": CACHE_MOUNT_PATH} in puller["volumeMounts"]
    assert puller["command"][-4:] == ["--cache-dir", CACHE_MOUNT_PATH, "--cache-limit-gib", "120"]
    assert all(m["name"] != "artifacts-cache" for c in pod["containers"] for m in c["volumeMounts"])
    assert not any("hostPath" in volume for volume in pod["volumes"])


def test_without_a_cache_each_pod_pulls_alone():
    pod = _worker_pod(make_spec())
    assert all(volume["name"] != "artifacts-cache" for volume in pod["volumes"])
    assert "--cache-dir" not in pod["initContainers"][0]["command"]

"""The pre-warm DaemonSet: the workers' own pull into the node cache on every node of the allowed types, asking
for no accelerator and no API token, in the restricted profile, owned by the BerniniDeployment."""

from bernini.render.capacity import plan
from bernini.render.prewarm import prewarm_daemonset
from bernini.render.rayservice import render_rayservice
from tests.unit.specs import make_manifest, make_spec

CACHE = {"claimName": "bernini-cache", "sizeLimit": "120Gi", "prewarm": True}


def _daemonset(spec) -> dict:
    return prewarm_daemonset("bernini", "models", "uid-1", spec, make_manifest(spec.model.version), "ab" * 32)


def test_it_pulls_what_the_workers_pull_into_the_same_cache():
    spec = make_spec(artifactsCache=CACHE, accelerator={"instanceTypes": ["inf2.xlarge", "inf2.24xlarge"]})
    worker = render_rayservice("bernini", "models", "uid-1", spec, make_manifest(), "ab" * 32, plan(spec))[
        "spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    pod = _daemonset(spec)["spec"]["template"]["spec"]
    puller, = pod["initContainers"]
    assert puller["command"] == worker["initContainers"][0]["command"]
    assert puller["volumeMounts"] == worker["initContainers"][0]["volumeMounts"]
    assert {"name": "artifacts-cache", "persistentVolumeClaim": {"claimName": "bernini-cache"}} in pod["volumes"]
    # Every node of the allowed types, the Neuron taint tolerated; the node's NeuronCores stay for the workers.
    term, = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [{"key": "node.kubernetes.io/instance-type", "operator": "In",
                                         "values": ["inf2.xlarge", "inf2.24xlarge"]}]
    assert pod["tolerations"] == worker["tolerations"]
    for container in pod["initContainers"] + pod["containers"]:
        assert set(container["resources"]["requests"]) == {"cpu", "memory"}
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and "schedulerName" not in pod


def test_its_pod_frees_its_own_copy_and_idles():
    pod = _daemonset(make_spec(artifactsCache=CACHE))["spec"]["template"]["spec"]
    idle, = pod["containers"]
    assert idle["command"][-1] == "find /mnt/bernini/artifacts -mindepth 1 -delete && exec sleep infinity"
    assert [m["name"] for m in idle["volumeMounts"]] == ["artifacts"]  # never the cache


def test_owned_named_and_labelled_by_version():
    daemonset = _daemonset(make_spec(artifactsCache=CACHE, model={"version": "1.1.0"}))
    metadata = daemonset["metadata"]
    assert (metadata["name"], metadata["namespace"]) == ("bernini-prewarm", "models")
    assert metadata["ownerReferences"][0]["uid"] == "uid-1" and metadata["ownerReferences"][0]["controller"]
    labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/version"] == "1.1.0" and labels["app.kubernetes.io/component"] == "prewarm"
    # The selector is immutable: it must not carry the version.
    assert "app.kubernetes.io/version" not in daemonset["spec"]["selector"]["matchLabels"]
    assert daemonset["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": "100%"}

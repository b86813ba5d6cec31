"""What the controller's caches keep of what anyone may write: only what could be its own, bounded in size."""

from bernini.reconcile.controller import MAX_CACHED_BYTES, Controller


def _rayservice(name: str, owner: str | None, config_bytes: int = 10, labels: int = 0) -> dict:
    metadata = {"name": name, "namespace": "t", "uid": "u",
                "labels": {"app.kubernetes.io/managed-by": "bernini-operator",
                           **{f"tenant/{i}": "x" * 60 for i in range(labels)}}}
    if owner:
        metadata["ownerReferences"] = [{"kind": "BerniniDeployment", "name": owner, "uid": "o", "controller": True}]
    return {"metadata": metadata, "spec": {"serveConfigV2": "x" * config_bytes}}


def test_only_a_rayservice_that_could_be_ours_is_cached_and_only_below_the_size_cap():
    controller = Controller(kube=None, manifests=None)
    controller.observe_rayservice("ADDED", _rayservice("bernini", "bernini"))
    controller.observe_rayservice("ADDED", _rayservice("stray", None))  # labelled like ours, owned by nobody
    controller.observe_rayservice("ADDED", _rayservice("other", "bernini"))  # owned, but not by its namesake
    controller.observe_rayservice("ADDED", _rayservice("big", "big", config_bytes=MAX_CACHED_BYTES))
    assert set(controller.rayservices) == {("t", "bernini")}
    controller.observe_rayservice("MODIFIED", _rayservice("bernini", "bernini", config_bytes=MAX_CACHED_BYTES))
    assert not controller.rayservices, "a grown object stayed cached"


def test_tenant_labels_and_annotations_are_not_cached():
    controller = Controller(kube=None, manifests=None)
    body = _rayservice("bernini", "bernini", labels=500)
    body["metadata"]["annotations"] = {f"a/{i}": "y" * 100 for i in range(500)}
    controller.observe_rayservice("ADDED", body)
    kept = controller.rayservices.read(("t", "bernini"))
    assert kept["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "bernini-operator"}
    assert "annotations" not in kept["metadata"]

"""The worker groups' node bounds a running RayCluster must carry. Pure.

KubeRay leaves workerGroupSpecs' minReplicas and maxReplicas out of the hash that decides whether a RayService's
cluster changed (so that the Ray autoscaler's own writes are not undone), and so never carries a change of them
to the running RayCluster (kuberay#4568). The operator patches them there itself, never `replicas`, which is the
autoscaler's."""

from typing import Any


def bounds_patch(raycluster: dict[str, Any], wanted: dict[str, tuple[int, int]]) -> list[dict[str, Any]]:
    """A JSON patch that sets the live RayCluster's groups to the wanted bounds, or [] when they hold them.
    Groups are addressed by index, so the patch first tests the resourceVersion it was computed from: a
    RayCluster changed meanwhile refuses it (409) and the next reconcile computes it again."""
    operations = []
    for index, group in enumerate(raycluster["spec"].get("workerGroupSpecs") or []):
        if group.get("groupName") not in wanted:
            continue  # a group this spec no longer has: the next cluster drops it
        low, high = wanted[group["groupName"]]
        for field, value in (("minReplicas", low), ("maxReplicas", high)):
            if group.get(field) != value:
                # add sets a member whether or not it is there (the field is optional in KubeRay's schema)
                operations.append({"op": "add", "path": f"/spec/workerGroupSpecs/{index}/{field}", "value": value})
    if not operations:
        return []
    return [{"op": "test", "path": "/metadata/resourceVersion",
             "value": raycluster["metadata"]["resourceVersion"]}, *operations]

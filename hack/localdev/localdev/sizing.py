"""A BerniniDeployment from the examples, fitted to the real-node cluster on this 2-core machine."""

import copy

SMALL_REPLICA = {"cpus": 0.1, "memory": "256Mi"}


def fit_to_local_nodes(example: dict, serving_image: str, endpoint_url: str, version: str, artifacts_uri: str) -> dict:
    """The local serving image (never pulled), cpu-compiled artifacts on the local S3 server, and small pods:
    the head at 250m/3Gi, one worker pod per inf2.xlarge node at 1 CPU/5Gi (spec.workers), one CPU group pod
    per m6i.2xlarge node at 1 CPU/3Gi (spec.cpuWorkers: with its autoscaler sidecar a head asks 450m, so the
    two CPU nodes hold both clusters' heads and CPU workers during an upgrade), replicas at 0.1 CPU.
    The fused replica takes both NeuronCores of its node, so one inf2.xlarge worker holds a version's neural
    stages, a second replica needs the second node, and that node has room for the new cluster of an upgrade.
    The staged entries (Diffusion and Decoder one NeuronCore each) fit the same way."""
    body = copy.deepcopy(example)
    body["spec"].update(
        # cpu graphs on the Neuron-shaped nodes: the real scheduling recipe, run by CPUs.
        model={"version": version, "artifactsUri": artifacts_uri, "target": "cpu"},
        runtime={"image": serving_image, "imagePullPolicy": "Never"},
        s3={"region": "us-east-1", "endpointUrl": endpoint_url},
        head={"cpu": "250m", "memory": "3Gi"},
        workers={"cpus": 1, "memory": "5Gi"},
        cpuWorkers={"instanceType": "m6i.2xlarge", "cpus": 1, "memory": "3Gi"},
        stages={
            "fused": {**SMALL_REPLICA, "accelerators": 2, "maxReplicas": 2, "targetOngoingRequests": 1,
                      "maxOngoingRequests": 2},
            "encoder": {**SMALL_REPLICA, "accelerators": 0, "maxReplicas": 1},
            "diffusion": {**SMALL_REPLICA, "accelerators": 1, "maxReplicas": 2, "targetOngoingRequests": 1,
                          "maxOngoingRequests": 2},
            "decoder": {**SMALL_REPLICA, "accelerators": 1, "maxReplicas": 1},
            "triangulation": {**SMALL_REPLICA, "maxReplicas": 1},
        },
        ingress={**SMALL_REPLICA, "maxReplicas": 1},
        autoscaling={"upscaleDelaySeconds": 2, "downscaleDelaySeconds": 10, "idleTimeoutSeconds": 30},
    )
    return body


def fit_operator_chart(operator_image: str, store_endpoint: str) -> dict:
    """The chart's values on the local nodes: the local operator image (never pulled), a small request, the
    5 s resync the tests' operator process uses, and the local store (versitygw, plain http) allowed."""
    repository, tag = operator_image.rsplit(":", 1)
    return {"image": {"repository": repository, "tag": tag, "pullPolicy": "Never"}, "resyncSeconds": 5,
            "policy": {"allowHttpEndpoints": True, "endpoints": [store_endpoint]},
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}}

"""Pod templates of the Ray head and the workers: each accelerator kind's scheduling recipe and the restricted
profile."""

from bernini.api.spec import BerniniDeploymentSpec
from bernini.artifacts.manifest import Manifest
from bernini.domain.capacity import WorkerShape, object_store_bytes
from bernini.domain.instances import ACCELERATED_FAMILIES, KINDS
from bernini.domain.pipeline import ARTIFACTS_MOUNT_PATH
from bernini.domain.quantity import to_bytes

# The Ray resource Neuron workers declare and replicas ask for; Ray knows GPUs natively (num-gpus).
NEURON_CORES_RAY_RESOURCE = "neuron_cores"
# Beside an accelerator kind, each worker group offers its role as a Ray resource and each Serve replica asks a
# sliver of its own: CPU work never lands on an accelerator node, nor graph loading on a CPU node (which has no
# artifacts), and Ray's autoscaler knows which group a pending replica needs.
GROUP_RAY_RESOURCES = {"accelerated": "bernini_accelerated_worker", "cpu": "bernini_cpu_worker"}
GROUP_RESOURCE_OFFERED = 1000
GROUP_RESOURCE_ASKED = 0.001
RAY_UID = 1000  # the Ray images' "ray" user; a numeric uid lets runAsNonRoot be verified
CACHE_MOUNT_PATH = "/var/cache/bernini"  # the node's artifact cache, in the init container only
RAY_GID = 100

POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": RAY_UID,
    "runAsGroup": RAY_GID,
    "fsGroup": RAY_GID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}

# Every Ray process that routes or serves (proxies, replicas) reads these: the router runs on the caller's own
# event loop instead of handing each request to a second loop thread, and Serve's log lines go to their files
# only, not a second time through stderr into the log monitor. make bench-serve: -14 ms per request.
SERVE_PROCESS_ENV = {"RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0", "RAY_SERVE_LOG_TO_STDERR": "0"}


def _shm_volume(memory_bytes: int) -> dict:
    # Ray's object store lives in /dev/shm.
    return {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{object_store_bytes(memory_bytes) // 2**20}Mi"}}


SHM_MOUNT = {"name": "dshm", "mountPath": "/dev/shm"}


def _container(spec: BerniniDeploymentSpec, name: str, resources: dict[str, str], mounts: list[dict],
               limits: dict[str, str] | None = None) -> dict:
    """Limits default to the requests."""
    return {
        "name": name,
        "image": spec.runtime.image,
        "imagePullPolicy": spec.runtime.image_pull_policy,
        "resources": {"requests": dict(resources), "limits": dict(resources if limits is None else limits)},
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": mounts,
    }


def _ray_container(spec: BerniniDeploymentSpec, name: str, resources: dict[str, str], mounts: list[dict]) -> dict:
    container = _container(spec, name, resources, mounts)
    container["env"] = [{"name": key, "value": value} for key, value in SERVE_PROCESS_ENV.items()]
    return container


def pod_spec(spec: BerniniDeploymentSpec, containers: list[dict], volumes: list[dict], reads_artifacts: bool = True,
             **extra) -> dict:
    """reads_artifacts: the pod runs as spec.serviceAccountName, the one that may read the store; otherwise as
    spec.cpuWorkers.serviceAccountName (unset: the namespace's default)."""
    pod = {"securityContext": POD_SECURITY, "containers": containers, "volumes": volumes, **extra}
    account = spec.service_account_name if reads_artifacts else spec.cpu_workers.service_account_name
    if account:
        pod["serviceAccountName"] = account
    return pod


def head_template(spec: BerniniDeploymentSpec, labels: dict[str, str]) -> dict:
    resources = {"cpu": spec.head.cpu, "memory": spec.head.memory}
    container = _ray_container(spec, "ray-head", resources, [SHM_MOUNT])
    not_accelerated = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "karpenter.k8s.aws/instance-family", "operator": "NotIn", "values": ACCELERATED_FAMILIES}
                    ]
                }
            ]
        }
    }
    pod = pod_spec(
        spec, [container], [_shm_volume(to_bytes(spec.head.memory))], affinity={"nodeAffinity": not_accelerated},
        # KubeRay's autoscaler sidecar scales the worker groups through the API with this token, even when
        # the ServiceAccount turns automounting off for every other pod.
        automountServiceAccountToken=True,
    )
    return {"metadata": {"labels": labels}, "spec": pod}


def artifacts_volume_size(manifest: Manifest) -> str:
    # Room for the files plus their temp copies while a resumed pull renames them into place.
    return f"{max(1, -(-manifest.total_bytes * 2 // 2**30))}Gi"


def pull_command(spec: BerniniDeploymentSpec, manifest_sha256: str) -> list[str]:
    """The init container's command; it pins the manifest the operator's preflight verified."""
    command = [
        "bernini", "artifacts", "pull", spec.model.artifacts_uri, ARTIFACTS_MOUNT_PATH,
        "--manifest-sha256", manifest_sha256,
        "--region", spec.s3.region,
    ]
    if spec.s3.endpoint_url:
        command += ["--endpoint-url", spec.s3.endpoint_url]
    if spec.artifacts_cache:
        command += ["--cache-dir", CACHE_MOUNT_PATH,
                    "--cache-limit-gib", f"{to_bytes(spec.artifacts_cache.size_limit) / 2**30:g}"]
    return command


def puller_container(spec: BerniniDeploymentSpec, manifest_sha256: str, resources: dict[str, str],
                     limits: dict[str, str] | None = None) -> dict:
    """The init container that pulls and verifies the artifacts (through the node cache when there is one)."""
    puller = _container(spec, "pull-artifacts", resources, [{"name": "artifacts", "mountPath": ARTIFACTS_MOUNT_PATH}],
                        limits)
    puller["command"] = pull_command(spec, manifest_sha256)
    if spec.artifacts_cache:
        # Each namespace's own claim (examples/artifacts-cache.yaml gives each its own host directory). A
        # subPathExpr of the namespace failed on real pods: KubeRay's worker init container lost the env it reads.
        puller["volumeMounts"].append({"name": "artifacts-cache", "mountPath": CACHE_MOUNT_PATH})
    # The puller writes its failure to the termination log; a crash without one still leaves its last log lines.
    puller["terminationMessagePolicy"] = "FallbackToLogsOnError"
    return puller


def artifacts_volumes(spec: BerniniDeploymentSpec, manifest: Manifest) -> list[dict]:
    volumes = [{"name": "artifacts", "emptyDir": {"sizeLimit": artifacts_volume_size(manifest)}}]
    if spec.artifacts_cache:
        volumes.append({"name": "artifacts-cache", "persistentVolumeClaim": {"claimName": spec.artifacts_cache.claim_name}})
    return volumes


def accelerator_tolerations(spec: BerniniDeploymentSpec) -> dict:
    """The accelerated nodes' taint, tolerated (as pod spec fields: none for kind cpu)."""
    taint_key = KINDS[spec.accelerator.kind].taint_key
    return {"tolerations": [{"key": taint_key, "operator": "Exists", "effect": "NoSchedule"}]} if taint_key else {}


def cpu_worker_template(spec: BerniniDeploymentSpec, labels: dict[str, str], worker_shape: WorkerShape) -> dict:
    """A CPU group worker: the ingress and triangulation need no artifacts, accelerator or store access."""
    resources = {"cpu": str(worker_shape.cpus), "memory": f"{worker_shape.memory_bytes // 2**20}Mi"}
    worker = _ray_container(spec, "ray-worker", resources, [SHM_MOUNT])
    pod = pod_spec(spec, [worker], [_shm_volume(worker_shape.memory_bytes)], reads_artifacts=False,
                   automountServiceAccountToken=False,
                   nodeSelector={"node.kubernetes.io/instance-type": worker_shape.instance.name})
    return {"metadata": {"labels": labels}, "spec": pod}


def worker_template(
    spec: BerniniDeploymentSpec,
    labels: dict[str, str],
    worker_shape: WorkerShape,
    manifest: Manifest,
    manifest_sha256: str,
) -> dict:
    kind = KINDS[spec.accelerator.kind]
    resources = {"cpu": str(worker_shape.cpus), "memory": f"{worker_shape.memory_bytes // 2**20}Mi"}
    if kind.resource:
        resources[kind.resource] = str(worker_shape.accelerators)
    artifacts_mount = {"name": "artifacts", "mountPath": ARTIFACTS_MOUNT_PATH, "readOnly": True}
    worker = _ray_container(spec, "ray-worker", resources, [artifacts_mount, SHM_MOUNT])
    artifacts, *cache = artifacts_volumes(spec, manifest)
    volumes = [artifacts, _shm_volume(worker_shape.memory_bytes), *cache]
    extra = {
        "automountServiceAccountToken": False,  # nothing on a worker talks to the Kubernetes API
        # The pull hashes and copies every byte, so it is CPU-bound: it gets the worker's CPUs, which costs no
        # scheduling room (a pod asks for the larger of its init containers' and its containers' requests).
        "initContainers": [puller_container(spec, manifest_sha256, {"cpu": resources["cpu"], "memory": "1Gi"})],
        "nodeSelector": {"node.kubernetes.io/instance-type": worker_shape.instance.name},
        **accelerator_tolerations(spec),
    }
    if spec.accelerator.scheduler_name:
        extra["schedulerName"] = spec.accelerator.scheduler_name
    return {"metadata": {"labels": labels}, "spec": pod_spec(spec, [worker], volumes, **extra)}

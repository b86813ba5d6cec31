"""BerniniDeployment.spec: what the user asks for. Field docstrings become `kubectl explain` text."""

from typing import Any, Literal

from pydantic import Field, create_model
from pydantic.fields import FieldInfo

from bernini.api.base import ApiModel
from bernini.instances import INF2
from bernini.pipeline import STAGES

InstanceTypeName = Literal[tuple(INF2)]  # the CRD's enum, from the one catalogue

QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
RAY_VERSION = r"^[0-9]+\.[0-9]+\.[0-9]+$"


def _cel(rule: str, message: str, field_path: str | None = None) -> dict:
    validation = {"rule": rule, "message": message}
    if field_path:
        validation["fieldPath"] = field_path
    return validation


class ModelRef(ApiModel):
    """The model release to serve."""

    name: str = Field("bernini", pattern=DNS_SUBDOMAIN, max_length=63)
    """Model name; must equal the name recorded in the artifacts manifest."""

    version: str = Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
    """Version label of this release (e.g. 1.4.0); must equal the manifest's version and labels every pod."""

    artifacts_uri: str = Field(pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$", max_length=1024)
    """S3 prefix holding manifest.json and the compiled stage files, e.g. s3://models/bernini/1.4.0/."""

    target: Literal["inf2", "cpu"] = "inf2"
    """Compilation target the artifacts must have; cpu runs TorchScript on the workers' CPUs (development only)."""


class S3Settings(ApiModel):
    """How pods and the operator reach the artifact store. Credentials never go here: use IRSA or Pod Identity."""

    region: str = Field("us-east-1", pattern=r"^[a-z0-9-]+$", max_length=32)
    """AWS region of the bucket."""

    endpoint_url: str | None = Field(None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$", max_length=512)
    """Endpoint of an S3-compatible store; leave unset for AWS S3."""


class Runtime(ApiModel):
    """The serving image and the versions it declares; the artifacts preflight checks them against the manifest."""

    image: str = Field(min_length=1, max_length=512)
    """Serving image with Ray, torch-neuronx and this package (see images/serving.Dockerfile)."""

    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """Pull policy for the serving image."""

    ray_version: str = Field("2.60.0", pattern=RAY_VERSION)
    """Ray version in the image; token authentication needs 2.52 or newer."""

    neuron_compiler_version: str | None = Field(None, pattern=r"^[0-9]+\.[0-9]+(\.[0-9A-Za-z+.-]+)?$")
    """neuronx-cc version the image's Neuron runtime pairs with; artifacts compiled by another major are refused."""


class Accelerator(ApiModel):
    """Where Neuron workers may run."""

    instance_types: list[InstanceTypeName] = Field(
        ["inf2.xlarge"], min_length=1, max_length=4, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Allowed inf2 instance types; one Ray worker group each, one worker pod per node taking all its NeuronCores."""

    scheduler_name: str | None = Field(None, pattern=DNS_SUBDOMAIN, max_length=253)
    """Scheduler of the Neuron scheduler extension (contiguous NeuronCores); unset uses the default scheduler."""


_REPLICA_RULES = [
    _cel("self.minReplicas <= self.maxReplicas", "minReplicas must not exceed maxReplicas", ".minReplicas"),
    _cel(
        "double(self.maxOngoingRequests) >= self.targetOngoingRequests",
        "maxOngoingRequests must be at least targetOngoingRequests",
        ".maxOngoingRequests",
    ),
]


class ReplicaSpec(ApiModel):
    """Size, replica bounds and autoscaling target of one Serve deployment."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": _REPLICA_RULES}}

    cpus: float = Field(1.0, gt=0, le=192)
    """CPUs per replica (Ray num_cpus)."""

    memory: str = Field("2Gi", pattern=QUANTITY)
    """Memory per replica, as a Kubernetes quantity (Ray memory)."""

    min_replicas: int = Field(1, ge=0, le=1000)
    """Fewest replicas the Serve autoscaler keeps."""

    max_replicas: int = Field(4, ge=1, le=1000)
    """Most replicas the Serve autoscaler may start."""

    target_ongoing_requests: float = Field(2.0, gt=0, le=1000)
    """Concurrent requests per replica the Serve autoscaler aims for."""

    max_ongoing_requests: int = Field(3, ge=1, le=10000)
    """Hard cap of concurrent requests per replica; keep it 20-50% above targetOngoingRequests."""


class StageSpec(ReplicaSpec):
    """One pipeline stage: NeuronCores per replica (0 for a CPU stage) plus size and autoscaling."""

    neuron_cores: int = Field(1, ge=0, le=24)
    """NeuronCores per replica (Ray resource neuron_cores, whole numbers only); 0 runs the stage on CPU."""


def _with_defaults(base: type[ApiModel], name: str, doc: str, **defaults: Any) -> type[ApiModel]:
    """A subclass of base whose fields default per stage, so the apiserver fills a partly given stage sensibly."""
    fields = {
        field: (base.model_fields[field].annotation, FieldInfo.merge_field_infos(base.model_fields[field], default=value))
        for field, value in defaults.items()
    }
    return create_model(name, __base__=base, __doc__=doc, **fields)


EncoderStage = _with_defaults(
    StageSpec, "EncoderStage", "Condition encoder: image, point cloud or text to a conditioning embedding.",
    neuron_cores=1, memory="2Gi", max_replicas=2,
)
DiffusionStage = _with_defaults(
    StageSpec, "DiffusionStage", "Reverse diffusion: the denoiser run for N sampler steps with classifier-free guidance.",
    neuron_cores=1, memory="4Gi", max_replicas=4,
)
DecoderStage = _with_defaults(
    StageSpec, "DecoderStage", "Wavelet decoder: latent to wavelet coefficients, inverse 3D wavelet transform to an SDF.",
    neuron_cores=1, memory="4Gi", max_replicas=4,
)
TriangulationStage = _with_defaults(
    StageSpec, "TriangulationStage", "Marching cubes on the SDF grid to a mesh; normally a CPU stage.",
    neuron_cores=0, cpus=2.0, memory="4Gi", max_replicas=4,
)
IngressSpec = _with_defaults(
    ReplicaSpec, "IngressSpec", "The HTTP ingress deployment that parses requests and chains the stages.",
    cpus=0.25, memory="1Gi", target_ongoing_requests=8.0, max_ongoing_requests=12,
)


class Stages(ApiModel):
    """One entry per pipeline stage, in pipeline order."""

    encoder: EncoderStage = EncoderStage()
    diffusion: DiffusionStage = DiffusionStage()
    decoder: DecoderStage = DecoderStage()
    triangulation: TriangulationStage = TriangulationStage()

    def items(self) -> list[tuple[str, StageSpec]]:
        return [(name, getattr(self, name)) for name in STAGES]


class Head(ApiModel):
    """The Ray head pod; it runs on CPU nodes and hosts no Serve replicas."""

    cpu: str = Field("2", pattern=QUANTITY)
    """CPU request and limit of the head pod."""

    memory: str = Field("8Gi", pattern=QUANTITY)
    """Memory request and limit of the head pod."""


class WorkerPods(ApiModel):
    """Size of each inf2 worker pod. Unset: the instance's vCPUs less one and 80% of its memory, which leaves
    room for kubelet and the Neuron daemonsets; set both lower when your nodes run more daemonsets."""

    cpus: int | None = Field(None, ge=1, le=192)
    """Whole CPUs per worker pod (its request, limit and Ray num-cpus); must not exceed the instance's vCPUs less one."""

    memory: str | None = Field(None, pattern=QUANTITY)
    """Memory per worker pod (request and limit); must not exceed 80% of the instance's memory."""


class Autoscaling(ApiModel):
    """How fast Serve replicas and inf2 nodes follow the load."""

    upscale_delay_seconds: float = Field(10.0, ge=0, le=3600)
    """How long demand must exceed the target before Serve adds replicas."""

    downscale_delay_seconds: float = Field(300.0, ge=0, le=86400)
    """How long demand must stay below the target before Serve removes replicas."""

    idle_timeout_seconds: int = Field(300, ge=0, le=86400)
    """How long an inf2 worker node may sit idle before the Ray autoscaler removes it."""

    upscaling_mode: Literal["Default", "Aggressive", "Conservative"] = "Default"
    """Ray autoscaler upscaling mode."""


class UpgradeStrategy(ApiModel):
    """How KubeRay rolls out a changed cluster (new image, artifacts or pod shape)."""

    type: Literal["NewCluster", "None"] = "NewCluster"
    """NewCluster: start a new RayCluster and switch traffic when it is ready (zero downtime). None: never."""


class BerniniDeploymentSpec(ApiModel):
    """One version of Bernini served on inf2 through a KubeRay RayService."""

    model: ModelRef
    runtime: Runtime
    s3: S3Settings = S3Settings()
    accelerator: Accelerator = Accelerator()
    stages: Stages = Stages()
    ingress: IngressSpec = IngressSpec()
    head: Head = Head()
    workers: WorkerPods = WorkerPods()
    autoscaling: Autoscaling = Autoscaling()
    upgrade_strategy: UpgradeStrategy = UpgradeStrategy()

    service_account_name: str | None = Field(None, pattern=DNS_SUBDOMAIN, max_length=253)
    """ServiceAccount of the Ray pods, bound to an IAM role (IRSA or Pod Identity) that may read artifactsUri."""

    suspend: bool = False
    """Stop serving at no cost: every Ray pod (head and workers) is deleted; the RayService stays and false recreates it."""

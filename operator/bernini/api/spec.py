"""BerniniDeployment.spec: what the user asks for. Field docstrings become `kubectl explain` text."""

import re
from typing import Any, Literal

from pydantic import Field, create_model, field_validator, model_validator
from pydantic.fields import FieldInfo

from bernini.api.base import ApiModel
from bernini.domain.instances import CATALOGUE, DEFAULT_INSTANCE_TYPE, KINDS, TARGETS, AcceleratorKind, of_kind
from bernini.domain.pipeline import FUSED, GRAPHS_OF_DEPLOYMENT, LAYOUTS, STAGES, deployments_of_layout
from bernini.domain.quantity import parse_quantity
from bernini.endpoints import parse_endpoint

InstanceTypeName = Literal[tuple(CATALOGUE)]  # the CRD's enum, from the one catalogue
CpuInstanceTypeName = Literal[tuple(of_kind("cpu"))]

QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
RAY_VERSION = r"^[0-9]+\.[0-9]+\.[0-9]+$"
_TOKEN_AUTH_RAY = r"^(2\.(5[2-9]|[6-9][0-9]|[1-9][0-9]{2,})|[3-9]|[1-9][0-9]+)\."  # >= 2.52, Ray's token auth
# AWS region names: us-east-1, us-gov-west-1, ap-southeast-4, ...
AWS_REGION = r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$"
# The image reference grammar (distribution/reference) without look-arounds, which neither the API server's
# RE2 nor pydantic's regex engine has: [registry[:port]/]path[:tag][@sha256:digest], the path lower-case.
_HOST_PART = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# The first component is a registry only when it has a dot or a port or is localhost (as docker reads it):
# UPPER/name is a path, and paths are lower-case.
_REGISTRY = rf"(?:{_HOST_PART}(?:\.{_HOST_PART})+(?::[0-9]{{1,5}})?|{_HOST_PART}:[0-9]{{1,5}}|localhost)"
IMAGE_REFERENCE = (rf"^(?:{_REGISTRY}/)?{_PATH_PART}(?:/{_PATH_PART})*"
                   r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$")
# An S3 endpoint: scheme, a lower-case DNS name or an address ([...] for IPv6), an optional port and a plain path
# (no userinfo, query, fragment or percent-encoding). bernini.endpoints judges the address itself.
ENDPOINT_URL = r"^https?://([a-z0-9.-]+|\[[0-9a-f:.]+\])(:[0-9]{1,5})?(/[A-Za-z0-9._~!$&'()*+,;=:@-]*)*$"
# The same judgement as bernini.endpoints, in the API server's CEL. Every rule reads the URL itself (512
# characters at most), never a value derived from it: the API server estimates a derived string's length as
# unbounded and refuses the rule's cost.
_QUAD = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_AFTER_HOST = r"(:[0-9]{1,5})?(/.*)?$"
_NUMERIC_HOST = rf"^https?://([a-z0-9-]+[.])*(0x[0-9a-f]*|[0-9]+)[.]?{_AFTER_HOST}"  # what inet_aton reads
_CANONICAL_IPV4 = rf"^https?://{_QUAD}([.]{_QUAD}){{3}}{_AFTER_HOST}"
_REFUSED_IPV4 = (rf"^https?://(169[.]254([.]{_QUAD}){{2}}|(0|22[4-9]|2[3-5][0-9])([.]{_QUAD}){{3}}){_AFTER_HOST}")
_IPV6 = r"self.endpointUrl.find('[0-9a-f:.]+\\]').replace(']', '')"
_ENDPOINT_RULES = [
    (f"!self.endpointUrl.matches('{_NUMERIC_HOST}') || self.endpointUrl.matches('{_CANONICAL_IPV4}')",
     "s3.endpointUrl: a host that reads as a number must be an IPv4 address written as four decimal numbers"),
    (f"!self.endpointUrl.matches('{_REFUSED_IPV4}')",
     "s3.endpointUrl must not be a link-local (instance metadata, Pod Identity agent) or non-unicast address"),
    (f"!self.endpointUrl.matches('^https?://\\\\[') || (isIP({_IPV6}) && (ip({_IPV6}).isLoopback() || "
     f"!(ip({_IPV6}).isLinkLocalUnicast() || ip({_IPV6}).isUnspecified() || !ip({_IPV6}).isGlobalUnicast() "
     + "".join(f"|| cidr('{network}').containsIP(ip({_IPV6})) "
               for network in ("fd00:ec2::/32", "::/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16"))
     + ")))",
     "s3.endpointUrl: [...] must hold an IPv6 address that is not link-local, AWS-internal (fd00:ec2::/32) nor an "
     "IPv6 form of an IPv4 one"),
    ("!self.endpointUrl.matches('/[.][.]?(/|$)')", "s3.endpointUrl: no . or .. path segments"),
]


def _cel(rule: str, message: str, field_path: str | None = None) -> dict:
    validation = {"rule": rule, "message": message}
    if field_path:
        validation["fieldPath"] = field_path
    return validation


# Quantities a pod or replica can sensibly have: a head memory of "1" (one byte) once rendered a 0Mi /dev/shm.
BOUNDS = {"replica memory": ("64Mi", "1Ti"), "pod memory": ("1Gi", "1Ti"), "pod cpu": ("100m", "192")}


def _between_rule(field: str, bounds: str) -> dict:
    low, high = BOUNDS[bounds]
    value = f"quantity(self.{field})"
    return _cel(f"!has(self.{field}) || ({value}.compareTo(quantity('{low}')) >= 0 && "
                f"{value}.compareTo(quantity('{high}')) <= 0)", f"{field} must be between {low} and {high}", f".{field}")


def _check_between(value: str | None, bounds: str) -> str | None:
    """The same rule as _between_rule's CEL, for objects admitted before it existed."""
    low, high = BOUNDS[bounds]
    if value is not None and not parse_quantity(low) <= parse_quantity(value) <= parse_quantity(high):
        raise ValueError(f"must be between {low} and {high}")
    return value


class ModelRef(ApiModel):
    """The model release to serve."""

    name: str = Field("bernini", pattern=DNS_SUBDOMAIN, max_length=63)
    """Model name; must equal the name recorded in the artifacts manifest."""

    version: str = Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
    """Version label of this release (e.g. 1.4.0); must equal the manifest's version and labels every pod."""

    artifacts_uri: str = Field(pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$", max_length=1024)
    """S3 prefix holding manifest.json and the compiled stage files, e.g. s3://models/bernini/1.4.0/."""

    target: Literal[TARGETS] | None = None
    """Compilation target the artifacts must have. Unset: the accelerator kind's (inf2 for neuron, cuda for
    nvidia, cpu for cpu). cpu on an accelerator kind runs the graphs on the CPUs of accelerator nodes: for
    testing the scheduling recipe only."""


class S3Settings(ApiModel):
    """How pods and the operator reach the artifact store. Credentials never go here: use IRSA or Pod Identity."""

    region: str = Field("us-east-1", pattern=AWS_REGION, max_length=32)
    """AWS region of the bucket."""

    endpoint_url: str | None = Field(None, pattern=ENDPOINT_URL, max_length=512)
    """Endpoint of an S3-compatible store; leave unset for AWS S3. A lower-case DNS name or an address, no user
    or password, no query. Link-local, instance metadata and Pod Identity agent addresses are refused in every
    spelling, and so is a name that resolves to one when the operator dials it."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [
        {**_cel(f"!has(self.endpointUrl) || ({rule})", message, ".endpointUrl")} for rule, message in _ENDPOINT_RULES]}}

    @field_validator("endpoint_url")
    @classmethod
    def _an_allowed_endpoint(cls, value: str | None) -> str | None:
        # The same judgement as the CEL above, for objects admitted before it existed.
        if value is not None:
            parse_endpoint(value)  # EndpointRefused is a ValueError: pydantic reports it on the field
        return value


class Runtime(ApiModel):
    """The serving image and the versions it declares; the artifacts preflight checks them against the manifest."""

    image: str = Field(min_length=1, max_length=512, pattern=IMAGE_REFERENCE)
    """Serving image with Ray, torch-neuronx and this package (see images/serving.Dockerfile)."""

    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """Pull policy for the serving image."""

    ray_version: str = Field("2.60.0", pattern=RAY_VERSION)
    """Ray version in the image; token authentication needs 2.52 or newer."""

    neuron_compiler_version: str | None = Field(None, pattern=r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(\.[0-9A-Za-z+.-]+)?$")
    """neuronx-cc version the image's Neuron runtime pairs with; artifacts compiled by another major are refused."""

    cuda_version: str | None = Field(None, pattern=r"^[0-9]+\.[0-9]+$")
    """CUDA version of the image's PyTorch (kind nvidia); artifacts traced with a newer CUDA major are refused."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [_cel(
        f"self.rayVersion.matches(r'{_TOKEN_AUTH_RAY}')",
        "runtime.rayVersion must be 2.52.0 or newer: the Ray cluster runs with token authentication", ".rayVersion")]}}

    @field_validator("ray_version")
    @classmethod
    def _has_token_auth(cls, value: str) -> str:
        # The same rule as the CEL above, for objects admitted before it existed.
        if not re.match(_TOKEN_AUTH_RAY, value):
            raise ValueError("must be 2.52.0 or newer: the Ray cluster runs with token authentication")
        return value


def _types_of_kind_rule(kind: str) -> dict:
    allowed = ", ".join(f"'{name}'" for name in of_kind(kind))
    return _cel(f"self.kind != '{kind}' || !has(self.instanceTypes) || self.instanceTypes.all(t, t in [{allowed}])",
                f"kind {kind} runs on {', '.join(of_kind(kind))} only", ".instanceTypes")


_ACCELERATOR_RULES = [
    *(_types_of_kind_rule(kind) for kind in KINDS),
    _cel("self.kind == 'neuron' || !has(self.schedulerName)", "schedulerName is for kind neuron only",
         ".schedulerName"),
]


class Accelerator(ApiModel):
    """What the Ray workers run on: an accelerator kind and the instance types allowed for it."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": _ACCELERATOR_RULES}}

    kind: AcceleratorKind = "neuron"
    """neuron: Inferentia/Trainium (aws.amazon.com/neuroncore); nvidia: NVIDIA GPUs (nvidia.com/gpu); cpu: general
    purpose nodes, no accelerator resources."""

    instance_types: list[InstanceTypeName] | None = Field(
        None, min_length=1, max_length=4, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Allowed instance types of the kind; one Ray worker group each, one worker pod per node taking all its
    accelerators. Unset: inf2.xlarge, g5.xlarge or m6i.xlarge."""

    scheduler_name: str | None = Field(None, pattern=DNS_SUBDOMAIN, max_length=253)
    """Scheduler of the Neuron scheduler extension (contiguous NeuronCores); unset uses the default scheduler."""

    @property
    def allowed_types(self) -> list[str]:
        return self.instance_types or [DEFAULT_INSTANCE_TYPE[self.kind]]


_REPLICA_RULES = [
    _between_rule("memory", "replica memory"),
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

    def amount(self, stage: str, kind: str) -> float:
        return 0  # the ingress asks no accelerator

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

    @field_validator("memory")
    @classmethod
    def _sane_memory(cls, value: str) -> str:
        return _check_between(value, "replica memory")


class StageSpec(ReplicaSpec):
    """One pipeline stage: accelerators per replica plus size and autoscaling."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [
        *_REPLICA_RULES,
        _cel("!has(self.accelerators) || !has(self.neuronCores)",
             "set accelerators, or the deprecated neuronCores, not both", ".neuronCores"),
    ]}}

    accelerators: float | None = Field(None, ge=0, le=32)
    """Accelerators per replica: NeuronCores on kind neuron (whole numbers), GPUs on kind nvidia (below 1 a
    replica shares a GPU, e.g. 0.25; above 1 whole GPUs), none on kind cpu. Unset: 1 for the fused stages,
    the encoder, diffusion and decoder, 0 for triangulation."""

    neuron_cores: int | None = Field(None, ge=0, le=32)
    """Deprecated (v1alpha1 objects): accelerators for kind neuron. Move the value to accelerators."""

    def amount(self, stage: str, kind: str) -> float:
        """Accelerator units one replica of deployment `stage` asks for on `kind`."""
        if kind == "cpu":
            return 0
        for value in (self.accelerators, self.neuron_cores):
            if value is not None:
                return value
        return 1 if stage in GRAPHS_OF_DEPLOYMENT else 0


def _with_defaults(base: type[ApiModel], name: str, doc: str, **defaults: Any) -> type[ApiModel]:
    """A subclass of base whose fields default per stage, so the apiserver fills a partly given stage sensibly."""
    fields = {
        field: (base.model_fields[field].annotation, FieldInfo.merge_field_infos(base.model_fields[field], default=value))
        for field, value in defaults.items()
    }
    return create_model(name, __base__=base, __doc__=doc, **fields)


EncoderStage = _with_defaults(
    StageSpec, "EncoderStage",
    "layout staged: condition encoder: image, point cloud or text to a conditioning embedding.",
    memory="2Gi", max_replicas=2,
)
DiffusionStage = _with_defaults(
    StageSpec, "DiffusionStage",
    "layout staged: reverse diffusion: the denoiser run for N sampler steps with classifier-free guidance.",
    memory="4Gi", max_replicas=4,
)
DecoderStage = _with_defaults(
    StageSpec, "DecoderStage",
    "layout staged: wavelet decoder: latent to wavelet coefficients, inverse 3D wavelet transform to an SDF.",
    memory="4Gi", max_replicas=4,
)
FusedStage = _with_defaults(
    StageSpec, "FusedStage", "layout fused: the encoder, diffusion and decoder in one replica, which loads the three "
    "compiled graphs on one accelerator share and runs them in-process (their spec.stages entries are then unused).",
    memory="4Gi", max_replicas=4,
)
TriangulationStage = _with_defaults(
    StageSpec, "TriangulationStage", "Marching cubes on the SDF grid to a mesh; normally a CPU stage.",
    cpus=2.0, memory="4Gi", max_replicas=4,
)
IngressSpec = _with_defaults(
    ReplicaSpec, "IngressSpec", "The HTTP ingress deployment that parses requests and chains the stages.",
    cpus=0.25, memory="1Gi", target_ongoing_requests=8.0, max_ongoing_requests=12,
)


class Stages(ApiModel):
    """One entry per pipeline stage, in pipeline order, and the fused one; spec.layout says which are used."""

    encoder: EncoderStage = EncoderStage()
    diffusion: DiffusionStage = DiffusionStage()
    decoder: DecoderStage = DecoderStage()
    fused: FusedStage = FusedStage()
    triangulation: TriangulationStage = TriangulationStage()

    def items(self) -> list[tuple[str, StageSpec]]:
        return [(name, getattr(self, name)) for name in STAGES]


class Head(ApiModel):
    """The Ray head pod; it runs on CPU nodes and hosts no Serve replicas."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [
        _between_rule("cpu", "pod cpu"), _between_rule("memory", "pod memory")]}}

    cpu: str = Field("2", pattern=QUANTITY)
    """CPU request and limit of the head pod."""

    memory: str = Field("8Gi", pattern=QUANTITY)
    """Memory request and limit of the head pod."""

    @field_validator("cpu")
    @classmethod
    def _sane_cpu(cls, value: str) -> str:
        return _check_between(value, "pod cpu")

    @field_validator("memory")
    @classmethod
    def _sane_memory(cls, value: str) -> str:
        return _check_between(value, "pod memory")


REDIS_ADDRESS = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*:[0-9]{1,5}$"
_LINK_LOCAL_REDIS = r"^169[.]254[.]"


class SecretKey(ApiModel):
    """One key of a Secret in the BerniniDeployment's namespace."""

    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253)
    """Name of the Secret."""

    key: str = Field(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)
    """Key in the Secret's data."""


class GcsFaultTolerance(ApiModel):
    """Ray's GCS fault tolerance: the head keeps the cluster's state in an external Redis, so when the head pod
    is lost KubeRay starts a new one that finds it there. Worker pods and their Serve replicas keep running
    meanwhile, and the Serve Service leaves the head out, so no request passes through it. KubeRay keys each
    RayCluster's state by its uid; share a Redis only within a team's namespace: whoever reaches it reads every
    cluster's state there."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [
        _cel(f"!self.redisAddress.matches('{_LINK_LOCAL_REDIS}')",
             "gcsFaultTolerance.redisAddress must not be a link-local address", ".redisAddress")]}}

    redis_address: str = Field(pattern=REDIS_ADDRESS, max_length=259)
    """host:port of the Redis server the head pod connects to."""

    password_secret: SecretKey
    """The Secret key holding Redis's password: the head pod reads it into REDIS_PASSWORD; it never appears in
    the spec, the RayService or the status."""

    @field_validator("redis_address")
    @classmethod
    def _not_link_local(cls, value: str) -> str:
        if re.match(_LINK_LOCAL_REDIS, value):
            raise ValueError("gcsFaultTolerance.redisAddress must not be a link-local address")
        return value


class WorkerPods(ApiModel):
    """Size of each accelerated worker pod (spec.cpuWorkers sizes the CPU group's). Unset: the instance's vCPUs
    less one and 80% of its memory, which leaves room for kubelet and the Neuron daemonsets; set both lower when
    your nodes run more daemonsets. Ray's object store keeps 30% of the memory; replicas get the rest."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [_between_rule("memory", "pod memory")]}}

    cpus: int | None = Field(None, ge=1, le=192)
    """Whole CPUs per worker pod (its request, limit and Ray num-cpus); must not exceed the instance's vCPUs less one."""

    memory: str | None = Field(None, pattern=QUANTITY)
    """Memory per worker pod (request and limit); must not exceed 80% of the instance's memory."""

    @field_validator("memory")
    @classmethod
    def _sane_memory(cls, value: str | None) -> str | None:
        return _check_between(value, "pod memory")


class CpuWorkers(ApiModel):
    """The CPU worker group: the ingress and every stage that asks no accelerator (triangulation) run on
    general-purpose nodes, so accelerator nodes hold only accelerator work and can all go when idle. Kind cpu has
    no such group: its workers are general-purpose already."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [_between_rule("memory", "pod memory")]}}

    instance_type: CpuInstanceTypeName = "m6i.xlarge"
    """General-purpose instance type of the group, one worker pod per node."""

    cpus: int | None = Field(None, ge=1, le=192)
    """Whole CPUs per worker pod. Unset: the instance's vCPUs less one."""

    memory: str | None = Field(None, pattern=QUANTITY)
    """Memory per worker pod. Unset: 80% of the instance's memory."""

    service_account_name: str | None = Field(None, pattern=DNS_SUBDOMAIN, max_length=253)
    """ServiceAccount of the CPU group's pods, for example one that holds imagePullSecrets; unset: the
    namespace's default. They read no artifacts, so never give it the store's IAM role."""

    @field_validator("memory")
    @classmethod
    def _sane_memory(cls, value: str | None) -> str | None:
        return _check_between(value, "pod memory")


class ArtifactsCache(ApiModel):
    """The node's artifact cache: a PersistentVolumeClaim bound to a directory on every worker node (for example a
    local PersistentVolume whose node affinity matches the accelerated nodes), writable by the pods' uid 1000 or
    gid 100. Give every namespace its own directory: the pull runs this deployment's image with the cache
    writable. The worker pods
    of every version in this namespace on a node share it: each file is downloaded once per node, and a restarted
    or added worker copies the files already there, checking each one's SHA-256 as it copies."""

    claim_name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253)
    """PersistentVolumeClaim in this namespace that the init containers mount."""

    size_limit: str = Field("50Gi", pattern=QUANTITY)
    """After each pull, least recently used files beyond this are deleted (never the set being pulled)."""

    prewarm: bool = False
    """While a new version rolls out, a DaemonSet (<name>-prewarm) pulls it into the cache of every node of the
    allowed instance types, so the new cluster's workers, and those the autoscaler adds later on nodes the old
    cluster held, copy the files instead of downloading them. It is deleted once the new version serves."""


SERVE_METRICS_PUSH_SECONDS = 10.0  # Ray Serve's metrics_interval_s; it warns (and will refuse) a window not above it


class Autoscaling(ApiModel):
    """How fast Serve replicas and worker nodes follow the load."""

    upscale_delay_seconds: float = Field(10.0, ge=0, le=3600)
    """How long demand must exceed the target before Serve adds replicas."""

    downscale_delay_seconds: float = Field(300.0, ge=0, le=86400)
    """How long demand must stay below the target before Serve removes replicas."""

    look_back_period_seconds: float = Field(12.0, gt=SERVE_METRICS_PUSH_SECONDS, le=3600)
    """Window over which Serve averages each stage's ongoing requests before comparing them with the target.
    A short window reacts to new load sooner; a long one rides out brief bursts (Serve's own default is 30s).
    It must be longer than the 10s at which Serve's replicas and handles push their metrics."""

    idle_timeout_seconds: int = Field(300, ge=0, le=86400)
    """How long a worker node may sit idle before the Ray autoscaler removes it."""

    upscaling_mode: Literal["Default", "Aggressive", "Conservative"] = "Default"
    """Ray autoscaler upscaling mode."""


class IncrementalUpgrade(ApiModel):
    """A new cluster grown step by step while traffic shifts to it through a Gateway, its accelerator worker
    pods held to a surge over the serving cluster's."""

    gateway_class_name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253)
    """GatewayClass of the Gateway KubeRay makes for the RayService (<name>-gateway, HTTP on port 80): clients
    use its address (status.serveEndpoint), as there is no <name>-serve-svc in this mode."""

    max_surge_percent: int | None = Field(None, ge=1, le=100)
    """Serve capacity the new cluster gains per step, in percent of the whole; also the accelerator worker pods
    it may ask beyond the baseline (the serving cluster's when the upgrade began, at least those at minReplicas),
    at least one. Unset: one pod's worth of the baseline."""

    step_size_percent: int | None = Field(None, ge=1, le=100)
    """Traffic moved to the new cluster per interval, in percent. Unset: maxSurgePercent."""

    interval_seconds: int | None = Field(None, ge=1, le=3600)
    """Seconds between traffic steps. Unset: autoscaling.downscaleDelaySeconds + idleTimeoutSeconds + 60, the time
    the old cluster takes to give a pod back and the new one to start it."""


class UpgradeStrategy(ApiModel):
    """How KubeRay rolls out a changed cluster (new image, artifacts or pod shape)."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [
        _cel("(self.type == 'Incremental') == has(self.incremental)",
             "upgradeStrategy.incremental is set exactly when type is Incremental", ".incremental"),
        _cel("!has(self.incremental) || !has(self.incremental.stepSizePercent) || "
             "!has(self.incremental.maxSurgePercent) || "
             "self.incremental.stepSizePercent <= self.incremental.maxSurgePercent",
             "upgradeStrategy.incremental.stepSizePercent must not exceed maxSurgePercent: traffic cannot move to "
             "capacity the new cluster does not have yet", ".incremental.stepSizePercent"),
    ]}}

    type: Literal["NewCluster", "Incremental", "None"] = "NewCluster"
    """NewCluster: start a whole new RayCluster and switch traffic when it is ready (zero downtime, twice the
    accelerators meanwhile). Incremental: grow the new cluster within a surge budget while traffic shifts to it
    through a Gateway (KubeRay's NewClusterWithIncrementalUpgrade; KubeRay v1.6 needs its
    RayServiceIncrementalUpgrade feature gate). None: never."""

    incremental: IncrementalUpgrade | None = None
    """Settings of the Incremental type."""

    deadline_seconds: int = Field(1800, ge=60, le=86400)
    """Seconds a new cluster has, from when the operator first sees it (status.rayService.pendingSince), to serve
    (NewCluster: to be switched to; Incremental: to take its first share of traffic). Past it the operator gives the upgrade back: the RayService
    returns to the spec the serving cluster runs, KubeRay then deletes the new cluster and its pods, and Ready
    turns False with reason UpgradeAbandoned and the failing pods' reasons. The next change of the spec tries again."""

    @model_validator(mode="after")
    def _incremental_settings(self) -> "UpgradeStrategy":
        # The CRD's rules, again for an object an older CRD admitted.
        if (self.type == "Incremental") != (self.incremental is not None):
            raise ValueError("upgradeStrategy.incremental is set exactly when type is Incremental")
        chosen = self.incremental
        if chosen and chosen.step_size_percent and chosen.max_surge_percent and \
                chosen.step_size_percent > chosen.max_surge_percent:
            raise ValueError("upgradeStrategy.incremental.stepSizePercent must not exceed maxSurgePercent")
        return self


def _stage_amount_rules(stage: str) -> list[dict]:
    amount, kind = f"self.stages.{stage}.accelerators", "self.accelerator.kind"
    return [
        _cel(f"!has({amount}) || ({kind} == 'neuron' && {amount} == double(int({amount}))) || "
             f"({kind} == 'nvidia' && ({amount} <= 1.0 || {amount} == double(int({amount})))) || "
             f"({kind} == 'cpu' && {amount} == 0.0)",
             f"stages.{stage}.accelerators must be whole NeuronCores on kind neuron, a fraction below 1 or whole "
             "GPUs on kind nvidia, and 0 on kind cpu", f".stages.{stage}.accelerators"),
        _cel(f"{kind} == 'neuron' || !has(self.stages.{stage}.neuronCores)",
             f"stages.{stage}.neuronCores is for kind neuron; use accelerators", f".stages.{stage}.neuronCores"),
    ]


_TARGET_OF_KIND = "{" + ", ".join(f"'{kind}': '{facts.target}'" for kind, facts in KINDS.items()) + "}"
_ACCELERATOR_TARGETS = ", ".join(f"{facts.target} for {kind}" for kind, facts in KINDS.items() if facts.resource)
_SPEC_RULES = [
    _cel(f"!has(self.model.target) || self.model.target == 'cpu' || "
         f"self.model.target == {_TARGET_OF_KIND}[self.accelerator.kind]",
         f"model.target must be the accelerator kind's target ({_ACCELERATOR_TARGETS}) or cpu",
         ".model.target"),
    *(rule for stage in (*STAGES, FUSED) for rule in _stage_amount_rules(stage)),
]


class BerniniDeploymentSpec(ApiModel):
    """One version of Bernini served through a KubeRay RayService on Neuron, NVIDIA or CPU nodes."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": _SPEC_RULES}}

    model: ModelRef
    runtime: Runtime
    s3: S3Settings = S3Settings()
    accelerator: Accelerator = Accelerator()

    layout: Literal[LAYOUTS] = "fused"
    """fused: the encoder, diffusion and decoder run in one Serve deployment (spec.stages.fused), one accelerator
    share per pipeline and no hops between them: the fewest accelerators per prediction. staged: each has its
    own deployment, share, scaling and batching (spec.stages.encoder, diffusion, decoder): for graphs that do
    not fit one share together, or stages whose load differs widely. Triangulation and the ingress are separate
    in both."""

    stages: Stages = Stages()
    ingress: IngressSpec = IngressSpec()
    head: Head = Head()
    workers: WorkerPods = WorkerPods()
    cpu_workers: CpuWorkers = CpuWorkers()
    autoscaling: Autoscaling = Autoscaling()
    upgrade_strategy: UpgradeStrategy = UpgradeStrategy()
    gcs_fault_tolerance: GcsFaultTolerance | None = None
    """Keep serving when the Ray head pod is lost (unset: losing the head restarts every worker and Serve
    deploys its replicas again)."""

    artifacts_cache: ArtifactsCache | None = None
    """Share downloaded artifacts between the worker pods of a node (unset: every worker pod pulls the whole set)."""

    service_account_name: str | None = Field(None, pattern=DNS_SUBDOMAIN, max_length=253)
    """ServiceAccount of the Ray pods, bound to an IAM role (IRSA or Pod Identity) that may read artifactsUri."""

    suspend: bool = False
    """Stop serving at no cost: every Ray pod (head and workers) is deleted; the RayService stays and false recreates it."""

    def serve_deployments(self) -> list[tuple[str, ReplicaSpec]]:
        """The layout's Serve deployments with their specs, in pipeline order, the ingress last."""
        return [(name, self.ingress if name == "ingress" else getattr(self.stages, name))
                for name in deployments_of_layout(self.layout)]

    def unused_stage_settings(self) -> list[str]:
        """The stages set apart from their defaults that this layout does not run (the API server fills in every
        stage, so a changed one is the only sign that someone meant it)."""
        used = set(deployments_of_layout(self.layout))
        return [f"stages.{name}" for name in Stages.model_fields
                if name not in used and getattr(self.stages, name) != Stages.model_fields[name].default]

    @property
    def target(self) -> str:
        """The compilation target the artifacts must have."""
        return self.model.target or KINDS[self.accelerator.kind].target

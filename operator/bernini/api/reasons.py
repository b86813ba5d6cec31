"""The status vocabulary: condition types, and every reason the operator writes, each defined once with what it
means. Conditions, events, metrics and the docs' table of reasons read it from here; the Argo CD health script
in examples/argocd spells its few waiting reasons in Lua, and a test holds it to this module.

A reason compares and serialises as its name (it is a str), so it goes into a condition or an Event as is."""

from dataclasses import dataclass
from enum import StrEnum

ARTIFACTS_VERIFIED = "ArtifactsVerified"
RENDERED = "Rendered"
RAYSERVICE_READY = "RayServiceReady"
PODS_HEALTHY = "PodsHealthy"
READY = "Ready"
CONDITIONS = (ARTIFACTS_VERIFIED, RENDERED, RAYSERVICE_READY, PODS_HEALTHY, READY)
EVENT = "Event"  # a reason that only ever names an Event, never a condition


class Kind(StrEnum):
    NORMAL = "normal"  # all is well
    WAITING = "waiting"  # progress, or a state asked for; nothing to fix
    CONSEQUENCE = "consequence"  # another condition's failure, shown here too
    TRANSIENT = "transient"  # may clear by itself; the last verified state is kept and the check repeated
    FAILURE = "failure"  # needs a person; a Warning event


class Reason(str):
    """A CamelCase reason with its meaning. `retried`: the operator tries again on its own (with backoff),
    so fixing the cause is enough; otherwise the next change to the object, or the periodic resync, re-checks."""

    kind: Kind
    conditions: tuple[str, ...]
    meaning: str
    action: str
    retried: bool

    def __new__(cls, name: str, kind: Kind, conditions: tuple[str, ...], meaning: str, action: str = "",
                retried: bool = False):
        reason = super().__new__(cls, name)
        reason.kind, reason.conditions, reason.meaning, reason.action, reason.retried = (
            kind, conditions, meaning, action, retried)
        return reason


@dataclass(frozen=True)
class Cause:
    """A reason and the message that goes with it: the one shape every module passes around."""

    reason: str  # a Reason, or a reason KubeRay wrote that is mirrored as it is
    message: str


ALL: list[Reason] = []


def _reason(name: str, kind: Kind, conditions: tuple[str, ...], meaning: str, action: str = "",
            retried: bool = False) -> Reason:
    reason = Reason(name, kind, conditions, meaning, action, retried)
    ALL.append(reason)
    return reason


def by_name(name: str) -> Reason | None:
    return _BY_NAME.get(name)


def is_transient(reason: str) -> bool:
    known = by_name(reason)
    return known is not None and known.kind is Kind.TRANSIENT


def is_retried(reason: str) -> bool:
    known = by_name(reason)
    return known is not None and known.retried


def is_failure(reason: str) -> bool:
    """Whether a False condition with this reason is a fault of its own (a reason from elsewhere counts as one)."""
    known = by_name(reason)
    return known is None or known.kind in (Kind.FAILURE, Kind.TRANSIENT)


_ARTIFACTS = (ARTIFACTS_VERIFIED, READY)
_RENDERED = (RENDERED, READY)
_PODS = (PODS_HEALTHY, READY)

VERIFIED = _reason("Verified", Kind.NORMAL, (ARTIFACTS_VERIFIED,),
                   "The manifest and every object it lists were read and match the spec.")
APPLIED = _reason("Applied", Kind.NORMAL, (RENDERED,), "The RayService matches the spec's generation.")
NO_FAILING_PODS = _reason("NoFailingPods", Kind.NORMAL, (PODS_HEALTHY,), "No pod of the RayService's clusters is failing.")
SERVING = _reason("Serving", Kind.NORMAL, (READY,), "Artifacts verified and the RayService is ready.")

NOT_CREATED = _reason("NotCreated", Kind.WAITING, (RAYSERVICE_READY, PODS_HEALTHY),
                      "The RayService does not exist yet.", "Wait; if Rendered is False, see its reason.")
PENDING = _reason("Pending", Kind.WAITING, (RAYSERVICE_READY,), "KubeRay has not reported on the RayService yet.",
                  "Wait; if it lasts, check that the KubeRay operator runs.")
UNSPECIFIED = _reason("Unspecified", Kind.WAITING, (RAYSERVICE_READY,),
                      "KubeRay reported a Ready condition without a reason.")
RAYSERVICE_NOT_READY = _reason("RayServiceNotReady", Kind.WAITING, (READY,),
                               "The RayService is not ready yet; the message carries KubeRay's reason.",
                               "Wait for workers and Serve; `bernini status` shows the stages and pods.")
SUSPENDED = _reason("Suspended", Kind.WAITING, (READY,), "spec.suspend is true: no Serve replicas, no workers.",
                    "Set spec.suspend to false to serve again.")
BLOCKED_BY_PREFLIGHT = _reason("BlockedByPreflight", Kind.CONSEQUENCE, (RENDERED,),
                               "The artifacts are not verified, so the RayService is not changed.",
                               "See ArtifactsVerified's reason.")

STORE_UNREACHABLE = _reason("StoreUnreachable", Kind.TRANSIENT, _ARTIFACTS,
                            "The store did not answer within the deadline, or the connection failed. A version "
                            "verified before stays verified and keeps serving.",
                            "Check the store and the network path from the operator; it re-checks by itself.",
                            retried=True)
STORE_ERROR = _reason("StoreError", Kind.TRANSIENT, _ARTIFACTS,
                      "The store answered with an error (5xx, a malformed or oversized answer, another region). "
                      "A version verified before stays verified.",
                      "Read the message; for a region, set spec.s3.region.", retried=True)
POLICY_DENIED = _reason("PolicyDenied", Kind.FAILURE, _ARTIFACTS,
                        "The spec asks for something the operator's policy does not allow (an image, an "
                        "artifacts prefix, an endpoint, plain http, pre-warm, a ServiceAccount, too many replicas).",
                        "Change the spec, or ask the cluster admin to widen the policy.")
INVALID_SPEC = _reason("InvalidSpec", Kind.FAILURE, (READY,),
                       "The spec was admitted by an older CRD but this operator's model refuses it.",
                       "Fix the field the message names, or update the CRD.")
ENDPOINT_REFUSED = _reason("EndpointRefused", Kind.FAILURE, _ARTIFACTS,
                           "spec.s3.endpointUrl is malformed, or resolves to an address that is never dialled "
                           "(link-local, metadata, credential agents).", "Use the store's real endpoint.")
MANIFEST_NOT_FOUND = _reason("ManifestNotFound", Kind.FAILURE, _ARTIFACTS,
                             "No manifest.json under spec.model.artifactsUri, or no such bucket.",
                             "Publish the artifacts (`bernini compile --upload`) or fix the URI.")
MANIFEST_INVALID = _reason("ManifestInvalid", Kind.FAILURE, _ARTIFACTS,
                           "The manifest is not valid JSON of the expected shape, or too large.",
                           "Publish the artifacts again with `bernini compile --upload`.")
UNSUPPORTED_MANIFEST_VERSION = _reason("UnsupportedManifestVersion", Kind.FAILURE, _ARTIFACTS,
                                       "The manifest's format version is newer than this operator reads.",
                                       "Upgrade the operator, or publish with its `bernini compile --upload`.")
ARTIFACT_MISSING = _reason("ArtifactMissing", Kind.FAILURE, _ARTIFACTS,
                           "An object the manifest lists does not exist.", "Publish the artifacts again.")
ARTIFACT_MISMATCH = _reason("ArtifactMismatch", Kind.FAILURE, _ARTIFACTS,
                            "An object differs from the manifest (size or checksum).",
                            "Publish the artifacts again; never overwrite a published version's objects.")
ACCESS_DENIED = _reason("AccessDenied", Kind.FAILURE, _ARTIFACTS, "The store refused the operator's credentials.",
                        "Grant the operator's IAM role s3:GetObject on the artifacts.")
NO_CREDENTIALS = _reason("NoCredentials", Kind.FAILURE, _ARTIFACTS, "The operator has no AWS credentials.",
                         "Give the operator's ServiceAccount an IAM role (IRSA or EKS Pod Identity).")
MODEL_MISMATCH = _reason("ModelMismatch", Kind.FAILURE, _ARTIFACTS,
                         "The manifest describes another model version than spec.model.version.",
                         "Point spec.model.artifactsUri at that version's artifacts.")
TARGET_MISMATCH = _reason("TargetMismatch", Kind.FAILURE, _ARTIFACTS,
                          "The artifacts were compiled for another target than the spec's accelerator kind.",
                          "Compile for the spec's target, or change the accelerator.")
STAGE_MISSING = _reason("StageMissing", Kind.FAILURE, _ARTIFACTS,
                        "The manifest lacks a compiled stage the pipeline needs.", "Compile and publish every stage.")
NEURON_CORES_TOO_FEW = _reason("NeuronCoresTooFew", Kind.FAILURE, _ARTIFACTS,
                               "A stage was compiled for more NeuronCores than the spec gives its replicas.",
                               "Raise the stage's accelerators, or compile for fewer cores.")
GRAPHS_DO_NOT_FIT = _reason("GraphsDoNotFit", Kind.FAILURE, _ARTIFACTS,
                            "A deployment's compiled graphs are larger than its accelerator share's device memory "
                            "(layout fused loads all three neural stages on one share).",
                            "Give the deployment more accelerators, or use layout staged.")
CUDA_INCOMPATIBLE = _reason("CudaIncompatible", Kind.FAILURE, _ARTIFACTS,
                            "The artifacts were traced with a newer CUDA major than spec.runtime.cudaVersion.",
                            "Use a matching runtime image, or trace against its CUDA.")
COMPILER_INCOMPATIBLE = _reason("CompilerIncompatible", Kind.FAILURE, _ARTIFACTS,
                                "The artifacts' neuronx-cc major differs from spec.runtime.neuronCompilerVersion's.",
                                "Compile with the runtime's neuronx-cc major version.")

DOES_NOT_FIT = _reason("DoesNotFit", Kind.FAILURE, _RENDERED,
                       "The stages need more than the allowed instance types can hold.",
                       "Allow larger instance types, or ask for less per replica.")
STAGE_DOES_NOT_FIT = _reason("StageDoesNotFit", Kind.FAILURE, _RENDERED,
                             "One replica is larger than a worker pod of every allowed instance type.",
                             "Lower the stage's request, or allow a larger instance type.")
WORKER_DOES_NOT_FIT = _reason("WorkerDoesNotFit", Kind.FAILURE, _RENDERED,
                              "spec.workers or spec.cpuWorkers asks for a pod larger than its instance type offers.",
                              "Lower the pod's size, or allow a larger instance type.")
NAME_CONFLICT = _reason("NameConflict", Kind.FAILURE, _RENDERED,
                        "A RayService of this name exists and is not controlled by this BerniniDeployment.",
                        "Rename one of them; the operator never takes over an object it did not create.")
APPLY_REFUSED = _reason("ApplyRefused", Kind.FAILURE, _RENDERED,
                        "The API server refused the RayService (admission, quota, validation); the message is its own.",
                        "Fix what the message names.", retried=True)
RAYSERVICE_API_MISSING = _reason("RayServiceAPIMissing", Kind.FAILURE, _RENDERED,
                                 "The cluster does not serve ray.io/v1 RayService.", "Install the KubeRay operator.",
                                 retried=True)
UPGRADE_ABANDONED = _reason("UpgradeAbandoned", Kind.FAILURE, _RENDERED,
                            "The new version's cluster did not serve within spec.upgradeStrategy.deadlineSeconds: "
                            "the RayService went back to the version that serves, and KubeRay deletes the new "
                            "cluster and its pods.",
                            "Fix what the message names (the pods' or Serve's reason); any change of the spec "
                            "starts a new upgrade.")

INIT_CONTAINER_FAILED = _reason("InitContainerFailed", Kind.FAILURE, _PODS,
                                "A worker's artifact pull exited non-zero (a checksum, the store, the disk).",
                                "The message carries the pull's last line; `bernini status` the pods.")
CONTAINER_FAILED = _reason("ContainerFailed", Kind.FAILURE, _PODS, "A Ray container exited non-zero.",
                           "Read the message and the pod's logs.")
POD_FAILED = _reason("PodFailed", Kind.FAILURE, _PODS, "A pod of the RayService's clusters is in phase Failed.",
                     "Read the message (eviction, node loss).")
# Kubernetes' waiting reasons that do not clear on their own, passed through as they are.
STUCK_WAITING = tuple(
    _reason(name, Kind.FAILURE, _PODS, f"A container is waiting: {name} (Kubernetes' own reason).", action)
    for name, action in (
        ("CrashLoopBackOff", "Read the container's logs."),
        ("ImagePullBackOff", "Check spec.runtime.image and the node's access to the registry."),
        ("ErrImagePull", "Check spec.runtime.image and the node's access to the registry."),
        ("ErrImageNeverPull", "The image is not on the node and its pull policy is Never."),
        ("InvalidImageName", "Fix spec.runtime.image."),
        ("CreateContainerConfigError", "A Secret, ConfigMap or field the pod refers to is missing."),
        ("CreateContainerError", "Read the message; the runtime could not create the container."),
        ("RunContainerError", "Read the message; the runtime could not start the container."),
    )
)

PREWARM_NAME_CONFLICT = _reason("PrewarmNameConflict", Kind.FAILURE, (EVENT,),
                                "A DaemonSet with the pre-warm's name exists and is not ours; it is left alone.",
                                "Rename or remove that DaemonSet; pre-warm is skipped meanwhile.")
PREWARM_REFUSED = _reason("PrewarmRefused", Kind.FAILURE, (EVENT,),
                          "The API server refused the pre-warm DaemonSet; serving is not affected, and it is not "
                          "tried again until the spec changes.", "Fix what the message names.")
UPGRADE_NOT_GIVEN_BACK = _reason("UpgradeNotGivenBack", Kind.FAILURE, (EVENT,),
                                 "An upgrade passed its deadline, but status holds no record of the serving spec "
                                 "that matches the serving RayCluster: nothing was rolled back.",
                                 "Revert the spec by hand; the new cluster holds its accelerators until then.")
STATUS_REFUSED = _reason("StatusRefused", Kind.FAILURE, (EVENT,),
                         "The API server refused the status patch; the previous status stays.",
                         "Usually an outdated CRD: apply crds/ again.", retried=True)

_BY_NAME = {reason: reason for reason in ALL}

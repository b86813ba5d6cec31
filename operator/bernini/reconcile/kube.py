"""The operator's only Kubernetes I/O: read and server-side apply RayServices, apply and delete the pre-warm
DaemonSet, list the pods of starting RayClusters, patch status, post events."""

import datetime
import json
import os
from collections.abc import Callable
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from bernini.api import GROUP, PLURAL, VERSION, reasons
from bernini.api.reasons import Cause
from bernini.reconcile.conditions import bounded
from bernini.reconcile.metrics import API_WRITES
from bernini.render.names import MANAGER

RAY_GROUP, RAY_VERSION, RAY_PLURAL = "ray.io", "v1", "rayservices"
# (connect, read) seconds for every call, and no retries (urllib3 retries a read three times by default): a
# half-open connection to the API server holds a worker this long at most; the reconcile's back-off retries.
REQUEST_TIMEOUT = (5.0, 15.0)


def api_client() -> client.ApiClient:
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        # Named here: the client reads $KUBECONFIG once, at import, for its default.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
    configuration.retries = False
    api = client.ApiClient(configuration)
    api.user_agent = MANAGER  # audit logs and API priority and fairness see who calls
    return api


def namespace_is_terminating(error: BaseException) -> bool:
    """The API server's answer to a create in a namespace being deleted: expected when the garbage collector
    removed the RayService before its BerniniDeployment went; the deletion ends the matter."""
    return isinstance(error, ApiException) and error.status == 403 and "is being terminated" in str(error.body)


def refusal(error: BaseException) -> Cause | None:
    """The reason and the API server's message when a write was refused for a reason that retrying soon will not
    change (admission denial, invalid object, forbidden, the RayService API not served); None otherwise."""
    if not isinstance(error, ApiException) or error.status not in (400, 403, 404, 422):
        return None
    if namespace_is_terminating(error):
        return None  # not a refusal to report: the reconcile ends quietly (Controller._work)
    try:
        message = json.loads(error.body)["message"]
    except (TypeError, ValueError, KeyError):
        message = None  # not a Status object: the path itself is not served
    if error.status == 404:
        if message is None or "could not find the requested resource" in message:
            return Cause(reasons.RAYSERVICE_API_MISSING, f"{RAY_GROUP}/{RAY_VERSION} RayService is not served here: install KubeRay")
        return None  # the namespace went away: the deletion ends the matter
    return Cause(reasons.APPLY_REFUSED, bounded(message or f"{error.status} {error.reason}"))


class NotLeading(Exception):
    """A write was about to be sent while this replica's leadership is in doubt: it is not sent."""


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kube:
    def __init__(self, api: client.ApiClient, request_timeout: tuple[float, float] = REQUEST_TIMEOUT):
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.timeout = request_timeout
        self.may_write: Callable[[], bool] = lambda: True  # the elector's leading(), when there is one

    def _writing(self, verb: str, resource: str) -> None:
        """Checked right before every write: a replica that cannot prove it still leads sends nothing."""
        if not self.may_write():
            raise NotLeading(f"{verb} {resource}: leadership is in doubt")
        API_WRITES.labels(verb, resource).inc()

    def _read(self, group: str, version: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return self.custom.get_namespaced_custom_object(group, version, namespace, plural, name,
                                                          _request_timeout=self.timeout)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def read_rayservice(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read(RAY_GROUP, RAY_VERSION, RAY_PLURAL, namespace, name)

    def read_raycluster(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read(RAY_GROUP, RAY_VERSION, "rayclusters", namespace, name)

    def read_gateway(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read("gateway.networking.k8s.io", "v1", "gateways", namespace, name)

    def patch_raycluster(self, namespace: str, name: str, operations: list[dict[str, Any]]) -> None:
        """A JSON patch of a RayCluster KubeRay made for our RayService (its worker groups' bounds)."""
        self._writing("patch", "rayclusters")
        self.custom.patch_namespaced_custom_object(
            RAY_GROUP, RAY_VERSION, namespace, "rayclusters", name, operations,
            _content_type="application/json-patch+json", _preload_content=False, _request_timeout=self.timeout)

    def clear_pending_cluster(self, namespace: str, name: str, uid: str, pending: str) -> None:
        """Remove pendingServiceStatus from our RayService's status (render/rollback.py): a JSON patch that holds
        only while the object is the one of uid and still names that pending cluster. KubeRay writes its status
        with an update, which a change in between makes fail, so it reads this before it writes again."""
        self._writing("patch", "rayservices/status")
        self.custom.patch_namespaced_custom_object_status(
            RAY_GROUP, RAY_VERSION, namespace, RAY_PLURAL, name,
            [{"op": "test", "path": "/metadata/uid", "value": uid},
             {"op": "test", "path": "/status/pendingServiceStatus/rayClusterName", "value": pending},
             {"op": "remove", "path": "/status/pendingServiceStatus"}],
            _content_type="application/json-patch+json", _preload_content=False, _request_timeout=self.timeout)

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        response = self.core.list_namespaced_pod(namespace, label_selector=label_selector, _preload_content=False,
                                             _request_timeout=self.timeout)
        return json.loads(response.data)["items"]

    def create_rayservice(self, desired: dict[str, Any]) -> dict[str, Any]:
        """A POST: it creates or is refused (409 AlreadyExists), so nothing of ours is ever merged into a RayService
        of that name, someone else's, whatever fields it has. An apply would merge into one it shares no field
        with, and an apply carrying a uid is refused when there is no object."""
        self._writing("create", "rayservices")
        response = self.custom.create_namespaced_custom_object(
            RAY_GROUP, RAY_VERSION, desired["metadata"]["namespace"], RAY_PLURAL, desired, field_manager=MANAGER,
            _preload_content=False, _request_timeout=self.timeout)
        return json.loads(response.data)

    def own_as_applier(self, live: dict[str, Any]) -> None:
        """Before the first apply onto a RayService our create made: its fields belong to our manager's Update
        entry, and server-side apply removes a field its applier stops applying only if no other entry owns it.
        Renaming that entry to Apply (a JSON patch guarded by the uid and the entry) makes them the applier's.
        Nothing to do once done, or for a RayService first made by an apply. Another manager's apply in between
        moves our entry (the API server sorts them): the guard fails, and it is found again once."""
        metadata = live["metadata"]
        for attempt in (1, 2):
            entries = live["metadata"].get("managedFields") or []
            mine = [(i, e) for i, e in enumerate(entries) if e.get("manager") == MANAGER and not e.get("subresource")]
            if any(e.get("operation") == "Apply" for _, e in mine) or not mine:
                return
            at = f"/metadata/managedFields/{mine[0][0]}"
            self._writing("patch", "rayservices")
            try:
                self.custom.patch_namespaced_custom_object(
                    RAY_GROUP, RAY_VERSION, metadata["namespace"], RAY_PLURAL, metadata["name"],
                    [{"op": "test", "path": "/metadata/uid", "value": metadata["uid"]},
                     {"op": "test", "path": f"{at}/manager", "value": MANAGER},
                     {"op": "test", "path": f"{at}/operation", "value": "Update"},
                     {"op": "replace", "path": f"{at}/operation", "value": "Apply"}],
                    _content_type="application/json-patch+json", _preload_content=False, _request_timeout=self.timeout)
                return
            except ApiException as error:
                if error.status != 422 or attempt == 2:
                    raise
                live = self.read_rayservice(metadata["namespace"], metadata["name"]) or live
                if live["metadata"].get("uid") != metadata["uid"]:
                    raise

    def apply_rayservice(self, desired: dict[str, Any], uid: str) -> dict[str, Any]:
        """Server-side apply with our field manager onto the live object of uid, which we checked we control: it
        fails (uid is immutable) if another object replaced it meanwhile, and force takes back only fields a hand
        edit of our own object claimed."""
        metadata = {**desired["metadata"], "uid": uid}
        self._writing("apply", "rayservices")
        response = self.custom.patch_namespaced_custom_object(
            RAY_GROUP, RAY_VERSION, metadata["namespace"], RAY_PLURAL, metadata["name"], {**desired, "metadata": metadata},
            field_manager=MANAGER, force=True, _content_type="application/apply-patch+yaml",
            _preload_content=False,  # the generated client drops apply responses; decode them ourselves
            _request_timeout=self.timeout,
        )
        return json.loads(response.data)

    def read_daemonset(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            response = self.apps.read_namespaced_daemon_set(name, namespace, _preload_content=False,
                                                            _request_timeout=self.timeout)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return json.loads(response.data)

    def apply_daemonset(self, desired: dict[str, Any], uid: str | None) -> None:
        """Server-side apply of our pre-warm DaemonSet; uid as for apply_rayservice: forced only onto the live
        object we checked is ours, a create otherwise (a tenant's DaemonSet of that name is never taken over)."""
        metadata = desired["metadata"]
        if uid:
            desired = {**desired, "metadata": {**metadata, "uid": uid}}
        self._writing("apply", "daemonsets")
        response = self.apps.patch_namespaced_daemon_set(
            metadata["name"], metadata["namespace"], desired, field_manager=MANAGER, force=bool(uid),
            _content_type="application/apply-patch+yaml", _preload_content=False, _request_timeout=self.timeout,
        )
        response.data

    def delete_daemonset(self, namespace: str, name: str, uid: str) -> bool:
        """Delete it (its pods go with it) if it is still the object of that uid; False when there was none."""
        self._writing("delete", "daemonsets")
        try:
            self.apps.delete_namespaced_daemon_set(
                name, namespace, body=client.V1DeleteOptions(propagation_policy="Background",
                                                             preconditions=client.V1Preconditions(uid=uid)),
                _preload_content=False, _request_timeout=self.timeout)
        except ApiException as error:
            if error.status in (404, 409):  # gone, or replaced by another object since we read it
                return False
            raise
        return True

    def read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read(GROUP, VERSION, PLURAL, namespace, name)

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self._writing("patch", "berninideployments/status")
        response = self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status},
            field_manager=MANAGER, _content_type="application/merge-patch+json",
            _preload_content=False, _request_timeout=self.timeout,
        )
        response.data  # read (frees the connection) but never decode: the watch brings the object back

    def post_event(self, body: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        self._writing("create", "events")
        metadata = body["metadata"]
        timestamp = datetime.datetime.now(datetime.timezone.utc)
        self.core.create_namespaced_event(
            metadata["namespace"],
            client.CoreV1Event(
                metadata=client.V1ObjectMeta(generate_name=f"{metadata['name']}."),
                involved_object=client.V1ObjectReference(
                    api_version=body["apiVersion"], kind=body["kind"], name=metadata["name"],
                    namespace=metadata["namespace"], uid=metadata["uid"],
                    resource_version=metadata.get("resourceVersion"),
                ),
                type=event_type,
                reason=reason,
                message=bounded(message),
                first_timestamp=timestamp,
                last_timestamp=timestamp,
                count=1,
                source=client.V1EventSource(component=MANAGER),
                reporting_component=MANAGER,
            ),
            _request_timeout=self.timeout,
        )

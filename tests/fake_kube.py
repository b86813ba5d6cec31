"""FAKE Kubernetes API server, in memory: exactly the calls the operator's `Kube` makes, and no others.

Why: the controller's decisions (pre-warm, converge conflicts, refused writes, leadership, policy, preflight)
then run in milliseconds instead of seconds against a control plane. The real-API-server tests in
tests/integration stay the proof that the API server answers as this fake says it does.

The fake replaces the generated API objects of a real `Kube` (its .custom, .core and .apps), so `Kube` itself
(its leadership check, its uid and force rules, its error handling) runs as in production. It models:
- server-side apply with field managers: a field another manager set to a different value conflicts (409)
  unless the apply is forced; a uid in the applied object that differs from the live one is refused (422);
- a create (POST) refused when the name is taken (409 AlreadyExists); managedFields entries as (manager,
  operation) only: Update for a create, Apply for an apply;
- the status subresource's JSON merge patch; delete with a uid precondition (409 when it differs);
- a JSON patch of the `test`, `add`, `replace` and `remove` operations (a failed test is 422, as the API server
  answers), of an object or of its status subresource (which changes nothing outside .status);
- creates in a terminating namespace refused (403 "... is being terminated"), as NamespaceLifecycle does;
- admission denying writes of a resource (`deny`), and a resource that is not served (`unserve`).
Simplified: lists are atomic values (SSA merges some by key), a field its manager stops applying stays, and
the status is nobody's field.
"""

import copy
import itertools
import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bernini.reconcile.kube import Kube

Key = tuple[str, str, str]  # (resource, namespace, name)
PLURALS = {"BerniniDeployment": "berninideployments", "RayService": "rayservices", "RayCluster": "rayclusters",
           "DaemonSet": "daemonsets", "Pod": "pods", "Gateway": "gateways"}
APPLY = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
_SYSTEM_FIELDS = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace"), ("metadata", "uid"),
                  ("metadata", "managedFields")}


def status_error(code: int, reason: str, message: str) -> ApiException:
    """What the client raises for the API server's Status answer."""
    error = ApiException(status=code, reason=reason)
    error.body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                             "reason": reason, "code": code})
    return error


def _fields(value: Any, path: tuple = ()):
    """(path, value) of every leaf; a list is one leaf."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _fields(item, path + (key,))
    else:
        yield path, value


def _owned_fields(body: dict[str, Any]) -> dict[tuple, Any]:
    return {path: value for path, value in _fields(body)
            if path not in _SYSTEM_FIELDS and path[0] != "status"}


def _at(body: dict[str, Any], path: tuple) -> Any:
    for key in path:
        if not isinstance(body, dict) or key not in body:
            return None
        body = body[key]
    return body


def _put(body: dict[str, Any], path: tuple, value: Any) -> None:
    for key in path[:-1]:
        body = body.setdefault(key, {})
    body[path[-1]] = copy.deepcopy(value)


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386 in place: null removes, objects merge, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            if not isinstance(target.get(key), dict):
                target[key] = {}
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _response(body: dict[str, Any]) -> SimpleNamespace:
    """An answer read with _preload_content=False."""
    return SimpleNamespace(data=json.dumps(body).encode())


class FakeCluster:
    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.owners: dict[Key, dict[tuple, str]] = {}  # field path -> the manager that set it last
        self.events: list[dict[str, Any]] = []
        self.writes: list[tuple[str, str, str]] = []  # (verb, resource, name) of every write that succeeded
        self.reads: list[tuple[str, str]] = []  # (resource, name) of every read
        self.terminating: set[str] = set()
        self.denied: dict[str, str] = {}  # resource (e.g. "rayservices", "berninideployments/status") -> message
        self.unserved: set[str] = set()
        self._next_write: list[Callable[[], None]] = []
        self._serial = itertools.count(1)
        self.api_client = client.ApiClient()  # never connects: Kube's constructor and the models' serializer
        self.custom, self.core, self.apps = _CustomObjects(self), _Core(self), _Apps(self)

    def kube(self) -> Kube:
        """A real Kube whose API calls reach this fake."""
        kube = Kube(self.api_client)
        kube.custom, kube.core, kube.apps = self.custom, self.core, self.apps
        return kube

    # -- what other clients do: tenants, kubectl, KubeRay, the namespace controller ---------------

    def create(self, body: dict[str, Any], manager: str = "kubectl") -> dict[str, Any]:
        resource, metadata = PLURALS[body["kind"]], body["metadata"]
        self._admit_create(resource, metadata["namespace"], metadata["name"])
        return self._store_new(resource, copy.deepcopy(body), manager)

    def edit(self, resource: str, namespace: str, name: str, patch: dict[str, Any], manager: str = "kubectl") -> None:
        """A merge patch by another client, which then owns the fields it set."""
        live = self.objects[(resource, namespace, name)]
        spec_before = copy.deepcopy(live.get("spec"))
        merge_patch(live, patch)
        self.owners[(resource, namespace, name)].update(dict.fromkeys(_owned_fields(patch), manager))
        self._bump(live, spec_before)

    def delete(self, resource: str, namespace: str, name: str) -> None:
        del self.objects[(resource, namespace, name)]
        del self.owners[(resource, namespace, name)]

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get((resource, namespace, name)))

    def listed(self, resource: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(body) for (kind, _, _), body in self.objects.items() if kind == resource]

    def managers(self, resource: str, namespace: str, name: str) -> set[str]:
        return set(self.owners[(resource, namespace, name)].values())

    def events_for(self, reason: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["reason"] == reason]

    def deny(self, resource: str, message: str) -> None:
        """Admission (e.g. a ValidatingAdmissionPolicy) refuses creates and updates of resource until allow()."""
        self.denied[resource] = message

    def allow(self, resource: str) -> None:
        del self.denied[resource]

    def unserve(self, resource: str) -> None:
        """Its CRD is not installed (KubeRay's, say): every call about it is 404 without a Status of the object."""
        self.unserved.add(resource)

    def terminate(self, namespace: str) -> None:
        self.terminating.add(namespace)

    def just_before_next_write(self, action: Callable[[], None]) -> None:
        """action() runs as the next create, apply or JSON patch arrives: another client's write landing
        between the operator's read and its write."""
        self._next_write.append(action)

    # -- the API server's side ---------------------------------------------------------------------

    def _store_new(self, resource: str, body: dict[str, Any], manager: str, operation: str = "Update") -> dict[str, Any]:
        metadata = body["metadata"]
        number = next(self._serial)
        metadata.update(uid=f"uid-{number}", resourceVersion=str(number), generation=1,
                        managedFields=[{"manager": manager, "operation": operation}])
        key = (resource, metadata["namespace"], metadata["name"])
        self.objects[key] = body
        self.owners[key] = dict.fromkeys(_owned_fields(body), manager)
        return copy.deepcopy(body)

    def _bump(self, live: dict[str, Any], spec_before: Any) -> None:
        metadata = live["metadata"]
        metadata["resourceVersion"] = str(next(self._serial))
        if live.get("spec") != spec_before:
            metadata["generation"] += 1

    def _served(self, resource: str) -> None:
        if resource.split("/")[0] in self.unserved:
            raise status_error(404, "NotFound", "the server could not find the requested resource")

    def _admit(self, resource: str, name: str) -> None:
        if resource in self.denied:
            raise status_error(422, "Invalid", f'{resource} "{name}" is forbidden: ValidatingAdmissionPolicy '
                                               f"denied request: {self.denied[resource]}")

    def _admit_create(self, resource: str, namespace: str, name: str) -> None:
        if namespace in self.terminating:
            raise status_error(403, "Forbidden", f'{resource} "{name}" is forbidden: unable to create new content '
                                                 f"in namespace {namespace} because it is being terminated")
        self._admit(resource, name)

    def read(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        self.reads.append((resource, name))
        self._served(resource)
        live = self.get(resource, namespace, name)
        if live is None:
            raise status_error(404, "NotFound", f'{resource} "{name}" not found')
        return live

    def apply(self, resource: str, desired: dict[str, Any], manager: str, force: bool) -> dict[str, Any]:
        while self._next_write:
            self._next_write.pop(0)()
        self._served(resource)
        metadata = desired["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        key = (resource, namespace, name)
        live = self.objects.get(key)
        if live is None:
            if metadata.get("uid"):
                raise status_error(409, "Conflict", f'Operation cannot be fulfilled on {resource} "{name}": uid '
                                                    f'mismatch: the provided object specified uid {metadata["uid"]}, '
                                                    "and no existing object was found")
            self._admit_create(resource, namespace, name)
            applied = self._store_new(resource, copy.deepcopy(desired), manager, operation="Apply")
        else:
            if metadata.get("uid") and metadata["uid"] != live["metadata"]["uid"]:
                raise status_error(422, "Invalid", f'{resource} "{name}" is invalid: metadata.uid: Invalid value: '
                                                   f'"{metadata["uid"]}": field is immutable')
            fields, owners = _owned_fields(desired), self.owners[key]
            conflicts = [path for path, value in fields.items()
                         if owners.get(path, manager) != manager and _at(live, path) != value]
            if conflicts and not force:
                listed = "; ".join(f'conflict with "{owners[path]}": .{".".join(path)}' for path in conflicts)
                raise status_error(409, "Conflict", f"Apply failed with {len(conflicts)} conflicts: {listed}")
            self._admit(resource, name)
            spec_before = copy.deepcopy(live.get("spec"))
            for path, value in fields.items():
                _put(live, path, value)
                owners[path] = manager
            entries = live["metadata"].setdefault("managedFields", [])
            if {"manager": manager, "operation": "Apply"} not in entries:
                entries.append({"manager": manager, "operation": "Apply"})
            self._bump(live, spec_before)
            applied = copy.deepcopy(live)
        self.writes.append(("apply", resource, name))
        return applied

    def post(self, resource: str, body: dict[str, Any], manager: str) -> dict[str, Any]:
        while self._next_write:
            self._next_write.pop(0)()
        self._served(resource)
        metadata = body["metadata"]
        self._admit_create(resource, metadata["namespace"], metadata["name"])  # admission answers before storage
        if (resource, metadata["namespace"], metadata["name"]) in self.objects:
            raise status_error(409, "AlreadyExists", f'{resource} "{metadata["name"]}" already exists')
        created = self._store_new(resource, copy.deepcopy(body), manager)
        self.writes.append(("create", resource, metadata["name"]))
        return created

    def patch_status(self, resource: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self._served(resource)
        live = self.objects.get((resource, namespace, name))
        if live is None:
            raise status_error(404, "NotFound", f'{resource} "{name}" not found')
        self._admit(f"{resource}/status", name)
        merge_patch(live, patch)
        self._bump(live, live.get("spec"))
        self.writes.append(("patch", f"{resource}/status", name))
        return copy.deepcopy(live)

    def json_patch(self, resource: str, namespace: str, name: str, operations: list[dict[str, Any]],
                   subresource: str = "") -> dict[str, Any]:
        while self._next_write:
            self._next_write.pop(0)()
        self._served(resource)
        live = self.objects.get((resource, namespace, name))
        if live is None:
            raise status_error(404, "NotFound", f'{resource} "{name}" not found')
        patched = copy.deepcopy(live)
        for operation in operations:
            *parents, last = [int(part) if part.isdigit() else part for part in operation["path"].split("/")[1:]]
            target = patched
            for part in parents:
                target = target[part]
            present = last in target if isinstance(target, dict) else last < len(target)
            if operation["op"] in ("test", "replace", "remove") and not present or (
                    operation["op"] == "test" and target[last] != operation["value"]):
                raise status_error(422, "Invalid", f"the server rejected our request: test failed at {operation['path']}")
            assert operation["op"] in ("test", "add", "replace", "remove"), "FAKE: no move or copy"
            if operation["op"] in ("add", "replace"):
                target[last] = operation["value"]
            elif operation["op"] == "remove":
                del target[last]
        if subresource == "status":  # the status subresource writes nothing else
            patched = {**live, "status": patched.get("status", {})}
        self._admit(f"{resource}/{subresource}" if subresource else resource, name)
        spec_before = copy.deepcopy(live.get("spec"))
        live.clear()
        live.update(patched)
        self._bump(live, spec_before)
        self.writes.append(("patch", f"{resource}/{subresource}" if subresource else resource, name))
        return copy.deepcopy(live)

    def delete_with_uid(self, resource: str, namespace: str, name: str, uid: str) -> None:
        live = self.objects.get((resource, namespace, name))
        if live is None:
            raise status_error(404, "NotFound", f'{resource} "{name}" not found')
        if live["metadata"]["uid"] != uid:
            raise status_error(409, "Conflict", f"Precondition failed: UID in precondition: {uid}, "
                                                f"UID in object meta: {live['metadata']['uid']}")
        self.delete(resource, namespace, name)
        self.writes.append(("delete", resource, name))

    def post_event(self, namespace: str, event: dict[str, Any]) -> None:
        self._admit_create("events", namespace, event["metadata"]["generateName"])
        self.events.append(event)
        self.writes.append(("create", "events", event["reason"]))

    def pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """label_selector of the one form the operator sends: `key in (a,b)`."""
        label, _, values = label_selector.partition(" in ")
        wanted = set(values.strip("()").split(","))
        return [pod for pod in self.listed("pods") if pod["metadata"]["namespace"] == namespace
                and pod["metadata"].get("labels", {}).get(label) in wanted]


class _CustomObjects:
    """client.CustomObjectsApi, as far as Kube calls it."""

    def __init__(self, cluster: FakeCluster):
        self.cluster = cluster

    def get_namespaced_custom_object(self, group, version, namespace, plural, name, _request_timeout=None):
        return self.cluster.read(plural, namespace, name)

    def create_namespaced_custom_object(self, group, version, namespace, plural, body, field_manager, _preload_content,
                                        _request_timeout):
        assert body["metadata"]["namespace"] == namespace
        return _response(self.cluster.post(plural, body, field_manager))

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body, _content_type,
                                       _preload_content, _request_timeout, field_manager=None, force=None):
        if _content_type == JSON_PATCH:
            return _response(self.cluster.json_patch(plural, namespace, name, body))
        assert _content_type == APPLY and (body["metadata"]["namespace"], body["metadata"]["name"]) == (namespace, name)
        return _response(self.cluster.apply(plural, body, field_manager, force))

    def patch_namespaced_custom_object_status(self, group, version, namespace, plural, name, body, _content_type,
                                              _preload_content, _request_timeout, field_manager=None):
        if _content_type == JSON_PATCH:
            return _response(self.cluster.json_patch(plural, namespace, name, body, "status"))
        assert _content_type == MERGE_PATCH and set(body) == {"status"}
        return _response(self.cluster.patch_status(plural, namespace, name, body))


class _Apps:
    """client.AppsV1Api, as far as Kube calls it."""

    def __init__(self, cluster: FakeCluster):
        self.cluster = cluster

    def read_namespaced_daemon_set(self, name, namespace, _preload_content, _request_timeout):
        return _response(self.cluster.read("daemonsets", namespace, name))

    def patch_namespaced_daemon_set(self, name, namespace, body, field_manager, force, _content_type,
                                    _preload_content, _request_timeout):
        assert _content_type == APPLY and (body["metadata"]["namespace"], body["metadata"]["name"]) == (namespace, name)
        return _response(self.cluster.apply("daemonsets", body, field_manager, force))

    def delete_namespaced_daemon_set(self, name, namespace, body, _preload_content, _request_timeout):
        self.cluster.delete_with_uid("daemonsets", namespace, name, body.preconditions.uid)
        return _response({"kind": "Status", "status": "Success"})


class _Core:
    """client.CoreV1Api, as far as Kube calls it."""

    def __init__(self, cluster: FakeCluster):
        self.cluster = cluster

    def list_namespaced_pod(self, namespace, label_selector, _preload_content, _request_timeout):
        return _response({"items": self.cluster.pods(namespace, label_selector)})

    def create_namespaced_event(self, namespace, body, _request_timeout):
        self.cluster.post_event(namespace, self.cluster.api_client.sanitize_for_serialization(body))

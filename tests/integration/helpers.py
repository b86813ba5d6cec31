"""Reading BerniniDeployments, their conditions, Events and RayServices from the real API server."""

from bernini.api import GROUP, PLURAL, VERSION


def _create(custom, namespace, body):
    return custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def _get(custom, namespace, name="bernini"):
    return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def _condition(body, condition_type):
    for condition in body.get("status", {}).get("conditions", []):
        if condition["type"] == condition_type:
            return condition
    return {}


def _rayservice(custom, namespace, name="bernini"):
    items = custom.list_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", field_selector=f"metadata.name={name}")["items"]
    return items[0] if items else None


def _events(core, namespace, reason):
    return [e for e in core.list_namespaced_event(namespace, field_selector="involvedObject.kind=BerniniDeployment").items
            if e.reason == reason]

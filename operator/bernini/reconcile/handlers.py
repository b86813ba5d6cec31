"""kopf wiring: watch BerniniDeployments and owned RayServices, feed the controller's queue.

Only event handlers are used: kopf's timers and daemons add a finalizer to every object, and its
create/update handlers write bookkeeping annotations; the controller's own resync needs neither.
"""

import logging
from typing import Any

import kopf
from prometheus_client import REGISTRY

from bernini.api import GROUP, PLURAL, VERSION
from bernini.artifacts.preflight import ManifestReader
from bernini.reconcile.controller import Controller
from bernini.reconcile.metrics import DeploymentsByReady
from bernini.reconcile.kube import RAY_GROUP, RAY_PLURAL, RAY_VERSION, Kube, api_client
from bernini.render.names import MANAGER

OPTIONS: dict[str, Any] = {"workers": 4, "resync_seconds": 60.0}
_controller: Controller | None = None


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _controller
    # Handler chatter stays in logs; only our condition transitions and real errors become Events.
    settings.posting.level = logging.ERROR
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    # No watch on CustomResourceDefinitions: least privilege. CRDs installed after start (KubeRay's)
    # are noticed on the next operator restart.
    settings.scanning.disabled = True
    _controller = Controller(Kube(api_client()), ManifestReader(), **OPTIONS)
    REGISTRY.register(DeploymentsByReady(lambda: _controller.deployments.values()))
    _controller.start()


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    if _controller:
        await _controller.stop()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def deployment_event(event: dict[str, Any], **_: Any) -> None:
    _controller.observe_deployment(event.get("type"), event["object"])


@kopf.on.event(RAY_GROUP, RAY_VERSION, RAY_PLURAL, labels={"app.kubernetes.io/managed-by": MANAGER})
async def rayservice_event(event: dict[str, Any], **_: Any) -> None:
    _controller.observe_rayservice(event.get("type"), event["object"])


@kopf.on.probe(id="queue")
def queue_depth(**_: Any) -> int:
    return len(_controller.queue) if _controller else 0

"""kopf wiring: watch BerniniDeployments, owned RayServices and their RayClusters, feed the controller's queue.

Only event handlers are used: kopf's timers and daemons add a finalizer to every object, and its
create/update handlers write bookkeeping annotations; the controller's own resync needs neither.
The controller arrives through kopf's memo, so one process can run differently configured operators; with
an elector in the memo (and the operator's stop_flag) it starts only once elected.
"""

import asyncio
import logging
from typing import Any

import kopf

from bernini.api import GROUP, PLURAL, VERSION
from bernini.api.kuberay import ORIGINATED_FROM_CRD
from bernini.reconcile.controller import Controller
from bernini.reconcile.kube import RAY_GROUP, RAY_PLURAL, RAY_VERSION
from bernini.reconcile.leader import LeaderElector
from bernini.render.names import MANAGER

RAY_CLUSTERS = "rayclusters"


class NoEssence(kopf.DiffBaseStorage):
    """kopf builds each event's "essence" (a deep copy of the object, then another to clear it) to find changes
    for create/update handlers; with event handlers alone it decides nothing. Measured in a 5,000-object burst:
    17.6% of the operator's CPU."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


def registry() -> kopf.OperatorRegistry:
    """A fresh set of handlers; each reads the controller from kopf's memo (memo["controller"])."""
    handlers = kopf.OperatorRegistry()

    @kopf.on.login(registry=handlers)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)  # the kubernetes client's kubeconfig or in-cluster account

    @kopf.on.startup(registry=handlers)
    async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        # Handler chatter stays in logs; only our condition transitions and real errors become Events.
        settings.posting.level = logging.ERROR
        settings.persistence.diffbase_storage = NoEssence()
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        # A restart (or a relist after 410 Gone) over thousands of objects reads them in pages, not one body.
        settings.watching.chunk_size = 500
        settings.networking.request_timeout = 30
        settings.networking.connect_timeout = 5
        # No watch on CustomResourceDefinitions: least privilege. CRDs installed after start (KubeRay's)
        # are noticed on the next operator restart.
        settings.scanning.disabled = True
        # Only RayClusters made for our RayServices are streamed, not every one in the cluster; one whose labels
        # stop matching arrives as DELETED.
        settings.watching.label_selectors[RAY_GROUP, RAY_CLUSTERS] = \
            f"app.kubernetes.io/managed-by={MANAGER},{ORIGINATED_FROM_CRD}=RayService"
        # kopf logs "Handler ... succeeded" at INFO for every watch event: most of the log, and of the CPU,
        # in a burst. Handler failures still log at ERROR.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        elector: LeaderElector | None = memo.get("elector")
        if elector is None:
            _controller(memo).start()
            return

        async def elected() -> None:
            _controller(memo).start()

        async def lost() -> None:  # stop writing at once; exiting lets the Deployment restart us as a standby
            await _controller(memo).stop()
            memo["stop_flag"].set()
        # Until elected, the watches fill the cache and the queue, and nothing is written.
        memo["election"] = asyncio.create_task(elector.run(elected, lost))

    @kopf.on.cleanup(registry=handlers)
    async def stop(memo: kopf.Memo, **_: Any) -> None:
        try:
            if "election" in memo:
                memo["election"].cancel()
            await _controller(memo).stop()
            if memo.get("elector"):
                await asyncio.to_thread(memo["elector"].release)  # bounded by the election client's timeouts
        finally:
            if "stop_flag" in memo:
                # kopf waits for its stop flag on an executor thread; a signal stops kopf without setting it, and
                # asyncio then waits for that thread at exit: SIGTERM ended only in SIGKILL, a pod's whole grace
                # period.
                memo["stop_flag"].set()

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=handlers)
    async def deployment_event(event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
        _controller(memo).observe_deployment(event.get("type"), event["object"])

    @kopf.on.event(RAY_GROUP, RAY_VERSION, RAY_PLURAL, labels={"app.kubernetes.io/managed-by": MANAGER},
                   registry=handlers)
    async def rayservice_event(event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
        _controller(memo).observe_rayservice(event.get("type"), event["object"])

    # Selected by the API server (see start): KubeRay copies the RayService's labels to the RayClusters it makes.
    @kopf.on.event(RAY_GROUP, RAY_VERSION, RAY_CLUSTERS, registry=handlers)
    async def raycluster_event(event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
        _controller(memo).observe_raycluster(event.get("type"), event["object"])

    @kopf.on.probe(id="queue", registry=handlers)
    async def queue_depth(memo: kopf.Memo, **_: Any) -> int:
        controller = _controller(memo)
        stuck = controller.stuck()
        if stuck:  # liveness fails (HTTP 500): a restart frees the worker
            raise kopf.PermanentError(f"{len(stuck)} reconcile(s) running for over {controller.stuck_seconds:g}s, "
                                      f"e.g. {'/'.join(stuck[0])}")
        return len(controller.queue)

    return handlers


def _controller(memo: kopf.Memo) -> Controller:
    return memo["controller"]

"""Two differently configured controllers in one process (python -m tests.integration.two_operators NS_A NS_B):
each watches one namespace; prints what each saw once both RayServices exist. Run by test_operator.py with
KUBECONFIG and the store's credentials in the environment."""

import asyncio
import json
import sys

import kopf

from bernini.artifacts.preflight import ManifestReader
from bernini.reconcile import handlers
from bernini.reconcile.controller import Controller
from bernini.reconcile.policy import Policy
from bernini.reconcile.kube import Kube, api_client


LOCAL_STORE = Policy(allow_http_endpoints=True)  # versitygw on plain http over loopback


async def main(namespaces: list[str]) -> dict:
    controllers = {namespace: Controller(Kube(api_client()), ManifestReader(), workers=workers, resync_seconds=resync,
                                        policy=LOCAL_STORE)
                   for namespace, workers, resync in zip(namespaces, (1, 3), (2.0, 3600.0))}
    stop = asyncio.Event()
    operators = [asyncio.create_task(kopf.operator(
        registry=handlers.registry(), memo=kopf.Memo(controller=controller), standalone=True,
        namespaces=[namespace], stop_flag=stop)) for namespace, controller in controllers.items()]
    try:
        async with asyncio.timeout(60):
            while not all(controller.rayservices for controller in controllers.values()):
                await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.gather(*operators)
    return {namespace: {"deployments": sorted("/".join(key) for key in controller.deployments),
                        "rayservices": sorted("/".join(key) for key in controller.rayservices),
                        "workers": controller.workers, "resync_seconds": controller.resync_seconds}
            for namespace, controller in controllers.items()}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1:3]))))

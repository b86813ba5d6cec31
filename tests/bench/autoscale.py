"""make bench-autoscale: how soon Serve decides to add a Diffusion replica once load arrives, with the operator's
rendered autoscaling (spec defaults) against the same config on Serve's own 30 s look-back window.

One real Ray head; the two configs are deployed in turn on it (interleaved rounds). Each round starts from one
replica that has been at rest for a whole Serve window, then 4 clients post back to back until Serve's controller
reports the upscale decision (the Diffusion deployment UPSCALING). The new replica's start is not counted:
make bench-e2e measures that on real pods. Medians of --runs.
"""

import argparse
import copy
import shutil
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from localdev.ray_head import RayHead
from localdev.waiting import wait_for
from tests.bench.serve import compiled, ray_head
from tests.serve.conftest import rendered_serve_config

SERVE_DEFAULT_LOOK_BACK_S = 30.0  # ray.serve.config.AutoscalingConfig.look_back_period_s
CLIENTS = 4


def diffusion(head: RayHead) -> dict:
    return head.serve_application("bernini").get("deployments", {}).get("Diffusion", {})


def upscale_decided(head: RayHead) -> bool:
    details = diffusion(head)
    return details.get("status") == "UPSCALING" or len(details.get("replicas", [])) > 1


def seconds_to_upscale(head: RayHead, config: dict) -> float:
    head.deploy_serve(config)
    head.wait_running("bernini")
    wait_for(lambda: len(diffusion(head).get("replicas", [])) == 1, "Diffusion back to one replica", timeout=300,
             interval=1)
    time.sleep(SERVE_DEFAULT_LOOK_BACK_S)  # both windows hold nothing but rest
    url = f"http://127.0.0.1:{head.serve_port}/?steps=20&format=obj"
    stop = threading.Event()

    def client():
        while not stop.is_set():
            request = urllib.request.Request(url, data=b'{"prompt": "load"}', method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=300) as response:
                    response.read()
            except OSError:  # a refusal (503) is load too
                pass

    clients = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    started = time.monotonic()
    for thread in clients:
        thread.start()
    try:
        wait_for(lambda: upscale_decided(head), "Serve's upscale decision", timeout=300, interval=0.25)
        return time.monotonic() - started
    finally:
        stop.set()
        for thread in clients:
            thread.join(300)


def compare(head: RayHead, artifacts: Path, runs: int) -> tuple[dict[str, list[float]], float]:
    """Seconds to the upscale decision per config, interleaved so drift hits both alike; and the upscale delay."""
    ours = rendered_serve_config(artifacts, head.serve_port, layout="staged", autoscaling={"downscaleDelaySeconds": 3})
    autoscaling = ours["applications"][0]["deployments"][0]["autoscaling_config"]
    peer = copy.deepcopy(ours)
    for deployment in peer["applications"][0]["deployments"]:
        del deployment["autoscaling_config"]["look_back_period_s"]
    configs = {f"rendered (look-back {autoscaling['look_back_period_s']:g} s)": ours,
               f"Serve's default look-back ({SERVE_DEFAULT_LOOK_BACK_S:g} s)": peer}
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(runs):
        for name, config in configs.items():
            seconds[name].append(seconds_to_upscale(head, config))
    return seconds, autoscaling["upscale_delay_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-autoscale-"))
    try:
        artifacts = compiled(work)
        with ray_head(work) as head:
            seconds, delay = compare(head, artifacts, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load start ({CLIENTS} clients) -> Serve decides to add a Diffusion replica; upscale delay {delay:g} s; "
          f"median of {args.runs}")
    for name, values in seconds.items():
        print(f"  {name:<36} {statistics.median(values):6.1f} s   (runs: {', '.join(f'{s:.1f}' for s in values)})")
    medians = [statistics.median(values) for values in seconds.values()]
    print(f"ratio rendered / Serve's default: {medians[0] / medians[1]:.2f}")


if __name__ == "__main__":
    main()

"""make bench-cost: dollars per million predictions against concurrency, one line per layout (fused, staged),
on the real-node cluster: the seed's chart.

Each layout in turn is deployed alone (examples/bernini-minimal.yaml fitted to the local nodes, which stand in
for the instance types the spec names: CPUs run the cpu-compiled graphs where inf2.xlarge would run Neuron
ones). At each concurrency level closed-loop clients send text prompts through the Serve Service's ClusterIP;
every half second the bench samples what the dashboard divides: the operator's status.cost.currentDollarsPerHour
(the recording rule bernini:cost_dollars_per_hour) and each worker group's replicas (node-hours per instance
type). $ per 1M predictions = mean $/h / (predictions per hour) * 1e6, the recording rule
bernini:dollars_per_million_predictions. Prints the table, the fused/staged ratio per level, and writes a PNG.
"""

import argparse
import statistics
import tempfile
import threading
from pathlib import Path

from kubernetes import client, config

from bernini.api import GROUP, PLURAL, VERSION
from bernini.api.kuberay import worker_pods
from bernini.cost.prices import LIST_PRICES
from bernini.domain.pipeline import LAYOUTS
from bernini.render import names
from localdev import LocalCluster
from localdev.waiting import wait_for
from tests.bench.e2e import prepared_namespace, store_and_operator
from tests.bench.figures import measure, percentile
from tests.realnodes import helpers

LEVELS = (1, 2, 4, 8, 16)
CHART = Path(".local") / "bench" / "cost-per-prediction.png"


class Sampler(threading.Thread):
    """Every half second: status.cost's $/h and the replicas of each worker group (by instance type)."""

    def __init__(self, custom, namespace: str):
        super().__init__(daemon=True)
        self.custom, self.namespace, self.stopping = custom, namespace, threading.Event()
        self.dollars: list[float] = []
        self.nodes: list[dict[str, int]] = []

    def run(self):
        while not self.stopping.wait(0.5):
            try:
                status = helpers.deployment(self.custom, self.namespace)["status"]
                clusters = self.custom.list_namespaced_custom_object("ray.io", "v1", self.namespace, "rayclusters")
            except Exception:  # noqa: BLE001  a busy API server misses a sample, not the run
                continue
            self.dollars.append(status["cost"]["currentDollarsPerHour"])
            counts: dict[str, int] = {}
            for cluster in clusters["items"]:  # counted as the operator counts them for status.cost
                for group, pods in worker_pods(cluster).items():
                    instance = names.instance_type_of_group(group)
                    counts[instance] = counts.get(instance, 0) + pods
            self.nodes.append(counts)

    def stop(self) -> tuple[float, dict[str, float]]:
        """Mean $/h and mean nodes per instance type over the samples."""
        self.stopping.set()
        self.join(30)
        types = {name for sample in self.nodes for name in sample}
        return (statistics.mean(self.dollars),
                {name: statistics.mean(sample.get(name, 0) for sample in self.nodes) for name in sorted(types)})


def hours_per_million(predictions_per_second: float) -> float:
    """Hours the deployment takes for a million predictions at this throughput."""
    return 1e6 / (predictions_per_second * 3600)


def deploy(cluster: LocalCluster, core, custom, s3, layout: str) -> str:
    namespace = f"cost-{layout}"
    body = prepared_namespace(cluster, core, s3, namespace)
    body["spec"]["layout"] = layout
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    wait_for(lambda: helpers.ready(custom, namespace), f"{layout}: Ready", timeout=900, interval=2)
    wait_for(lambda: helpers.answer(core, namespace), f"{layout}: a first mesh", timeout=300, interval=2)
    return namespace


def undeploy(core, namespace: str) -> None:
    core.delete_namespace(namespace)
    wait_for(lambda: not helpers.pods(core, namespace, "ray.io/is-ray-node=yes"), f"{namespace}: its Ray pods gone",
             timeout=300, interval=2)


def sweep(core, custom, namespace: str, requests_per_client: int) -> dict[int, dict]:
    def call():
        status = helpers.generate(core, namespace, timeout=600, file_format="obj")[0]
        if status != 200:
            raise RuntimeError(f"{namespace}: a request answered {status}")

    rows = {}
    for concurrency in LEVELS:
        sampler = Sampler(custom, namespace)
        sampler.start()
        latencies, throughput = measure(call, max(8, requests_per_client * concurrency), concurrency)
        dollars, nodes = sampler.stop()
        per_million_hours = hours_per_million(throughput)
        rows[concurrency] = {
            "p50": statistics.median(latencies), "p95": percentile(latencies, 0.95), "throughput": throughput,
            "dollars_per_million": dollars * per_million_hours,
            "node_hours_per_million": {name: count * per_million_hours for name, count in nodes.items()},
        }
    return rows


def chart(results: dict[str, dict[int, dict]], path: Path, priced: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5), dpi=120)
    for layout, rows in results.items():
        axes.plot(list(rows), [row["dollars_per_million"] for row in rows.values()], marker="o", label=layout)
    axes.set_xscale("log", base=2)
    axes.set_xticks(LEVELS, [str(level) for level in LEVELS])
    axes.set_xlabel("concurrent clients")
    axes.set_ylabel("$ per 1M predictions")
    axes.set_title("Bernini: cost per million predictions by layout")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.text(0.01, 0.01, "Measured on local CPU nodes standing in for the named instance types\n"
                f"Priced: {priced}", fontsize=7)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests-per-client", type=int, default=4, help="requests per client at each level")
    parser.add_argument("--chart", type=Path, default=CHART, help="where to write the PNG")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-cost-"))
    cluster = LocalCluster.in_directory(root / "cluster", real_nodes=True, tied_to_parent=True)
    cluster.up()
    results: dict[str, dict[int, dict]] = {}
    try:
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        s3, _, operator = store_and_operator(root, cluster)
        try:
            for layout in LAYOUTS:
                namespace = deploy(cluster, core, custom, s3, layout)
                results[layout] = sweep(core, custom, namespace, args.requests_per_client)
                undeploy(core, namespace)
        finally:
            operator.stop()
            s3.stop()
    finally:
        cluster.down()

    priced = f"{LIST_PRICES.source}, as of {LIST_PRICES.as_of}"
    print(f"text prompt -> OBJ mesh through the Serve Service, real-node cluster on this machine (local CPU nodes "
          f"standing in for the spec's instance types, cpu-compiled graphs); {args.requests_per_client} requests per "
          f"client per level; priced: {priced}")
    types = sorted({name for rows in results.values() for row in rows.values() for name in row["node_hours_per_million"]})
    print(f"{'layout':<7} {'conc':>4} {'p50 s':>7} {'p95 s':>7} {'pred/s':>7} "
          + " ".join(f"{name + ' h/1M':>18}" for name in types) + f" {'$/1M':>9}")
    for layout, rows in results.items():
        for concurrency, row in rows.items():
            hours = " ".join(f"{row['node_hours_per_million'].get(name, 0):18.1f}" for name in types)
            print(f"{layout:<7} {concurrency:>4} {row['p50']:7.2f} {row['p95']:7.2f} {row['throughput']:7.2f} {hours} "
                  f"{row['dollars_per_million']:9.0f}")
    for concurrency in LEVELS:
        ratio = results["fused"][concurrency]["dollars_per_million"] / results["staged"][concurrency]["dollars_per_million"]
        print(f"concurrency {concurrency}: fused/staged $ per 1M predictions {ratio:.2f}")
    chart(results, args.chart, priced)
    print(f"wrote {args.chart}")


if __name__ == "__main__":
    main()

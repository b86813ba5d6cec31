"""`bernini-dev`: the local control plane and the demo (development only; not in any image)."""

import argparse
import sys
from pathlib import Path

from localdev.cluster import LocalCluster

LOCAL_ROOT = Path(".local")


def _cluster_up(args: argparse.Namespace) -> int:
    cluster = LocalCluster.in_directory(args.root, real_nodes=args.real_nodes)
    seconds = cluster.up(progress=lambda message: print(f"[cluster] {message}", flush=True))
    print(f"[cluster] up in {seconds:.1f}s; export KUBECONFIG={cluster.kubeconfig.resolve()}")
    return 0


def _cluster_down(args: argparse.Namespace) -> int:
    cluster = LocalCluster.load(args.root)
    stopped = cluster.running_components()
    cluster.down()
    print(f"[cluster] stopped {', '.join(stopped) or 'nothing (no cluster was running)'}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from localdev.demo import run

    return run(args.root, monitoring=args.monitoring)


def _demo_gitops(args: argparse.Namespace) -> int:
    from localdev.demo_gitops import run

    return run(args.root)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bernini-dev", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    cluster = commands.add_parser("cluster", help="the local control plane (etcd, apiserver, KWOK, KubeRay)")
    cluster_commands = cluster.add_subparsers(dest="action", required=True)
    for name, handler, help_text in (
        ("up", _cluster_up, "start it in the background"),
        ("down", _cluster_down, "stop exactly the processes `up` started and remove its state"),
    ):
        sub = cluster_commands.add_parser(name, help=help_text)
        sub.add_argument("--root", type=Path, default=LOCAL_ROOT, help="where state, logs and kubeconfig live")
        sub.set_defaults(handler=handler)
        if name == "up":
            sub.add_argument("--real-nodes", action="store_true",
                             help="real kubelet nodes running containers instead of KWOK's fake nodes (root)")
    demo = commands.add_parser("demo", help="run the product's main job on the local control plane")
    demo.add_argument("--root", type=Path, default=LOCAL_ROOT)
    demo.add_argument("--monitoring", action="store_true",
                      help="run the operator from its chart, watched by a Prometheus Operator and a Prometheus "
                           "(`make monitoring` builds them), and print the cost per million predictions it computes")
    demo.set_defaults(handler=_demo)
    gitops = commands.add_parser("demo-gitops", help="the demo shipped by a real Argo CD from local git repositories")
    gitops.add_argument("--root", type=Path, default=LOCAL_ROOT)
    gitops.set_defaults(handler=_demo_gitops)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

"""`bernini operator`: run the operator (kopf) against the current kubeconfig."""

import argparse
import logging
import socket
import sys
import threading
import uuid
from pathlib import Path


def add_to(commands: argparse._SubParsersAction) -> None:
    operator = commands.add_parser("operator", help="run the operator (kopf) against the current kubeconfig")
    operator.add_argument("--namespace", action="append", help="watch only these namespaces (repeatable)")
    operator.add_argument("--workers", type=int, default=4, help="concurrent reconciles")
    operator.add_argument("--resync-seconds", type=float, default=60.0, help="re-check every object this often")
    operator.add_argument("--liveness", default=None, help="e.g. http://0.0.0.0:8080/healthz")
    policy = operator.add_argument_group("policy", "what a BerniniDeployment may choose (see the chart's policy values)")
    policy.add_argument("--allowed-image-prefix", action="append", default=[], metavar="PREFIX")
    policy.add_argument("--require-image-digest", action="store_true")
    policy.add_argument("--allowed-artifacts-prefix", action="append", default=[], metavar="S3_URI")
    policy.add_argument("--allowed-endpoint", action="append", default=[], metavar="URL")
    policy.add_argument("--allow-http-endpoints", action="store_true", help="default: https only")
    policy.add_argument("--no-prewarm", action="store_true", help="refuse spec.artifactsCache.prewarm")
    policy.add_argument("--allowed-service-account", action="append", default=[], metavar="NAME")
    policy.add_argument("--max-total-replicas", type=int)
    operator.add_argument("--leader-election-namespace", metavar="NAMESPACE",
                          help="hold the Lease bernini-operator there while writing (unset: no election, one replica)")
    operator.add_argument("--stuck-seconds", type=float,
                          help="liveness fails while a reconcile has run longer than this (default: 300)")
    operator.add_argument("--prices", type=Path, metavar="FILE",
                          help="YAML {source, asOf, dollarsPerHour: {type: price}} over the shipped on-demand prices")
    operator.add_argument("--metrics-port", type=int, default=8080, help="Prometheus metrics port (0: off)")
    operator.add_argument("--metrics-address", default="0.0.0.0")
    operator.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    operator.add_argument("--log-format", choices=("text", "json"), default="text",
                          help="json: one object per line with the BerniniDeployment under \"object\"")
    operator.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import REGISTRY, start_http_server

    from bernini.artifacts.preflight import ManifestReader
    from bernini.reconcile import handlers
    from bernini.reconcile.controller import STUCK_SECONDS, Controller
    from bernini.reconcile.kube import Kube, api_client
    from bernini.reconcile.leader import LeaderElector
    from bernini.cost.prices import LIST_PRICES, PriceFileError, load_override
    from bernini.reconcile.metrics import FromStatus

    try:
        prices = LIST_PRICES.overridden_by(load_override(args.prices)) if args.prices else LIST_PRICES
    except PriceFileError as error:
        print(f"bernini operator: --prices: {error}", file=sys.stderr)
        return 2

    log_format = kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(verbose=args.log_level == "debug", log_format=log_format, log_prefix=args.log_format == "text",
                   log_refkey="object")
    logging.getLogger().setLevel(args.log_level.upper())
    manifests = ManifestReader(total_reads=max(1, args.workers - 1))  # one worker stays free of every store
    controller = Controller(Kube(api_client()), manifests, workers=args.workers,
                            resync_seconds=args.resync_seconds, stuck_seconds=args.stuck_seconds or STUCK_SECONDS,
                            policy=_policy(args), prices=prices)
    REGISTRY.register(FromStatus(lambda: controller.deployments.values()))
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_address)
    identity = f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    controller.kube.api.user_agent += f" ({identity})"  # audit logs tell the replicas apart
    elector = None
    if args.leader_election_namespace:
        elector = LeaderElector(controller.kube.api, args.leader_election_namespace, "bernini-operator", identity)
        controller.kube.may_write = elector.leading
    stop_flag = threading.Event()
    kopf.run(
        registry=handlers.registry(),
        memo=kopf.Memo(controller=controller, elector=elector, stop_flag=stop_flag),
        stop_flag=stop_flag,
        standalone=True,  # kopf peering is not a lock: the Lease (elector) is
        # kopf's default identity asks the passwd database for the user name, and the image's uid 65532 has
        # no entry there: the operator crashed at start in its own chart's pod.
        identity=f"bernini-operator@{identity}",
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        liveness_endpoint=args.liveness,
    )
    return 1 if elector and elector.lost else 0


def _policy(args: argparse.Namespace):
    from bernini.reconcile.policy import Policy

    limits = {"max_total_replicas": args.max_total_replicas} if args.max_total_replicas else {}
    return Policy(image_prefixes=tuple(args.allowed_image_prefix), require_image_digest=args.require_image_digest,
                  artifacts_prefixes=tuple(args.allowed_artifacts_prefix), endpoints=tuple(args.allowed_endpoint),
                  allow_http_endpoints=args.allow_http_endpoints, allow_prewarm=not args.no_prewarm,
                  service_accounts=tuple(args.allowed_service_account), **limits)

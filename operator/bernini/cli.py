"""The `bernini` command: the operator, the artifacts tools, compile, crds, and for people: status and generate."""

import argparse
import gc
import json
import logging
import os
import socket
import sys
import threading
import uuid
from pathlib import Path


def _operator(args: argparse.Namespace) -> int:
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


def _artifacts_puller(args: argparse.Namespace):
    from bernini.artifacts.node_cache import NodeCache
    from bernini.artifacts.pull import Puller

    cache_dir = getattr(args, "cache_dir", None)
    cache = NodeCache(cache_dir, int(args.cache_limit_gib * 2**30)) if cache_dir else None
    return Puller(args.uri, getattr(args, "dest", None), region=args.region, endpoint_url=args.endpoint_url,
                  concurrency=args.concurrency, part_size=args.part_size_mib << 20,
                  deadline_seconds=getattr(args, "deadline_seconds", float("inf")), cache=cache)


def _artifacts_pull(args: argparse.Namespace) -> int:
    from bernini.artifacts.pull import PullError

    # The imports make most of this short-lived process's objects and none of them turn into garbage: the
    # collector's passes over them cost ~5% of a pull, so it is off while they load and kept off them after.
    gc.disable()
    puller = _artifacts_puller(args)
    gc.freeze()
    gc.enable()
    done = threading.Event()
    progress = threading.Thread(target=_show_progress, args=(puller, done), daemon=True)
    if sys.stdout.isatty():
        progress.start()
    try:
        report = puller.pull(args.manifest_sha256)
    except PullError as error:
        message = f"bernini artifacts pull: {error}"
        print(message, file=sys.stderr)
        _write_termination_message(args.termination_log, message)
        return error.exit_code
    finally:
        done.set()
        if progress.is_alive():
            progress.join()
    print(f"pulled {report.files} files ({report.bytes / 2**20:.1f} MiB) in {report.seconds:.2f}s: "
          f"{report.mib_per_second:.0f} MiB/s, checksums verified; {report.skipped} already present and verified; "
          f"{report.cached_files} from the node cache ({report.cached_bytes / 2**20:.1f} MiB)")
    _write_termination_message(args.termination_log, json.dumps(report.summary()))
    return 0


def _show_progress(puller, done: threading.Event, width: int = 30) -> None:
    """A progress bar on the terminal while the pull runs, left at its last state (an init container's log
    gets none)."""
    import time

    started = time.monotonic()

    def draw() -> None:
        share = min(1.0, puller.landed / puller.expected)
        rate = puller.landed / 2**20 / max(time.monotonic() - started, 1e-3)
        print(f"\r[{'#' * round(share * width):<{width}}] {share:4.0%} {puller.landed / 2**20:,.0f}/"
              f"{puller.expected / 2**20:,.0f} MiB {rate:,.0f} MiB/s", end="\033[K", flush=True)

    while not done.wait(0.25):
        if puller.expected:
            draw()
    if puller.expected:
        draw()
        print(flush=True)


def _write_termination_message(path: Path, message: str) -> None:
    """The kubelet copies this file into the container's status: the operator reads a failure from there (log
    order is not a contract: parallel downloads may still print after the error), `bernini status` a success's
    byte counts. The kubelet creates the file; elsewhere it does not exist and nothing is written."""
    if path.is_file():
        path.write_text(message[:4096])


def _artifacts_verify(args: argparse.Namespace) -> int:
    from bernini.artifacts.pull import PullError
    from bernini.artifacts.verify import verify

    try:
        checked, findings = verify(_artifacts_puller(args), args.manifest_sha256)
    except PullError as error:
        print(f"bernini artifacts verify: {error}", file=sys.stderr)
        return error.exit_code
    for finding in findings:
        print(f"{finding.file}: {finding.problem}", file=sys.stderr)
    print(f"{checked} stage files checked against the manifest: {len(findings)} problems")
    return 1 if findings else 0


def _compile(args: argparse.Namespace) -> int:
    from bernini.compile import compile_model, neuron_available

    target = args.target or ("inf2" if neuron_available() else "cpu")
    manifest = compile_model(args.out, args.version, target, seed=args.seed)
    print(f"compiled {len(manifest.stages)} graphs for {target} into {args.out} ({manifest.total_bytes / 2**20:.1f} MiB)")
    if args.upload:
        from bernini.artifacts.publish import publish
        from bernini.artifacts.store import s3_client

        publish(s3_client(args.region, args.endpoint_url), args.upload, args.out, manifest)
        print(f"published to {args.upload} (manifest.json last)")
    return 0


def _context_namespace() -> str:
    """The kubeconfig context's namespace, as kubectl would pick it."""
    from kubernetes import config

    try:
        _, active = config.list_kube_config_contexts()
    except config.ConfigException:  # in a pod: no kubeconfig
        return "default"
    return active.get("context", {}).get("namespace") or "default"


def _status(args: argparse.Namespace) -> int:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from bernini.api import GROUP, PLURAL, VERSION
    from bernini.reconcile.kube import api_client
    from bernini.report import pull_summary, report

    api = api_client()
    api.user_agent = "bernini-cli"
    args.namespace = args.namespace or _context_namespace()
    try:
        body = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, args.namespace, PLURAL, args.name)
    except ApiException as error:
        print(f"bernini status: {args.namespace}/{args.name}: {error.status} {error.reason}", file=sys.stderr)
        return 1
    pods = []
    selector = f"bernini.dev/deployment={args.name}"  # every Ray pod the operator rendered, of every cluster
    for pod in client.CoreV1Api(api).list_namespaced_pod(args.namespace, label_selector=selector).items:
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        pulled = next((pull_summary(s.state.terminated.message) for s in pod.status.init_container_statuses or []
                       if s.name == "pull-artifacts" and s.state.terminated), None)
        pods.append({"name": pod.metadata.name, "node": pod.spec.node_name or "", "phase": pod.status.phase,
                     "ready": ready, "pulled": pulled})
    print(report(body, pods))
    return 0


def _request_body(args: argparse.Namespace) -> tuple[bytes, str]:
    if args.prompt is not None:
        return json.dumps({"prompt": args.prompt}).encode(), "application/json"
    if args.points:
        return args.points.read_bytes(), "application/json"
    kinds = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
    return args.image.read_bytes(), kinds.get(args.image.suffix.lower(), "image/png")


def _generate(args: argparse.Namespace) -> int:
    import time
    import urllib.error
    import urllib.request

    body, content_type = _request_body(args)
    output = args.output or Path(f"mesh.{args.format}")
    request = urllib.request.Request(f"{args.url.rstrip('/')}/?format={args.format}", data=body, method="POST",
                                     headers={"Content-Type": content_type})
    started, done = time.monotonic(), threading.Event()
    if sys.stderr.isatty():
        def progress():
            while not done.wait(0.5):
                print(f"\rwaiting for the mesh: {time.monotonic() - started:.1f}s", end="", file=sys.stderr, flush=True)
        threading.Thread(target=progress, daemon=True).start()
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            mesh, info = response.read(), json.loads(response.headers.get("X-Bernini-Mesh", "{}"))
    except urllib.error.HTTPError as error:
        print(f"\nbernini generate: {error.code}: {error.read().decode(errors='replace')[:500]}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"\nbernini generate: {args.url}: {error}", file=sys.stderr)
        return 1
    finally:
        done.set()
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr)  # clear the progress line
    output.write_bytes(mesh)
    print(f"wrote {output} ({info.get('vertices', '?')} vertices, "
          f"{info.get('faces', '?')} faces) in {time.monotonic() - started:.1f}s")
    try:
        from bernini.preview import render_png
    except ImportError:
        print("no preview: it needs the model extra (pip install 'bernini-operator[model]')", file=sys.stderr)
        return 0
    preview = output.with_suffix(".png")
    preview.write_bytes(render_png(mesh, args.format))
    print(f"wrote {preview}")
    return 0


def _crds(args: argparse.Namespace) -> int:
    from bernini.api.crd import render_yaml

    text = render_yaml()
    for path in args.output:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bernini", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

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
    operator.set_defaults(handler=_operator)

    artifacts = commands.add_parser("artifacts", help="compiled stage artifacts in S3")
    artifact_commands = artifacts.add_subparsers(dest="action", required=True)
    pull = artifact_commands.add_parser("pull", help="download and verify an artifact set (the init container)")
    verify_parser = artifact_commands.add_parser("verify", help="check a remote artifact set from S3 metadata")
    for sub, handler in ((pull, _artifacts_pull), (verify_parser, _artifacts_verify)):
        sub.add_argument("uri", help="s3://bucket/prefix/ holding manifest.json")
        if sub is pull:
            sub.add_argument("dest", type=Path, help="local directory")
            sub.add_argument("--termination-log", type=Path, default=Path("/dev/termination-log"),
                             help="where a failure's message goes for the pod status (Kubernetes' default path)")
            sub.add_argument("--deadline-seconds", type=float, default=3600.0,
                             help="give up (exit 10) when the whole pull takes longer")
            sub.add_argument("--cache-dir", type=Path,
                             help="the node's artifact cache (shared by the pods of a node, keyed by SHA-256)")
            sub.add_argument("--cache-limit-gib", type=float, default=50.0,
                             help="evict least recently used cache entries beyond this (not the set in use)")
        sub.add_argument("--manifest-sha256", help="refuse a manifest.json with another digest")
        sub.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
        sub.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL_S3"))
        sub.add_argument("--concurrency", type=int, default=16)
        sub.add_argument("--part-size-mib", type=int, default=8)
        sub.set_defaults(handler=handler)

    compile_parser = commands.add_parser("compile", help="trace every stage, write manifest.json, publish to S3")
    compile_parser.add_argument("--version", required=True, help="model version recorded in the manifest")
    compile_parser.add_argument("--out", type=Path, required=True, help="local directory for the artifact set")
    compile_parser.add_argument("--target", choices=("inf2", "cuda", "cpu"),
                                help="default: inf2 when torch-neuronx imports, else cpu; cuda traces on this host's GPU")
    compile_parser.add_argument("--seed", type=int, default=0, help="reference model weights seed")
    compile_parser.add_argument("--upload", metavar="S3_URI", help="publish the set to this prefix")
    compile_parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    compile_parser.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL_S3"))
    compile_parser.set_defaults(handler=_compile)

    status = commands.add_parser("status", help="one BerniniDeployment: conditions, stages, pods by node, artifacts, cost")
    status.add_argument("name")
    status.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")
    status.set_defaults(handler=_status)

    generate = commands.add_parser("generate", help="POST an input to a deployment's endpoint; write the mesh and a PNG preview")
    generate.add_argument("url", help="the Serve endpoint (status.serveEndpoint in the cluster, or a port-forward)")
    given = generate.add_mutually_exclusive_group(required=True)
    given.add_argument("--prompt", help="text prompt")
    given.add_argument("--image", type=Path, help="PNG or JPEG file")
    given.add_argument("--points", type=Path, help='JSON file {"points": [[x, y, z], ...]}')
    generate.add_argument("--format", choices=("glb", "obj", "ply"), default="glb")
    generate.add_argument("-o", "--output", type=Path, help="mesh file (default mesh.FORMAT); the preview goes beside it")
    generate.add_argument("--timeout", type=float, default=300.0)
    generate.set_defaults(handler=_generate)

    crds = commands.add_parser("crds", help="write the BerniniDeployment CRD generated from the pydantic models")
    crds.add_argument("output", type=Path, nargs="+")
    crds.set_defaults(handler=_crds)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

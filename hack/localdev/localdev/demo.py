"""`make demo`: the operator's main job on the embedded local cluster, with real pods.

Starts (or reuses) the real-node cluster (control plane, three kubelet nodes, KubeRay as a pod), an S3 server
on the node network and the operator; trains the reference model once (cached), compiles it (cpu target) and
publishes it; applies examples/bernini-minimal.yaml fitted to this machine; waits until the BerniniDeployment is
Ready (the init container pulled and verified the artifacts, Ray workers joined, KubeRay deployed the Serve app);
then asks the cluster's own Serve Service for a mesh, and for a few prompts whose previews it lays side by side,
each with how closely it matches its class. With --monitoring (make demo MONITORING=1) the operator runs from
its chart under a Prometheus Operator's Prometheus, and the demo ends with the cost per million predictions that
the chart's recording rules compute. Any step that does not happen fails the demo with the reason.
The cluster keeps running until `make cluster-down`.
"""

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import yaml

from bernini.artifacts.manifest import MANIFEST_FILE
from bernini.artifacts.store import S3Location
from bernini.model import quality
from bernini.model.weights import trained
from bernini.preview import render_png
from localdev import LocalCluster, nodenet, processes
from localdev.cluster import REPO_ROOT
from localdev.monitoring import NAMESPACE as MONITORING_NAMESPACE
from localdev.monitoring import OPERATOR_NAMESPACE, RELEASE, LocalMonitoring
from localdev.s3server import LocalS3
from localdev.sizing import fit_to_local_nodes
from localdev.stack import namespace_manifests, publish_reference_model
from localdev.waiting import wait_for

EXAMPLE = REPO_ROOT / "examples" / "bernini-minimal.yaml"
EXAMPLE_INPUT = REPO_ROOT / "examples" / "inputs" / "chair-prompt.json"
CRDS = REPO_ROOT / "crds"
VERSION = "1.0.0"
NAMESPACE = "default"


def artifacts_uri(version: str) -> str:
    return f"s3://bernini-artifacts/bernini/{version}/"


ARTIFACTS_URI = artifacts_uri(VERSION)
DEMO_PROMPTS = ("chair", "table", "mug", "lamp", "sofa")
PREVIEW_SIZE = 256
READY_TIMEOUT = 900
COST_WINDOW, COST_SECONDS = "1m", 75  # the prompts outlast the rules' window


class DemoFailed(SystemExit):
    def __init__(self, message: str):
        super().__init__(f"[demo] FAILED: {message}")


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def ensure_cluster(root: Path) -> LocalCluster:
    cluster = LocalCluster.load(root)
    if (cluster.real_nodes and cluster.pids and cluster.node_layer.images
            and len(cluster.running_components()) == len(cluster.pids)):
        say(f"reusing the running real-node cluster at {cluster.server}")
        return cluster
    cluster.down()
    cluster = LocalCluster.in_directory(root, real_nodes=True)
    seconds = cluster.up(progress=say)
    say(f"real-node cluster up in {seconds:.1f}s")
    return cluster


def ensure_s3(cluster: LocalCluster) -> LocalS3:
    record = cluster.state_dir / "s3.json"
    if record.exists():
        server = LocalS3(cluster.state_dir / "s3", cluster.log_dir / "versitygw.log", **json.loads(record.read_text()))
        if server.running():
            return server
    server = LocalS3(cluster.state_dir / "s3", cluster.log_dir / "versitygw.log", host=nodenet.HOST_IP)
    server.start()
    cluster.adopt(server.pid, server.executable)
    record.write_text(json.dumps({"host": server.host, "port": server.port, "access_key": server.access_key,
                                  "secret_key": server.secret_key, "pid": server.pid}))
    record.chmod(0o600)
    say(f"S3-compatible server (versitygw) at {server.endpoint_url}")
    return server


def _ensure_operator(cluster: LocalCluster, s3: LocalS3) -> None:
    # The release `make demo MONITORING=1` installed would be a second operator beside this process.
    cluster.helm("uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--ignore-not-found", "--wait")
    record = cluster.state_dir / "operator.pid"
    if record.exists():
        if processes.is_running(int(record.read_text()), sys.executable):
            return
        cluster.stop_processes({int(record.read_text()): sys.executable})  # gone: off the record
    pid = cluster.start_process(
        # The local store is versitygw on plain http over loopback: the one endpoint policy allows it.
        "operator", [sys.executable, "-m", "bernini", "operator", "--allow-http-endpoints"],
        env={**s3.credentials_env, "KUBECONFIG": str(cluster.kubeconfig)},
    )
    record.write_text(str(pid))
    say(f"operator started (pid {pid}), log {cluster.log_dir / 'operator.log'}")


def _operator_from_its_chart(cluster: LocalCluster, s3: LocalS3) -> LocalMonitoring:
    """The operator as its chart runs it, with the chart's monitors and rules handed to a Prometheus Operator's
    Prometheus (instead of the operator process)."""
    record = cluster.state_dir / "operator.pid"
    if record.exists():
        cluster.stop_processes({int(record.read_text()): sys.executable})
        record.unlink()
    stack = LocalMonitoring(cluster)
    stack.install()
    stack.install_operator_chart(s3, window=COST_WINDOW)
    say(f"Prometheus Operator and Prometheus in namespace {MONITORING_NAMESPACE}; the operator runs from its chart "
        f"(helm release bernini in {OPERATOR_NAMESPACE}), its rates over {COST_WINDOW}")
    return stack


def print_prometheus_cost(cluster: LocalCluster, stack: LocalMonitoring) -> None:
    """Prompts back to back for a window, then what the chart's recording rules make of it."""
    address = _get(cluster, "service", "bernini-serve-svc")["spec"]["clusterIP"]
    say(f"prompts back to back for {COST_SECONDS}s, so that Prometheus sees a rate")
    deadline, sent = time.monotonic() + COST_SECONDS, 0
    while time.monotonic() < deadline:
        _post(address, json.dumps({"prompt": f"a {DEMO_PROMPTS[sent % len(DEMO_PROMPTS)]}"}).encode(), "application/json", "obj")
        sent += 1
    selector = f'{{namespace="{NAMESPACE}", name="bernini"}}'

    def value(record: str) -> float | None:
        series = stack.query(record + selector)
        return float(series[0]["value"][1]) if series else None

    per_million = wait_for(lambda: value("bernini:dollars_per_million_predictions"),
                           "bernini:dollars_per_million_predictions in Prometheus", 60, interval=2, failure=DemoFailed)
    say(f"Prometheus: ${per_million:,.0f} per million predictions (bernini:dollars_per_million_predictions: "
        f"${value('bernini:cost_dollars_per_hour'):.4f}/h of workers over "
        f"{value('bernini:predictions_per_hour'):,.0f} predictions/hour; {sent} prompts sent, one client)")


def publish_artifacts(cluster: LocalCluster, s3: LocalS3, version: str = VERSION, seed: int = 0,
                      weights: dict | None = None) -> None:
    client = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1",
                          aws_access_key_id=s3.access_key, aws_secret_access_key=s3.secret_key)
    uri = artifacts_uri(version)
    location = S3Location.parse(uri)
    try:
        client.head_object(Bucket=location.bucket, Key=location.key(MANIFEST_FILE))
        return  # republishing would change the manifest digest and roll the RayService for nothing
    except client.exceptions.ClientError:
        pass
    manifest = publish_reference_model(client, uri, version, cluster.state_dir / f"compiled-{version}", seed=seed,
                                       weights=weights, log=lambda line: say(f"compile: {line}"))
    say(f"published {len(manifest.stages)} compiled graphs (cpu target) + manifest.json to {uri}")


def _get(cluster: LocalCluster, *what: str, namespace: str = NAMESPACE) -> dict:
    return json.loads(cluster.kubectl("get", *what, "-n", namespace, "-o", "json"))


def _wait_ready(cluster: LocalCluster) -> float:
    started = time.monotonic()
    last = None

    def is_ready() -> bool:
        nonlocal last
        body = _get(cluster, "bd", "bernini")
        conditions = {c["type"]: c for c in body.get("status", {}).get("conditions", [])}
        rendered, ready = conditions.get("Rendered", {}), conditions.get("Ready", {})
        if rendered.get("status") == "False":
            raise DemoFailed(f"the operator refused the example: {rendered['reason']}: {rendered['message']}")
        state = (ready.get("reason"), ready.get("message"))
        if state != last and state[0] and ready.get("status") != "True":
            say(f"waiting: {state[0]}: {state[1]}")
            last = state
        return ready.get("status") == "True"

    wait_for(is_ready, "the BerniniDeployment to be Ready", READY_TIMEOUT, interval=3, failure=DemoFailed,
             explain=lambda: f"{cluster.kubectl('get', 'pods', '-n', 'default', '-o', 'wide')}\nlogs in {cluster.log_dir}")
    return time.monotonic() - started


def request_mesh(cluster: LocalCluster, namespace: str = NAMESPACE) -> None:
    address = _get(cluster, "service", "bernini-serve-svc", namespace=namespace)["spec"]["clusterIP"]
    request = urllib.request.Request(f"http://{address}:8000/?format=glb", data=EXAMPLE_INPUT.read_bytes(),
                                     method="POST", headers={"Content-Type": "application/json"})

    def answer():
        # Ready can land before kube-proxy programs the Service: a refused connection is retried, nothing else.
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return response.read(), response.headers
        except ConnectionRefusedError:
            return None
        except urllib.error.URLError as error:
            if isinstance(error.reason, ConnectionRefusedError):
                return None
            raise DemoFailed(f"the Serve Service at {address}:8000 did not return a mesh: {error}") from error
        except OSError as error:
            raise DemoFailed(f"the Serve Service at {address}:8000 did not return a mesh: {error}") from error

    mesh, headers = wait_for(answer, f"the Serve Service at {address}:8000 to accept connections", 120,
                             interval=2, failure=DemoFailed)
    output = cluster.log_dir.parent / ("bernini-mesh.glb" if namespace == NAMESPACE else f"bernini-mesh-{namespace}.glb")
    output.write_bytes(mesh)
    preview = output.with_suffix(".png")
    preview.write_bytes(render_png(mesh, "glb"))  # what `bernini generate` writes beside its mesh
    info = json.loads(headers["X-Bernini-Mesh"])
    timings = json.loads(headers["X-Bernini-Timings"])
    say(f"mesh for {EXAMPLE_INPUT.relative_to(REPO_ROOT)} through bernini-serve-svc ({address}:8000, kube-proxy): "
        f"{output} ({info['vertices']} vertices, {info['faces']} faces, watertight={info['watertight']}), "
        f"preview {preview}")
    say("per-stage timings: " + ", ".join(f"{stage} {seconds * 1000:.0f} ms" for stage, seconds in timings.items()))


def _post(address: str, body: bytes, content_type: str, file_format: str) -> bytes:
    request = urllib.request.Request(f"http://{address}:8000/?format={file_format}", data=body, method="POST",
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.read()
    except OSError as error:
        raise DemoFailed(f"the Serve Service at {address}:8000 did not return a mesh: {error}") from error


def draw_prompts(cluster: LocalCluster) -> None:
    """A few prompts through the Serve Service, each judged against its class's template; their previews side
    by side in one picture."""
    import io

    from PIL import Image, ImageDraw

    address = _get(cluster, "service", "bernini-serve-svc")["spec"]["clusterIP"]
    templates = quality.templates()
    previews = []
    for label in DEMO_PROMPTS:
        body = json.dumps({"prompt": f"a {label}"}).encode()
        mesh = _post(address, body, "application/json", "glb")
        judged = quality.judge_mesh(label, "text", mesh, "glb", templates)
        other = quality.nearest_other(label, judged.scores)
        say(f'"a {label}": IoU {judged.scores[label]:.2f} with the {label} template, '
            f"{judged.scores[other]:.2f} with the nearest other ({other}); "
            f"{judged.problem or 'drawn as asked'}")
        image = Image.open(io.BytesIO(render_png(mesh, "glb", size=PREVIEW_SIZE)))
        ImageDraw.Draw(image).text((12, 10), f'"a {label}"  IoU {judged.scores[label]:.2f}', fill=(40, 40, 40))
        previews.append(image)
    sheet = Image.new("RGB", (PREVIEW_SIZE * len(previews), PREVIEW_SIZE))
    for index, image in enumerate(previews):
        sheet.paste(image, (index * PREVIEW_SIZE, 0))
    output = cluster.log_dir.parent / "bernini-prompts.png"
    sheet.save(output)
    say(f"previews side by side: {output}")


def run(root: Path, monitoring: bool = False) -> int:
    cluster = ensure_cluster(root)
    s3 = ensure_s3(cluster)
    cluster.kubectl("apply", "--server-side", "--field-manager=bernini-demo", "-f", str(CRDS))
    cluster.wait_established("crd/berninideployments.bernini.dev")
    stack = _operator_from_its_chart(cluster, s3) if monitoring else None
    if not stack:
        _ensure_operator(cluster, s3)
    publish_artifacts(cluster, s3, weights=trained(log=lambda line: say(f"train: {line}")))
    cluster.kubectl("apply", "--server-side", "--field-manager=bernini-demo", "-f", "-",
                    input=json.dumps({"apiVersion": "v1", "kind": "List", "items": namespace_manifests("default", s3)}))
    body = fit_to_local_nodes(yaml.safe_load(EXAMPLE.read_text()), cluster.node_layer.images["SERVING_IMAGE"],
                              s3.endpoint_url, VERSION, ARTIFACTS_URI)
    body["metadata"]["namespace"] = "default"
    cluster.kubectl("apply", "--server-side", "--field-manager=bernini-demo", "-f", "-", input=json.dumps(body))
    say("applied examples/bernini-minimal.yaml (fitted to this machine: local image, cpu artifacts, small pods)")
    seconds = _wait_ready(cluster)
    say(f"Ready {seconds:.0f}s after apply")
    print(cluster.kubectl("get", "bd", "-n", "default", "-o", "wide"))
    print(cluster.kubectl("get", "pods", "-n", "default", "-o",
                          "custom-columns=POD:.metadata.name,TYPE:.metadata.labels.ray\\.io/node-type,NODE:.spec.nodeName,"
                          "NEURONCORES:.spec.containers[0].resources.limits.aws\\.amazon\\.com/neuroncore,"
                          "PHASE:.status.phase,IP:.status.podIP"))
    worker = next(p for p in _get(cluster, "pods")["items"] if p["metadata"]["labels"].get("ray.io/node-type") == "worker"
                  and any(c["name"] == "pull-artifacts" for c in p["spec"].get("initContainers", [])))
    pulled = cluster.kubectl("logs", "-n", "default", worker["metadata"]["name"], "-c", "pull-artifacts").strip()
    say(f"init container on {worker['spec']['nodeName']}: {pulled.splitlines()[-1]}")
    request_mesh(cluster)
    draw_prompts(cluster)
    if stack:
        print_prometheus_cost(cluster, stack)
    say(f"the cluster keeps running; KUBECONFIG={cluster.kubeconfig}; stop it with `make cluster-down`")
    return 0

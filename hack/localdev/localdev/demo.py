"""`make demo`: the operator's main job on the embedded local control plane.

Starts (or reuses) the local cluster, an S3-compatible server and the operator; compiles the reference
model and publishes it; applies examples/bernini-minimal.yaml pointed at that server; waits for the
RayService and its pods and prints where everything landed. Then it runs the RayService's own
serveConfigV2 on a local Ray head (fake KWOK pods run no Ray) with the artifacts pulled exactly as the
init container pulls them, and generates one mesh. The cluster keeps running until `make cluster-down`.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import boto3
import yaml

from bernini.artifacts.manifest import MANIFEST_FILE
from bernini.artifacts.publish import publish
from bernini.artifacts.store import S3Location
from bernini.compile import compile_model

from localdev import LocalCluster, kuberay_bridge, processes
from localdev.cluster import REPO_ROOT
from localdev.ray_head import RayHead, localize_serve_config
from localdev.s3server import LocalS3

EXAMPLE = REPO_ROOT / "examples" / "bernini-minimal.yaml"
EXAMPLE_INPUT = REPO_ROOT / "examples" / "inputs" / "chair-prompt.json"
CRDS = REPO_ROOT / "crds"
ARTIFACTS_URI = "s3://bernini-artifacts/bernini/1.0.0/"


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _ensure_cluster(root: Path) -> LocalCluster:
    cluster = LocalCluster.load(root)
    if cluster.pids and len(cluster.running_components()) == len(cluster.pids):
        say(f"reusing the running local cluster at {cluster.server}")
        return cluster
    cluster.down()
    seconds = cluster.up(progress=say)
    say(f"local cluster up in {seconds:.1f}s")
    return cluster


def _ensure_s3(cluster: LocalCluster) -> LocalS3:
    record = cluster.state_dir / "s3.json"
    if record.exists():
        server = LocalS3(cluster.state_dir / "s3", cluster.log_dir / "versitygw.log", **json.loads(record.read_text()))
        if server.running():
            return server
    server = LocalS3(cluster.state_dir / "s3", cluster.log_dir / "versitygw.log")
    server.start()
    cluster.adopt(server.pid, server.executable)
    record.write_text(json.dumps({"port": server.port, "access_key": server.access_key,
                                  "secret_key": server.secret_key, "pid": server.pid}))
    record.chmod(0o600)
    say(f"S3-compatible server (versitygw) at {server.endpoint_url}")
    return server


def _ensure_operator(cluster: LocalCluster, s3: LocalS3) -> None:
    record = cluster.state_dir / "operator.pid"
    if record.exists() and processes.is_running(int(record.read_text()), sys.executable):
        return
    pid = cluster.start_process(
        "operator", [sys.executable, "-m", "bernini", "operator"],
        env={**s3.credentials_env, "KUBECONFIG": str(cluster.kubeconfig)},
    )
    record.write_text(str(pid))
    say(f"operator started (pid {pid}), log {cluster.log_dir / 'operator.log'}")


def _publish_artifacts(cluster: LocalCluster, s3: LocalS3) -> None:
    client = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1",
                          aws_access_key_id=s3.access_key, aws_secret_access_key=s3.secret_key)
    location = S3Location.parse(ARTIFACTS_URI)
    try:
        client.head_object(Bucket=location.bucket, Key=location.key(MANIFEST_FILE))
        return  # republishing would change the manifest digest and roll the RayService for nothing
    except client.exceptions.ClientError:
        pass
    if location.bucket not in {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=location.bucket)
    compiled = cluster.state_dir / "compiled"
    manifest = compile_model(compiled, "1.0.0", "cpu", log=lambda line: say(f"compile: {line}"))
    publish(client, ARTIFACTS_URI, compiled, manifest)
    say(f"published {len(manifest.stages)} compiled graphs (cpu target) + manifest.json to {ARTIFACTS_URI}")


def _example(s3: LocalS3) -> dict:
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"]["namespace"] = "default"
    body["spec"]["model"]["artifactsUri"] = ARTIFACTS_URI
    body["spec"]["model"]["target"] = "cpu"  # compiled here with torch.jit.trace; inf2 needs torch-neuronx
    body["spec"]["s3"] = {"region": "us-east-1", "endpointUrl": s3.endpoint_url}
    return body


def _wait_rendered(cluster: LocalCluster, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = json.loads(cluster.kubectl("get", "bd", "bernini", "-n", "default", "-o", "json"))
        conditions = {c["type"]: c for c in body.get("status", {}).get("conditions", [])}
        rendered = conditions.get("Rendered", {})
        if rendered.get("status") == "True" and rendered.get("observedGeneration") == body["metadata"]["generation"]:
            return body
        if rendered.get("status") == "False":
            raise SystemExit(f"[demo] the operator refused the example: {rendered['reason']}: {rendered['message']}")
        time.sleep(0.5)
    raise SystemExit("[demo] the operator did not render the example in time; see .local/logs/operator.log")


def _wait_pods(cluster: LocalCluster, count: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = json.loads(cluster.kubectl("get", "pods", "-n", "default", "-l", "ray.io/is-ray-node=yes", "-o", "json"))
        if sum(p["status"].get("phase") == "Running" for p in pods["items"]) >= count:
            return
        time.sleep(0.5)
    raise SystemExit("[demo] Ray pods did not start in time; see .local/logs/")


def run(root: Path) -> int:
    cluster = _ensure_cluster(root)
    s3 = _ensure_s3(cluster)
    cluster.kubectl("apply", "--server-side", "--field-manager=bernini-demo", "-f", str(CRDS))
    cluster.wait_established("crd/berninideployments.bernini.dev")
    _ensure_operator(cluster, s3)
    _publish_artifacts(cluster, s3)
    subprocess.run([cluster.binary("kubectl"), f"--kubeconfig={cluster.kubeconfig}", "create", "serviceaccount",
                    "bernini-serving", "-n", "default"], capture_output=True)
    cluster.kubectl("apply", "--server-side", "--field-manager=bernini-demo", "-f", "-", input=json.dumps(_example(s3)))
    say("applied examples/bernini-minimal.yaml")
    started = time.monotonic()
    body = _wait_rendered(cluster)
    say(f"RayService rendered {time.monotonic() - started:.1f}s after apply")
    _wait_pods(cluster, 1 + body["status"]["capacity"]["minWorkers"])

    print(cluster.kubectl("get", "bd", "-n", "default", "-o", "wide"))
    rayservice = json.loads(cluster.kubectl("get", "rayservice", "bernini", "-n", "default", "-o", "json"))
    cluster_spec = rayservice["spec"]["rayClusterConfig"]
    print("RayService bernini:")
    print(f"  upgradeStrategy={rayservice['spec']['upgradeStrategy']['type']}  auth={cluster_spec['authOptions']['mode']}"
          f"  rayVersion={cluster_spec['rayVersion']}")
    for group in cluster_spec["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        print(f"  worker group {group['groupName']}: {group['minReplicas']}..{group['maxReplicas']} nodes, "
              f"{limits['aws.amazon.com/neuroncore']} NeuronCores each, rayStartParams.resources={group['rayStartParams']['resources']}")
    for deployment in yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"][0]["deployments"]:
        scaling = deployment["autoscaling_config"]
        cores = deployment["ray_actor_options"].get("resources", {}).get("neuron_cores", 0)
        print(f"  serve {deployment['name']:<15} replicas {scaling['min_replicas']}..{scaling['max_replicas']}"
              f"  target {scaling['target_ongoing_requests']}  neuron_cores {cores}")
    print()
    print(cluster.kubectl("get", "pods", "-n", "default", "-l", "ray.io/is-ray-node=yes", "-o",
                          "custom-columns=POD:.metadata.name,TYPE:.metadata.labels.ray\\.io/node-type,"
                          "NODE:.spec.nodeName,NEURONCORES:.spec.containers[0].resources.limits.aws\\.amazon\\.com/neuroncore,"
                          "PHASE:.status.phase"))
    print(cluster.kubectl("get", "nodes", "-o", "custom-columns=NODE:.metadata.name,"
                          "TYPE:.metadata.labels.node\\.kubernetes\\.io/instance-type,"
                          "NEURONCORES:.status.allocatable.aws\\.amazon\\.com/neuroncore"))
    say("KubeRay reports the RayService Initializing: fake KWOK pods run no Ray dashboard for it to reach")
    artifacts = _generate_mesh(cluster, s3, rayservice)
    _serve_through_kuberay(cluster, artifacts)
    say(f"the cluster keeps running; KUBECONFIG={cluster.kubeconfig}; stop it with `make cluster-down`")
    return 0


def _generate_mesh(cluster: LocalCluster, s3: LocalS3, rayservice: dict) -> None:
    """Run the RayService's serveConfigV2 on a local Ray head and generate one mesh."""
    worker = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    pull = worker["initContainers"][0]["command"]
    demo_dir = cluster.state_dir / "demo"
    artifacts = demo_dir / "artifacts"
    env = {**os.environ, **s3.credentials_env}
    command = [sys.executable, "-m", "bernini", *pull[1:4], str(artifacts), *pull[5:]]  # dest is local here
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"[demo] the init container's pull failed: {result.stderr}")
    say(f"init container command, run here: {' '.join(pull[:4])} ... -> {result.stdout.strip().splitlines()[-1]}")
    head = RayHead(Path(tempfile.mkdtemp(prefix="bernini-ray-")), cluster.log_dir / "ray.log")
    say("starting a local Ray head (token auth on, neuron_cores as a custom resource)")
    head.start()
    try:
        config = localize_serve_config(yaml.safe_load(rayservice["spec"]["serveConfigV2"]), artifacts, head.serve_port)
        head.deploy_serve(config)
        head.wait_running("bernini")
        say("the RayService's serveConfigV2 is RUNNING on Ray Serve")
        request = urllib.request.Request(f"http://127.0.0.1:{head.serve_port}/?format=glb", data=EXAMPLE_INPUT.read_bytes(),
                                         method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            mesh, headers = response.read(), response.headers
        output = cluster.log_dir.parent / "bernini-mesh.glb"
        output.write_bytes(mesh)
        info = json.loads(headers["X-Bernini-Mesh"])
        timings = json.loads(headers["X-Bernini-Timings"])
        say(f"mesh from {EXAMPLE_INPUT.relative_to(REPO_ROOT)}: {output} "
            f"({info['vertices']} vertices, {info['faces']} faces, watertight={info['watertight']})")
        say("per-stage timings: " + ", ".join(f"{stage} {seconds * 1000:.0f} ms" for stage, seconds in timings.items()))
    finally:
        head.stop()
    return artifacts


def _serve_through_kuberay(cluster: LocalCluster, artifacts: Path, timeout: float = 240) -> None:
    """The real KubeRay operator drives a local Ray head as the RayService's head (see kuberay_bridge)."""
    if not kuberay_bridge.ports_free():
        say("skipping the end-to-end step: ports 8265 and 8000 must be free for the stand-in Ray head")
        return
    head = kuberay_bridge.start_head_for(cluster, "default", "bernini", artifacts)
    say("KubeRay restarted resolving the head Service to 127.0.0.1; a Ray head with its token serves :8265")
    try:
        kuberay_bridge.wait_serve_running(cluster, "default", "bernini", timeout)
        say("KubeRay deployed the serveConfigV2 through the head's dashboard: application RUNNING, "
            "Serve proxy healthy on the head pod's IP")
        kuberay_bridge.stand_in_serve_endpoints(cluster, "default", "bernini")
        say("created a STAND-IN EndpointSlice for bernini-serve-svc (Kubernetes refuses the loopback pod IPs KWOK "
            "assigns here; KubeRay counts Serve endpoints before it declares the RayService Ready)")
        deadline = time.monotonic() + timeout
        ready = {}
        while time.monotonic() < deadline:
            body = json.loads(cluster.kubectl("get", "bd", "bernini", "-n", "default", "-o", "json"))
            ready = next((c for c in body.get("status", {}).get("conditions", []) if c["type"] == "Ready"), {})
            if ready.get("status") == "True":
                break
            time.sleep(2)
        print(cluster.kubectl("get", "bd", "-n", "default"))
        print(cluster.kubectl("get", "rayservice", "bernini", "-n", "default", "-o",
                              "custom-columns=RAYSERVICE:.metadata.name,READY:.status.conditions[?(@.type==\"Ready\")].status,"
                              "REASON:.status.conditions[?(@.type==\"Ready\")].reason,"
                              "ACTIVE:.status.activeServiceStatus.rayClusterName"))
        if ready.get("status") != "True":
            say(f"end to end: the BerniniDeployment did not turn Ready within {timeout:.0f}s "
                f"({ready.get('reason')}: {ready.get('message')}); see .local/logs/ray-operator.log")
            return
        say("end to end: KubeRay deployed the serveConfigV2 on the Ray head and the BerniniDeployment is Ready")
        request = urllib.request.Request("http://127.0.0.1:8000/?format=glb", data=EXAMPLE_INPUT.read_bytes(),
                                         method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            info = json.loads(response.headers["X-Bernini-Mesh"])
        say(f"a request through the KubeRay-deployed Serve app: mesh with {info['vertices']} vertices")
    finally:
        head.stop()

"""A real local Ray head (GCS, raylet, dashboard, Serve) on loopback, with token authentication on."""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from bernini.render.pods import (
    GROUP_RAY_RESOURCES, GROUP_RESOURCE_OFFERED, NEURON_CORES_RAY_RESOURCE, SERVE_PROCESS_ENV,
)
from localdev.processes import free_port
from localdev.waiting import wait_for

RAY = Path(sys.executable).with_name("ray")


class RayHead:
    def __init__(self, temp_dir: Path, log_file: Path, neuron_cores: int = 8, cpus: int = 8, token: str | None = None,
                 dashboard_port: int | None = None, serve_port: int | None = None, extra_env: dict | None = None):
        self.temp_dir = temp_dir
        self.log_file = log_file
        self.neuron_cores = neuron_cores
        self.cpus = cpus
        self.token = token or secrets.token_hex(32)
        self.gcs_port = free_port()
        self.dashboard_port = dashboard_port or free_port()
        self.serve_port = serve_port or free_port()
        self.metrics_port = free_port()  # Prometheus text, as KubeRay's pods export it on their "metrics" port
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen | None = None

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def env(self) -> dict[str, str]:
        # The Serve settings the operator gives its Ray containers, and what KubeRay sets on every Ray container
        # when authOptions.mode is token.
        return {**os.environ, **SERVE_PROCESS_ENV, **self.extra_env, "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": self.token, "RAY_USAGE_STATS_ENABLED": "0"}

    def start(self, timeout: float = 90) -> None:
        # neuron_cores is a custom resource here, as the Neuron workers declare it via rayStartParams, and the
        # one node stands in for both worker groups; memory is logical, so the example's per-replica memory
        # schedules on this machine.
        resources = {NEURON_CORES_RAY_RESOURCE: self.neuron_cores,
                     **dict.fromkeys(GROUP_RAY_RESOURCES.values(), GROUP_RESOURCE_OFFERED)}
        command = [
            str(RAY), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={self.gcs_port}",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}", f"--num-cpus={self.cpus}",
            f"--memory={64 * 2**30}", f"--resources={json.dumps(resources)}",
            f"--temp-dir={self.temp_dir}", "--disable-usage-stats", f"--metrics-export-port={self.metrics_port}",
        ]
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        wait_for(self._dashboard_answers, "the Ray dashboard", timeout, interval=0.5, failure=RuntimeError,
                 explain=self.log_tail)

    def _dashboard_answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"ray start exited:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(self.request("/api/version"), timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            return response.read().decode()

    def request(self, path: str, method: str = "GET", body: bytes | None = None) -> urllib.request.Request:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        return urllib.request.Request(self.dashboard + path, data=body, method=method, headers=headers)

    def deploy_serve(self, config: dict) -> None:
        """PUT /api/serve/applications/: the very call KubeRay makes with a RayService's serveConfigV2."""
        request = self.request("/api/serve/applications/", "PUT", json.dumps(config).encode())
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                response.read()
        except urllib.error.HTTPError as refused:
            detail = refused.read().decode(errors="replace")[-2000:]
            raise RuntimeError(
                f"Serve refused the config: HTTP {refused.code}: {detail}\n{self.log_tail()}"
            ) from None

    def serve_application(self, name: str) -> dict:
        with urllib.request.urlopen(self.request("/api/serve/applications/"), timeout=10) as response:
            return json.loads(response.read()).get("applications", {}).get(name, {})

    def running_replicas(self, application: str, deployment: str) -> int:
        replicas = self.serve_application(application).get("deployments", {}).get(deployment, {}).get("replicas", [])
        return sum(replica.get("state") == "RUNNING" for replica in replicas)

    def wait_running(self, application: str, timeout: float = 180) -> None:
        def running() -> bool:
            try:
                details = self.serve_application(application)
            except TimeoutError:
                return False  # the dashboard is slow to answer on busy cores, not down: ask again
            if details.get("status") == "DEPLOY_FAILED":
                raise RuntimeError(f"Serve could not deploy {application}: {details.get('message')}")
            return details.get("status") == "RUNNING"

        def deployments() -> str:
            try:
                found = self.serve_application(application).get("deployments", {})
            except TimeoutError:
                return "the dashboard did not answer"
            return "; ".join(f"{name}: {d.get('status')} {d.get('message', '')[:300]}" for name, d in found.items())

        wait_for(running, f"{application} to reach RUNNING", timeout, interval=1, failure=RuntimeError,
                 explain=deployments)

    def stop(self) -> None:
        """Kill exactly this head's processes: those in its group and those naming its temp dir
        (`ray stop` would kill every Ray on the machine); the temp dir (Ray's session files) goes with them."""
        if self.process is None:
            return
        # Ray's workers sit in process groups of their own; left alive, one outlives the raylet by seconds and
        # writes its logs into a session directory the caller may be removing.
        pids = set(self.process_tree()) | set(self._processes_of_this_head())
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)
        wait_for(lambda: not any(_alive(pid) for pid in pids), "this Ray head's processes to exit", timeout=30,
                 interval=0.1)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def log_tail(self, chars: int = 3000) -> str:
        """The head's own output and the dashboard's log, where Serve's REST errors are explained."""
        parts = [self.log_file.read_text(errors="replace")[-chars:]]
        dashboard_log = self.temp_dir / "session_latest" / "logs" / "dashboard.log"
        if dashboard_log.exists():
            parts.append(f"--- {dashboard_log.name} ---\n" + dashboard_log.read_text(errors="replace")[-chars:])
        return "\n".join(parts)

    def process_tree(self) -> list[int]:
        """The head process and every process it started, directly or not: Ray's workers are the raylet's
        children, outside the head's process group."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except OSError:
                    continue
                children.setdefault(parent, []).append(int(entry.name))
        found, pending = [], [self.process.pid]
        while pending:
            pid = pending.pop()
            found.append(pid)
            pending.extend(children.get(pid, ()))
        return found

    def _processes_of_this_head(self) -> list[int]:
        marker = str(self.temp_dir).encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if marker in (entry / "cmdline").read_bytes():
                        found.append(int(entry.name))
                except OSError:
                    pass
        return found


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def localize_serve_config(config: dict, artifacts_dir: Path, port: int) -> dict:
    """A RayService's serveConfigV2 with the two things a pod provides and this machine does not: the
    artifacts path (pods mount /mnt/bernini/artifacts) and the HTTP port (KubeRay's pods own 8000)."""
    local = json.loads(json.dumps(config))
    local["http_options"] = {**local.get("http_options", {}), "host": "127.0.0.1", "port": port}
    for application in local["applications"]:
        application["args"]["artifacts_dir"] = str(artifacts_dir)
    return local

"""The operator as a real process (`bernini operator`), so tests can kill and restart it."""

import contextlib
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from localdev.processes import die_with_parent, free_port
from localdev.waiting import wait_for


class OperatorProcess:
    running: "set[OperatorProcess]" = set()

    @classmethod
    @contextlib.contextmanager
    def paused(cls):
        """Stop every operator the tests started, and start them again afterwards."""
        stopped = list(cls.running)
        for process in stopped:
            process.stop()
        try:
            yield
        finally:
            for process in stopped:
                process.start()
    def __init__(self, kubeconfig: Path, env: dict[str, str], log_file: Path, resync_seconds: float = 5.0,
                 namespaces: tuple[str, ...] = (), extra_args: tuple[str, ...] = (), http_store: bool = True):
        self.kubeconfig = kubeconfig
        self.env = env
        self.log_file = log_file
        self.resync_seconds = resync_seconds
        self.namespaces = namespaces
        self.extra_args = (*extra_args, "--allow-http-endpoints") if http_store else extra_args  # versitygw speaks plain http
        self.process: subprocess.Popen | None = None
        self.metrics_port = free_port()

    def start(self, timeout: float = 30) -> None:
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bernini", "operator", "--resync-seconds", str(self.resync_seconds),
             "--metrics-port", str(self.metrics_port), "--metrics-address", "127.0.0.1",
             *(f"--namespace={namespace}" for namespace in self.namespaces), *self.extra_args],
            env={**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig)},
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # a killed test run or benchmark leaves no operator behind
        )
        log.close()
        wait_for(self._metrics_answer, "the operator's metrics", timeout=timeout, interval=0.1,
                 explain=lambda: self.log()[-3000:])
        OperatorProcess.running.add(self)

    def _metrics_answer(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the operator exited:\n{self.log()[-3000:]}")
        try:
            self.metrics()
            return True
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies mid-reconcile."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        OperatorProcess.running.discard(self)
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def metrics(self) -> dict[str, float]:
        """Samples of the operator's /metrics, keyed like 'name{label="value"}'."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

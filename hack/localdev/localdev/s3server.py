"""A real S3-compatible server on loopback: versitygw serving a plain directory (Apache-2.0, Go)."""

import secrets
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from localdev import processes
from localdev.cluster import DEFAULT_BIN_DIR, ClusterError
from localdev.waiting import wait_for


@dataclass
class LocalS3:
    root: Path
    log_file: Path
    bin_dir: Path = DEFAULT_BIN_DIR
    tied_to_parent: bool = False
    host: str = "127.0.0.1"  # the real-node cluster's host address, so pods reach it too
    port: int = 0
    access_key: str = field(default_factory=lambda: "bernini" + secrets.token_hex(4))
    secret_key: str = field(default_factory=lambda: secrets.token_hex(16))
    pid: int = 0

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def credentials_env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    @property
    def executable(self) -> str:
        return str((self.bin_dir / "versitygw").resolve())

    def running(self) -> bool:
        return bool(self.pid) and processes.is_running(self.pid, self.executable)

    def start(self, timeout: float = 20.0) -> None:
        binary = self.bin_dir / "versitygw"
        if not binary.exists():
            raise ClusterError(f"{binary} is missing: run `make controlplane` first")
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or processes.free_port()
        argv = [
            # Keep-alive as S3 itself: versitygw closes every connection by default, which taxes clients that
            # make many ranged GETs with a TCP handshake each.
            str(binary.resolve()), "--port", f"{self.host}:{self.port}", "--health", "/health", "--quiet",
            "--keep-alive", "posix", str(self.root),
        ]
        # Keys go through the environment so they never show in `ps`.
        env = {"ROOT_ACCESS_KEY_ID": self.access_key, "ROOT_SECRET_ACCESS_KEY": self.secret_key}
        self.pid = processes.start(argv, self.log_file, env=env, tied_to_parent=self.tied_to_parent)
        wait_for(self._healthy, f"versitygw on {self.endpoint_url}", timeout, interval=0.05, failure=ClusterError,
                 explain=lambda: f"see {self.log_file}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/health", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        processes.stop({self.pid: self.executable})

"""A real Redis on the node network's host address, password protected: the external store of Ray's GCS fault
tolerance for the real-node cluster's head pods (Debian's redis-server, which `make node-packages` installs)."""

import os
import secrets
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

from localdev import processes
from localdev.cluster import ClusterError
from localdev.waiting import wait_for

PASSWORD_SECRET, PASSWORD_KEY = "bernini-redis", "password"  # the Secret a namespace gets (secret_manifest)


@dataclass
class LocalRedis:
    root: Path
    log_file: Path
    host: str
    tied_to_parent: bool = False
    port: int = 0
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    pid: int = 0
    executable: str = ""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        self.executable = shutil.which("redis-server") or ""
        if not self.executable:
            raise ClusterError("redis-server is missing: `make node-packages` installs it (Debian redis-server)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or processes.free_port()
        config = self.root / "redis.conf"  # the password in a file only we read, never on the command line
        with open(os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as written:
            written.write(f"bind {self.host}\nport {self.port}\nrequirepass {self.password}\ndir {self.root}\n"
                          "save \"\"\nappendonly no\nprotected-mode yes\n")
        self.pid = processes.start([self.executable, str(config)], self.log_file, tied_to_parent=self.tied_to_parent)
        wait_for(self._answers, f"redis-server on {self.address}", timeout, interval=0.05, failure=ClusterError,
                 explain=lambda: f"see {self.log_file}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as connection:
                connection.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                answer = b""
                while len(answer) < 12 and (chunk := connection.recv(64)):
                    answer += chunk
                return answer.startswith(b"+OK\r\n+PONG")
        except OSError:
            return False

    def secret_manifest(self, namespace: str) -> dict:
        """The Secret a BerniniDeployment's gcsFaultTolerance.passwordSecret names."""
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": PASSWORD_SECRET, "namespace": namespace},
                "stringData": {PASSWORD_KEY: self.password}}

    def stop(self) -> None:
        processes.stop({self.pid: self.executable})

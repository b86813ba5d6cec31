"""Start components as background processes with their own log files; stop exactly those processes."""

import ctypes
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range, so no outgoing connection can take it
    between now and the moment our server binds it (port 0 would hand out an ephemeral one)."""
    low = 20000
    high = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(low, max(low + 1000, high))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start(
    argv: list[str], log_file: Path, env: dict[str, str] | None = None, tied_to_parent: bool = False
) -> int:
    """Start argv detached in its own session, output to log_file; return its PID.

    tied_to_parent: the kernel sends SIGTERM when the starting process dies, so a crashed test run
    leaves nothing behind; `make cluster-up` must not set it, its components outlive the command.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            preexec_fn=die_with_parent if tied_to_parent else None,
        )
    return process.pid


def is_running(pid: int, executable: str) -> bool:
    """True when pid is alive and still runs executable (guards against a recycled PID)."""
    try:
        target = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return os.path.realpath(executable) == target.removesuffix(" (deleted)")


def stop(pids: dict[int, str], grace_seconds: float = 10.0) -> None:
    """SIGTERM each pid that still runs its executable, SIGKILL what outlives the grace period."""
    alive = {pid: exe for pid, exe in pids.items() if is_running(pid, exe)}
    for pid in alive:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while alive and time.monotonic() < deadline:
        _reap(alive)
        alive = {pid: exe for pid, exe in alive.items() if is_running(pid, exe)}
        time.sleep(0.05)
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    _reap(alive)


def _reap(pids: dict[int, str]) -> None:
    # Children of this process stay zombies (and "running" by /proc) until waited for.
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass

"""A loopback TCP forwarder that holds every connection until opened: a store that answers only when the test
says so, so a test can catch the operator in the middle of a reconcile. It records which process dialled: on a
busy machine a stale client of an earlier test's server may retry a port the kernel has since handed out again."""

import os
import socket
import threading
from pathlib import Path


class GatedForwarder:
    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connected = threading.Event()
        self.dialers: list[int | None] = []  # the PID behind each connection (None: gone before it was seen)
        self.opened = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.opened.set()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.dialers.append(_owner(client.getpeername()[1], self.port))
            self.connected.set()
            threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _forward(self, client: socket.socket) -> None:
        self.opened.wait()
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _owner(local_port: int, remote_port: int) -> int | None:
    """The PID holding the loopback socket local_port -> remote_port (root reads every process's descriptors)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)) == (local_port, remote_port):
            socket_link = f"socket:[{fields[9]}]"
            break
    else:
        return None
    for descriptors in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) == socket_link for fd in descriptors.iterdir()):
                return int(descriptors.parent.name)
        except OSError:  # the process ended meanwhile
            continue
    return None


class CuttableForwarder:
    """A loopback TCP forwarder that can be cut like a network partition: cut() drops every open connection and
    holds new ones unanswered (their bytes are never delivered, as packets lost on the way); restore() forwards
    again. Stands between one process and the real API server, so that process alone loses it."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._held: list[socket.socket] = []
        self._cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            dropped, self._open = self._open, []
        for connection in dropped:
            _close(connection)

    def restore(self) -> None:
        with self._lock:
            self._cut = False
            held, self._held = self._held, []
        for connection in held:  # what was sent into the partition is lost, never delivered late
            _close(connection)

    def close(self) -> None:
        self.cut()
        self.listener.close()
        self.restore()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if self._cut:
                    self._held.append(client)
                    continue
                self._open.append(client)
            threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            _close(client)
            return
        upstream.settimeout(None)
        with self._lock:
            self._open.append(upstream)
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)


def _close(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    connection.close()

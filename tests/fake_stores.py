"""Stores that misbehave on purpose, on loopback: FAKES for what versitygw cannot be made to do."""

import http.server
import threading
import time


class TricklingStore(http.server.BaseHTTPRequestHandler):
    """FAKE: a store that answers 200 and then sends one byte every 0.2 s."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            while True:
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    def log_message(self, *args):
        pass


class EndlessStore(TricklingStore):
    """FAKE: a store that streams bytes as fast as it can for ever, with no length."""

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        try:
            while True:
                self.wfile.write(b" " * 65536)
        except OSError:
            pass


def serving(handler) -> http.server.ThreadingHTTPServer:
    """handler served on a loopback port in the background; call shutdown() when done."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server

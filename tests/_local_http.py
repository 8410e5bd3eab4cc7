"""A fake HTTP endpoint on 127.0.0.1 for the tests that talk to the Hub (publish, download)."""
import threading
from http.server import ThreadingHTTPServer


class LocalServer:
    """Serves a BaseHTTPRequestHandler class on a free local port, in a daemon thread."""

    def serve(self, handler) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

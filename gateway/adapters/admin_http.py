"""The admin HTTP port: ``/metrics`` (Prometheus text), ``/healthz`` (process alive),
``/readyz`` (models loaded and not draining). Runs on its own daemon thread."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("gateway.telemetry")


class AdminServer:
    """``metrics_text`` renders the exposition (``content_type`` names its format); ``ready``
    says whether the data plane is ready and why not."""

    def __init__(self, host: str, port: int, *, metrics_text: Callable[[], str], content_type: str,
                 ready: Callable[[], tuple[bool, str]]) -> None:
        metrics_text_, content_type_, ready_ = metrics_text, content_type, ready

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    try:
                        self._send(200, metrics_text_(), content_type_)
                    except Exception as exc:
                        log.exception("rendering /metrics failed")
                        self._send(500, f"error: {exc}\n")
                elif path == "/healthz":
                    self._send(200, "ok\n")
                elif path == "/readyz":
                    ok, why = ready_()
                    self._send(200 if ok else 503, (why or ("ready" if ok else "not ready")) + "\n")
                else:
                    self._send(404, "not found\n")

            def _send(self, code: int, body: str, ctype: str = "text/plain; charset=utf-8"):
                raw = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, fmt, *args):  # scrapes are not notable events
                pass

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.host, self.port = self._httpd.server_address[:2]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="gateway-admin", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("admin HTTP on http://%s:%d (/metrics /healthz /readyz)", self.host, self.port,
                 extra={"event": "admin.listening"})

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

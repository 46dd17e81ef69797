"""A worker's private endpoint: HTTP over a unix socket in the supervisor's run directory.

``/metrics`` (the worker's Prometheus text), ``/readyz`` (200 ready, 503 not, the reason in
the body) and ``/share?window_s=S`` (its GetStats share as JSON, :mod:`.codec`); POST
``/traffic`` (a traffic change an admin call made on another worker, JSON) and ``/reload``.
Served on daemon threads, so a peer's GetStats never waits for this worker's event loop.
"""
from __future__ import annotations

import http.client
import logging
import os
import socket
import socketserver
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

log = logging.getLogger("gateway.workers")

#: A route: the query's parameters -> (HTTP status, body, content type).
Route = Callable[[dict[str, str]], tuple[int, str, str]]
#: A POST route: the request's body -> (HTTP status, body, content type).
PostRoute = Callable[[bytes], tuple[int, str, str]]
MAX_POST_BYTES = 1 << 20

TEXT = "text/plain; charset=utf-8"


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class PrivateEndpoint:
    """Serve ``routes`` (path -> :data:`Route`) on the unix socket ``path`` (replaced if stale)."""

    def __init__(self, path: str, routes: dict[str, Route], post_routes: dict[str, PostRoute] | None = None) -> None:
        routes_ = dict(routes)
        posts_ = dict(post_routes or {})

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server's naming
                url = urllib.parse.urlsplit(self.path)
                route = routes_.get(url.path)
                if route is None:
                    self._send(404, "not found\n", TEXT)
                    return
                try:
                    code, body, ctype = route(dict(urllib.parse.parse_qsl(url.query)))
                except ValueError as exc:  # a bad query parameter
                    code, body, ctype = 400, f"{exc}\n", TEXT
                except Exception as exc:
                    log.exception("worker endpoint %s failed", url.path)
                    code, body, ctype = 500, f"error: {exc}\n", TEXT
                self._send(code, body, ctype)

            def do_POST(self):  # noqa: N802 - http.server's naming
                route = posts_.get(urllib.parse.urlsplit(self.path).path)
                length = int(self.headers.get("Content-Length") or 0)
                if route is None or not 0 <= length <= MAX_POST_BYTES:
                    self._send(404 if route is None else 413, "not found\n" if route is None else "too large\n", TEXT)
                    return
                body = self.rfile.read(length)
                try:
                    code, text, ctype = route(body)
                except ValueError as exc:
                    code, text, ctype = 400, f"{exc}\n", TEXT
                except Exception as exc:
                    log.exception("worker endpoint %s failed", self.path)
                    code, text, ctype = 500, f"error: {exc}\n", TEXT
                self._send(code, text, ctype)

            def _send(self, code: int, body: str, ctype: str) -> None:
                raw = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def address_string(self) -> str:  # (a unix socket's peer has no address)
                return "worker"

            def log_message(self, fmt, *args):
                pass

        if os.path.exists(path):
            os.unlink(path)
        self.path = path
        self._server = _UnixHTTPServer(path, Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="gateway-worker-endpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout_s: float) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def get(path: str, target: str, timeout_s: float = 2.0) -> tuple[int, str]:
    """GET ``target`` from the endpoint at the unix socket ``path``: (status, body). Raises
    OSError (also ``http.client.HTTPException``, one) when it cannot be reached or answers
    nothing."""
    conn = _UnixConnection(path, timeout_s)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, response.read().decode()
    except http.client.HTTPException as exc:
        raise OSError(f"{path}: {exc!r}") from None
    finally:
        conn.close()


def post(path: str, target: str, body: bytes, timeout_s: float = 5.0) -> tuple[int, str]:
    """POST ``body`` to ``target`` at the unix socket ``path``: (status, body). Raises OSError as
    :func:`get` does."""
    conn = _UnixConnection(path, timeout_s)
    try:
        conn.request("POST", target, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read().decode()
    except http.client.HTTPException as exc:
        raise OSError(f"{path}: {exc!r}") from None
    finally:
        conn.close()

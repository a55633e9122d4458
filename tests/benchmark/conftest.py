"""Fixtures for the benchmark client tests.

`bench` is scripts/benchmark_vllm.py loaded as a module. `sse_server` is a
scripted HTTP server on loopback. It is a test double used only for streams
that a real server does not send on demand: malformed chunks, keep-alive
comments, dropped connections and error statuses. Tests of real behavior use
llama.cpp's llama-server through the `llama_server` fixture and carry the
`llama_server` marker.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT_PATH = REPO_ROOT / "scripts" / "benchmark_vllm.py"


if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.harness.llama_server import llama_server, start_llama_server  # noqa: E402, F401


def pytest_configure(config):
    config.addinivalue_line("markers", "llama_server: needs a real llama-server with a tiny model")


def load_benchmark_module():
    spec = importlib.util.spec_from_file_location("benchmark_vllm", SCRIPT_PATH)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is built.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def bench():
    return load_benchmark_module()


class Script:
    """Steps the fake server plays for one path.

    Steps are ("chunk", bytes) to send one HTTP chunk, ("sleep", seconds),
    and ("drop",) to close the connection without the final empty chunk. A
    script with a non-200 status sends `body` in one piece instead.
    """

    def __init__(self, steps=(), status=200, body=b"", content_type="text/event-stream"):
        self.steps = list(steps)
        self.status = status
        self.body = body
        self.content_type = content_type


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        self.server.requests.append((self.path, self.rfile.read(length)))
        script = self.server.scripts.get(self.path)
        if script is None:
            script = Script(status=404, body=b'{"error": {"message": "no script for this path"}}')
        if script.status != 200:
            self.send_response(script.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(script.body)))
            self.end_headers()
            self.wfile.write(script.body)
            return
        self.send_response(200)
        self.send_header("Content-Type", script.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for step in script.steps:
            if step[0] == "sleep":
                time.sleep(step[1])
            elif step[0] == "chunk":
                data = step[1]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            elif step[0] == "drop":
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # Clients in the timeout tests hang up while the script still writes.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class FakeSSEServer:
    def __init__(self):
        self.httpd = _QuietServer(("127.0.0.1", 0), _Handler)
        self.httpd.scripts = {}
        self.httpd.requests = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, path: str, script: Script) -> str:
        self.httpd.scripts[path] = script
        return self.base_url + path


@pytest.fixture
def sse_server():
    server = FakeSSEServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()

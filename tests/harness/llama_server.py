"""Run llama.cpp's llama-server on loopback with a tiny model, for tests of
OpenAI-compatible clients.

llama-server runs from the cached Debian sid rootfs under chroot (no Docker
needed) and listens on 127.0.0.1 at a free port. It serves a tiny random-weight
model (tests/harness/standin/model.py), so replies are meaningless text, always
exactly `max_tokens` tokens long. Start-up takes well under a second once the
rootfs is cached.

API:

- `llama_server` — session-scoped pytest fixture that returns a `LlamaServer`.
  It skips the test when the machine cannot run it (not root, or no
  debootstrap and no cached rootfs). To use it from another test folder, import
  it into that folder's conftest.py:

      from tests.harness.llama_server import llama_server  # noqa: F401

- `LlamaServer` — what the fixture returns:
  - `base_url`: "http://127.0.0.1:PORT" (append "/v1" for OpenAI clients)
  - `alias`: the model name /v1/models lists ("qwen3-30b" by default)
  - `port`, `pid`, `api_key` (None when no key is required), and `log_path`
    (the server's output; deleted when the server stops)
- `start_llama_server(alias=..., api_key=None, slots=2, context_per_slot=2048,
  timeout=60.0)` — start one more server and return a `LlamaServerProcess`, a
  context manager whose `.server` is a `LlamaServer` and whose `.stop()` ends
  it by PID. Use it for a server with other settings, such as an API key.
- `unavailable_reason()` — why llama-server cannot run here, or None.

What it serves: /health (503 while loading, then 200), /v1/models, and
/v1/chat/completions, plain and streaming. A stream has a role chunk, content
chunks, a finish chunk, a usage chunk with `choices: []` when the request sets
`stream_options: {"include_usage": true}`, and `data: [DONE]`.

Differences from vLLM that a client test should not rely on: llama-server
serves any model name in a request (vLLM answers 404 for an unknown one), and
its context (-c) is split evenly across its slots (-np).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from .standin import rootfs
from .standin.model import write_model

log = logging.getLogger(__name__)

DEFAULT_ALIAS = "qwen3-30b"
MODEL_IN_ROOT = "opt/bestbox-standin/model.gguf"
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class LlamaServer:
    """A running llama-server on loopback."""

    base_url: str
    alias: str
    port: int
    pid: int
    api_key: str | None
    log_path: Path


def unavailable_reason() -> str | None:
    """Return why llama-server cannot run on this machine, or None when it can."""
    return rootfs.unavailable_reason()


class LlamaServerProcess:
    """Start llama-server under chroot and stop it by PID.

    Use as a context manager, or call `start()` and `stop()`.
    """

    def __init__(
        self,
        alias: str = DEFAULT_ALIAS,
        api_key: str | None = None,
        slots: int = 2,
        context_per_slot: int = 2048,
        timeout: float = 60.0,
    ) -> None:
        self.alias = alias
        self.api_key = api_key
        self.slots = slots
        self.context_per_slot = context_per_slot
        self.timeout = timeout
        self.server: LlamaServer | None = None
        self._process: subprocess.Popen | None = None
        self._log_dir: Path | None = None

    def start(self) -> LlamaServer:
        """Start llama-server and wait until /health returns 200.

        Retries with another port when the chosen one was taken in the
        meantime. Raises RuntimeError with the server log when it never
        becomes healthy.
        """
        if self._process is not None:
            raise RuntimeError(f"this llama-server is already running (pid {self._process.pid})")
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(f"llama-server cannot run here: {reason}")
        root = rootfs.ensure_tree()
        _install_model(root)
        self._log_dir = Path(tempfile.mkdtemp(prefix="llama-server-"))
        try:
            for attempt in range(3):
                port = _free_loopback_port()
                try:
                    self.server = self._start_on(root, port, self._log_dir / f"llama-server-{port}.log")
                    return self.server
                except _PortTaken:
                    log.info("port %d was taken before llama-server bound it; retrying (attempt %d)", port, attempt + 1)
            raise RuntimeError("llama-server could not bind a free loopback port in 3 attempts")
        except BaseException:
            self.stop()
            raise

    def _start_on(self, root: Path, port: int, log_path: Path) -> LlamaServer:
        command = [
            "chroot", str(root), "/usr/bin/llama-server",
            "--host", "127.0.0.1",
            "--port", str(port),
            "--alias", self.alias,
            "-m", "/" + MODEL_IN_ROOT,
            "-c", str(self.context_per_slot * self.slots),
            "-np", str(self.slots),
            "--metrics",
        ]
        if self.api_key:
            command += ["--api-key", self.api_key]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
        started = time.monotonic()
        with open(log_path, "wb") as log_file:
            # chroot execs llama-server, so the PID is llama-server's own.
            self._process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True,
            )
        server = LlamaServer(
            base_url=f"http://127.0.0.1:{port}", alias=self.alias, port=port,
            pid=self._process.pid, api_key=self.api_key, log_path=log_path,
        )
        deadline = started + self.timeout
        while time.monotonic() < deadline:
            status = self._process.poll()
            if status is not None:
                self._process = None
                text = log_path.read_text(errors="replace")
                if "couldn't bind" in text.lower() or "address already in use" in text.lower():
                    raise _PortTaken()
                raise RuntimeError(f"llama-server exited with status {status}:\n{_tail(text)}")
            if _health_status(server.base_url) == 200:
                log.info("llama-server (pid %d) healthy on %s after %.2f s", server.pid, server.base_url, time.monotonic() - started)
                return server
            time.sleep(0.1)
        raise RuntimeError(
            f"llama-server did not report healthy on {server.base_url} within {self.timeout:.0f} s:\n"
            + _tail(log_path.read_text(errors="replace"))
        )

    def stop(self) -> None:
        """Stop llama-server by its PID (SIGTERM, then SIGKILL after 10 s) and delete its log."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("llama-server (pid %d) ignored SIGTERM for %.0f s: sending SIGKILL", process.pid, STOP_TIMEOUT_S)
                process.kill()
                process.wait(5)
        if self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None

    def __enter__(self) -> "LlamaServerProcess":
        if self._process is None:
            self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start_llama_server(**options) -> LlamaServerProcess:
    """Start a llama-server with LlamaServerProcess's options and return the running process.

    Stop it with `.stop()`, or use the result in a `with` block, which stops it at the end.
    """
    process = LlamaServerProcess(**options)
    process.start()
    return process


@pytest.fixture(scope="session")
def llama_server():
    """A llama-server on loopback serving the tiny model as "qwen3-30b", for the whole session."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"llama-server unavailable: {reason}")
    with LlamaServerProcess() as process:
        yield process.server


class _PortTaken(Exception):
    pass


def _install_model(root: Path) -> None:
    """Write the tiny model into the rootfs, replacing it only when its bytes changed."""
    target = root / MODEL_IN_ROOT
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".model-", dir=target.parent)
    os.close(fd)
    write_model(temporary)
    if target.is_file() and target.read_bytes() == Path(temporary).read_bytes():
        os.unlink(temporary)
        return
    os.chmod(temporary, 0o644)
    os.replace(temporary, target)


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _health_status(base_url: str) -> int | None:
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])

"""Fixtures for tests that run containers on a private Docker engine.

- `docker_engine` (session): a dockerd started for this test session (see
  tests/harness/engine.py), with `.env`, `.docker(*args)` and `.compose(*args)`.
  Its data root is cached, so images built once survive into later runs.
- `standin_image` (session): the tag of the stand-in vLLM image, built on that
  engine when missing or out of date (see tests/harness/standin/README.md).
- `step_timer` (session): `with step_timer("name"): ...` records how long a
  step took; the durations are printed at the end of the run.

Tests that use these carry the `docker` marker and are skipped, with the
reason, when the machine is not set up for them.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# The harness is imported as the package `tests.harness`, which needs the
# repository root on sys.path however pytest was started.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.harness import engine as engine_module  # noqa: E402
from tests.harness.standin import image as standin_image_module  # noqa: E402
from tests.harness.standin import rootfs  # noqa: E402

_STEP_TIMES: list[tuple[str, float]] = []


def pytest_configure(config):
    config.addinivalue_line("markers", "docker: needs root and a private Docker engine (Debian's docker.io)")


def pytest_terminal_summary(terminalreporter):
    if not _STEP_TIMES:
        return
    terminalreporter.section("Docker harness step times")
    for name, seconds in _STEP_TIMES:
        terminalreporter.write_line(f"{seconds:8.2f} s  {name}")


@contextmanager
def _timed(name: str):
    started = time.monotonic()
    try:
        yield
    finally:
        _STEP_TIMES.append((name, time.monotonic() - started))


@pytest.fixture(scope="session")
def step_timer():
    return _timed


@pytest.fixture(scope="session")
def docker_engine():
    reason = engine_module.unavailable_reason()
    if reason:
        pytest.skip(f"Docker engine unavailable: {reason}")
    engine = engine_module.DockerEngine()
    with _timed("start dockerd"):
        engine.start()
    try:
        yield engine
    finally:
        with _timed("stop dockerd"):
            engine.stop()


@pytest.fixture(scope="session")
def standin_image(docker_engine):
    reason = rootfs.unavailable_reason()
    if reason:
        pytest.skip(f"stand-in image cannot be built: {reason}")
    with _timed("ensure stand-in image (rootfs, import, build)"):
        return standin_image_module.ensure_image(docker_engine)

"""Put the stand-in vLLM image into the Docker engine of a throwaway host.

No registry is reachable from the hosts, so the image travels as a
`docker save` tarball. The tarball is built once on this machine's private
test engine (tests/harness/engine.py), cached next to the stand-in's root
filesystem and named after the stand-in's input hash, so a change to the
stand-in builds a new one. Each host then runs `docker load` on it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tests.harness import engine as engine_module
from tests.harness.standin import image as standin_image
from tests.harness.standin import rootfs as standin_rootfs

IMAGE = standin_image.IMAGE
# The stand-in with STANDIN_NEVER_HEALTHY=1 baked in: /health returns 503 forever.
NEVER_HEALTHY_IMAGE = "bestbox-test/vllm-standin:never-healthy"
TARBALL_PREFIX = "vllm-standin-"
TARBALL_SUFFIX = ".docker.tar"
# Where the host's engine finds a staged tarball: host.dir/docker-data is
# bind-mounted there inside the host.
STAGED_NAME = "vllm-standin-load.tar"


def tarball_path() -> Path:
    """Return the cache path of the saved image for the current stand-in inputs."""
    key = standin_image.image_key()
    return standin_rootfs.standin_cache() / f"{TARBALL_PREFIX}{key}{TARBALL_SUFFIX}"


def unavailable_reason() -> str | None:
    """Return why the saved stand-in image can be neither found nor built, or None."""
    if tarball_path().is_file():
        return None
    return engine_module.unavailable_reason() or standin_rootfs.unavailable_reason()


def ensure_tarball() -> Path:
    """Return the saved stand-in image, building and saving it first when the cache has none.

    The build holds the private engine's data root lock while it runs (see
    DockerEngine), so parallel runs build the image once.
    """
    path = tarball_path()
    if path.is_file():
        return path
    cache = path.parent
    cache.mkdir(parents=True, exist_ok=True)
    with engine_module.DockerEngine() as engine:
        if path.is_file():
            return path
        tag = standin_image.ensure_image(engine)
        handle, partial = tempfile.mkstemp(prefix="save-", suffix=".tar", dir=cache)
        os.close(handle)
        try:
            engine.docker("save", "--output", partial, tag)
            Path(partial).chmod(0o644)
            Path(partial).replace(path)
        finally:
            Path(partial).unlink(missing_ok=True)
    # Saved images of older stand-in inputs are of no further use.
    for stale in cache.glob(f"{TARBALL_PREFIX}*{TARBALL_SUFFIX}"):
        if stale != path:
            stale.unlink(missing_ok=True)
    return path


def load_image(host, tarball: Path) -> None:
    """Run `docker load` on the saved image inside the host, then check the tag exists."""
    with host.staged_for_engine(tarball, STAGED_NAME) as inside:
        host.exec(["docker", "load", "--input", inside], timeout=600)
    host.exec(["docker", "image", "inspect", "--format", "{{.Id}}", IMAGE])


def build_never_healthy_image(host) -> str:
    """Build NEVER_HEALTHY_IMAGE from the loaded stand-in inside the host and return its tag.

    The Dockerfile comes on standard input, so the build has no context and
    needs no network.
    """
    dockerfile = f"FROM {IMAGE}\nENV STANDIN_NEVER_HEALTHY=1\n"
    host.run(["docker", "build", "--pull=false", "--network", "none",
              "--tag", NEVER_HEALTHY_IMAGE, "-"], input=dockerfile, timeout=300)
    return NEVER_HEALTHY_IMAGE

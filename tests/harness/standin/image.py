"""Build the stand-in vLLM image on a test Docker engine, with no registry.

Two steps, each skipped when its result is already in the engine's data root:

1. `docker import` of the cached sid rootfs tarball gives the base image
   `bestbox-test/sid-llama:KEY` (KEY is the rootfs recipe hash).
2. `docker build` FROM that base adds the tiny GGUF model and the `vllm`
   entrypoint and tags `bestbox-test/vllm-standin:latest`. The image carries a
   label with a hash of its inputs, so a change to the model generator, the
   entrypoint or the Dockerfile rebuilds it.

The image has no ENTRYPOINT, like the ROCm vLLM images: a compose service runs
`command: ["vllm", "serve", MODEL, ...]` and gets the stand-in. See the README
beside this file for what the stand-in does not cover.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

from . import rootfs
from .model import write_model

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
IMAGE = "bestbox-test/vllm-standin:latest"
BASE_REPOSITORY = "bestbox-test/sid-llama"
KEY_LABEL = "org.bestbox.test.standin-key"
INPUTS = ("Dockerfile", "vllm_entrypoint.py", "model.py")


def image_key() -> str:
    """Return a short hash of the base rootfs recipe and the files the image is built from."""
    digest = hashlib.sha256(rootfs.recipe_key().encode())
    for name in INPUTS:
        digest.update(name.encode() + b"\0" + (HERE / name).read_bytes())
    return digest.hexdigest()[:16]


def base_image() -> str:
    return f"{BASE_REPOSITORY}:{rootfs.recipe_key()}"


def ensure_image(engine, tag: str = IMAGE) -> str:
    """Build the stand-in image on `engine` (a tests.harness.engine.DockerEngine) unless
    an up-to-date one exists, and return its tag.

    A cold build, rootfs included, took about 45 s on a 2-core test machine.
    A warm call only inspects the image.
    """
    key = image_key()
    current = engine.docker("image", "inspect", "--format", f'{{{{index .Config.Labels "{KEY_LABEL}"}}}}', tag, check=False)
    if current.returncode == 0 and current.stdout.strip() == key:
        log.info("%s is up to date (key %s)", tag, key)
        return tag

    base = base_image()
    if engine.docker("image", "inspect", base, check=False).returncode != 0:
        tarball = rootfs.ensure_tarball()
        started = time.monotonic()
        engine.docker("import", "--message", f"Debian sid rootfs {tarball.name}", str(tarball), base)
        log.info("imported %s as %s in %.1f s", tarball.name, base, time.monotonic() - started)

    started = time.monotonic()
    context = Path(tempfile.mkdtemp(prefix="standin-context-"))
    try:
        shutil.copy(HERE / "Dockerfile", context / "Dockerfile")
        entrypoint = context / "vllm_entrypoint.py"
        shutil.copy(HERE / "vllm_entrypoint.py", entrypoint)
        # The classic builder keeps the mode of copied files, and the base
        # image has no shell step to set it.
        entrypoint.chmod(0o755)
        write_model(context / "model.gguf")
        (context / "model.gguf").chmod(0o644)
        engine.docker(
            "build", "--pull=false", "--network", "none",
            "--build-arg", f"BASE_IMAGE={base}",
            "--label", f"{KEY_LABEL}={key}",
            "--tag", tag, str(context),
        )
    finally:
        shutil.rmtree(context, ignore_errors=True)
    log.info("built %s (key %s) in %.1f s", tag, key, time.monotonic() - started)
    return tag

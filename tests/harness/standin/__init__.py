"""A stand-in for the ROCm vLLM image: llama-server with a tiny model, behind a
`vllm serve` command line. See README.md in this folder."""

from .image import IMAGE, ensure_image
from .model import write_model
from .rootfs import ensure_tarball, ensure_tree

__all__ = ["IMAGE", "ensure_image", "ensure_tarball", "ensure_tree", "write_model"]

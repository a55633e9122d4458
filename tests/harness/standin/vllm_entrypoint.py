#!/usr/bin/python3
"""Stand-in for vLLM's `vllm serve` command, installed as /usr/local/bin/vllm in
the test image. It runs llama.cpp's llama-server with a tiny baked-in model.

It exists because the real service cannot run on the test machines: the real
image is a 41.5 GB ROCm build of vLLM, it needs an AMD GPU (/dev/kfd, /dev/dri)
and it loads a 61 GB model. What the stand-in does NOT cover:

- ROCm and the GPU. It runs on the CPU, needs no device nodes and ignores the
  ROCm environment (HSA_OVERRIDE_GFX_VERSION, PYTORCH_ROCM_ARCH, ...).
- vLLM itself. Engine start-up, memory checks (--gpu-memory-utilization, KV
  cache sizing), model loading from MODEL and vLLM's exact API behaviour are not
  exercised. One known difference: llama-server serves any model name in a
  request, where vLLM answers 404 for a name it does not serve.
- The real model. MODEL must exist, but the stand-in never reads it.

What it does cover: the `vllm serve MODEL --flag ...` command line, including
rejecting a flag vLLM does not have and a few value checks that vLLM's parser
also makes; the port, API key (--api-key or VLLM_API_KEY) and served model name;
/health, /v1/models, plain and streaming chat completions with usage, and
/metrics (llama.cpp's metric names, not vLLM's).

Test switches, read from the environment:
- STANDIN_NEVER_HEALTHY=1: respond to every request, /health included, with
  503 "Loading model" forever, as a server that never finishes loading.
- STANDIN_START_DELAY=SECONDS: respond with 503 for that long, then start serving.
- STANDIN_MODEL: path of the GGUF file (default /opt/bestbox-standin/model.gguf).

Only the Python standard library is used, because the image has no pip.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

STANDIN_VERSION = "0.0.0+bestbox.standin"
LLAMA_SERVER = "/usr/bin/llama-server"
DEFAULT_GGUF = "/opt/bestbox-standin/model.gguf"

# llama-server splits its context (-c) evenly across its slots (-np). The caps
# keep the KV cache of the tiny model small when vLLM's defaults are used.
DEFAULT_MAX_MODEL_LEN = 4096
DEFAULT_MAX_NUM_SEQS = 4
MAX_SLOTS = 16
MAX_TOTAL_CONTEXT = 65536

# vLLM flags that take a value. The stand-in accepts them and ignores the value.
IGNORED_VALUE_FLAGS = (
    "--allowed-headers", "--allowed-methods", "--allowed-origins", "--api-server-count",
    "--attention-backend", "--block-size", "--chat-template", "--chat-template-content-format",
    "--compilation-config", "--config", "--config-format", "--cpu-offload-gb",
    "--data-parallel-size", "--distributed-executor-backend", "--download-dir",
    "--generation-config", "--hf-config-path", "--hf-overrides", "--kv-cache-dtype",
    "--kv-cache-memory-bytes", "--limit-mm-per-prompt", "--load-format", "--logits-processors",
    "--long-prefill-token-threshold", "--lora-modules", "--max-log-len", "--max-logprobs",
    "--max-lora-rank", "--max-loras", "--max-num-partial-prefills", "--max-seq-len-to-capture",
    "--middleware", "--mm-processor-kwargs", "--override-generation-config",
    "--pipeline-parallel-size", "--quantization", "--reasoning-parser",
    "--response-role", "--revision", "--root-path", "--scheduling-policy", "--seed",
    "--speculative-config", "--ssl-certfile", "--ssl-keyfile", "--swap-space",
    "--tensor-parallel-size", "--tokenizer", "--tokenizer-mode", "--tokenizer-revision",
    "--tool-call-parser", "--tool-parser-plugin", "--uvicorn-log-level", "--worker-cls",
)
SHORT_FLAGS = {
    "--compilation-config": "-O",
    "--data-parallel-size": "-dp",
    "--pipeline-parallel-size": "-pp",
    "--quantization": "-q",
    "--tensor-parallel-size": "-tp",
}

# vLLM boolean flags, accepted with or without a `--no-` prefix and ignored.
IGNORED_BOOLEAN_FLAGS = (
    "--async-scheduling", "--disable-cascade-attn", "--disable-custom-all-reduce",
    "--disable-fastapi-docs", "--disable-frontend-multiprocessing", "--disable-log-requests",
    "--disable-log-stats", "--disable-sliding-window", "--disable-uvicorn-access-log",
    "--enable-auto-tool-choice", "--enable-chunked-prefill", "--enable-expert-parallel",
    "--enable-force-include-usage", "--enable-log-outputs", "--enable-log-requests",
    "--enable-lora", "--enable-prefix-caching", "--enable-prompt-tokens-details",
    "--enable-request-id-headers", "--enable-server-load-tracking", "--enable-sleep-mode",
    "--enforce-eager", "--headless", "--return-tokens-as-token-ids", "--skip-tokenizer-init",
    "--trust-remote-code", "--use-tqdm-on-load",
)

# Parsed options that have no effect on llama-server, by argparse destination.
IGNORED_OPTIONS = frozenset(
    [flag[2:].replace("-", "_") for flag in IGNORED_VALUE_FLAGS + IGNORED_BOOLEAN_FLAGS]
    + ["dtype", "gpu_memory_utilization", "max_num_batched_tokens"]
)

DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")

ROCM_VARIABLES = (
    "HSA_OVERRIDE_GFX_VERSION", "PYTORCH_ROCM_ARCH", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
    "HSA_ENABLE_SDMA", "FLASH_ATTENTION_TRITON_AMD_ENABLE", "VLLM_USE_TRITON_FLASH_ATTN",
)


def say(message: str) -> None:
    print(f"[vllm-standin] {message}", flush=True)


def human_readable_int(text: str) -> int:
    """Parse an integer with an optional size suffix, as vLLM's length flags do.

    Lowercase k/m/g are powers of 1000 and uppercase K/M/G powers of 1024, so
    `32k` is 32000 and `32K` is 32768.
    """
    multipliers = {"k": 10**3, "m": 10**6, "g": 10**9, "K": 2**10, "M": 2**20, "G": 2**30}
    text = text.strip()
    if text and text[-1] in multipliers:
        number, multiplier = text[:-1], multipliers[text[-1]]
    else:
        number, multiplier = text, 1
    try:
        value = float(number) * multiplier
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer value: {text!r}") from None
    if value != int(value):
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(value)


def memory_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vllm serve",
        usage="vllm serve MODEL [options]",
        description="Stand-in for `vllm serve`: runs llama-server with a tiny CPU model.",
        allow_abbrev=False,
    )
    parser.add_argument("model_tag", nargs="?", help="model directory (must exist; not read)")
    parser.add_argument("--model", help="same as the positional MODEL")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--served-model-name", nargs="+", help="names the API serves the model as")
    parser.add_argument("--api-key", help="key clients must send; VLLM_API_KEY is the fallback")
    parser.add_argument("--max-model-len", type=human_readable_int, help="context length of one request")
    parser.add_argument("--max-num-seqs", type=int, help="concurrent requests (llama-server slots)")
    parser.add_argument("--max-num-batched-tokens", type=human_readable_int, help="ignored")
    parser.add_argument("--dtype", choices=DTYPES, help="ignored (the tiny model is F32)")
    parser.add_argument("--gpu-memory-utilization", type=memory_fraction, help="ignored (no GPU)")
    for flag in IGNORED_VALUE_FLAGS:
        names = [flag, SHORT_FLAGS[flag]] if flag in SHORT_FLAGS else [flag]
        parser.add_argument(*names, metavar="VALUE", help="ignored")
    for flag in IGNORED_BOOLEAN_FLAGS:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help="ignored")
    return parser


def normalise_flag_names(args: list[str]) -> list[str]:
    """Turn `--max_model_len` into `--max-model-len`, as vLLM's parser does."""
    normalised = []
    for arg in args:
        if arg.startswith("--"):
            name, sep, value = arg.partition("=")
            arg = name.replace("_", "-") + sep + value
        normalised.append(arg)
    return normalised


def check_model_path(path: str) -> None:
    """Exit when MODEL does not exist, as vLLM does with HF_HUB_OFFLINE=1."""
    model = Path(path)
    if not model.exists():
        say(f"error: model path {path} does not exist in the container; vLLM would treat it as a "
            "hub repository id and fail offline. Mount the model directory there.")
        sys.exit(1)
    if model.is_dir():
        entries = sorted(entry.name for entry in model.iterdir())
        say(f"model directory {path} exists with {len(entries)} entries (not read: the stand-in serves its own tiny model)")
        if "config.json" not in entries:
            say(f"warning: {model / 'config.json'} is missing; the real vLLM would fail to load this model")
    else:
        say(f"model path {path} exists and is not a directory (not read)")


def llama_server_command(args: argparse.Namespace, model_name: str, gguf: str, api_key: str | None) -> list[str]:
    max_model_len = args.max_model_len or DEFAULT_MAX_MODEL_LEN
    slots = min(args.max_num_seqs or DEFAULT_MAX_NUM_SEQS, MAX_SLOTS)
    per_slot = min(max_model_len, MAX_TOTAL_CONTEXT // slots)
    if args.max_num_seqs and args.max_num_seqs > slots:
        say(f"--max-num-seqs {args.max_num_seqs} capped at {slots} llama-server slots")
    if per_slot < max_model_len:
        say(f"--max-model-len {max_model_len} capped at {per_slot} tokens per slot")
    command = [
        LLAMA_SERVER,
        "--host", args.host,
        "--port", str(args.port),
        "--alias", model_name,
        "-m", gguf,
        "-c", str(per_slot * slots),
        "-np", str(slots),
        "--metrics",
    ]
    if api_key:
        command += ["--api-key", api_key]
    return command


class NotReadyHandler(BaseHTTPRequestHandler):
    """Responds to every request with 503 "Loading model", as llama-server does while loading.

    Health checks poll often, so only the first request and every 30th after
    it are logged, with a running count.
    """

    requests_served = 0

    def _not_ready(self) -> None:
        body = json.dumps({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_HEAD = _not_ready

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class names it so)
        NotReadyHandler.requests_served += 1
        count = NotReadyHandler.requests_served
        if count % 30 == 1:
            say(f"answered 503 to request {count}: " + format % args)


def serve_not_ready(host: str, port: int, seconds: float | None) -> None:
    """Serve 503 on host:port for `seconds`, or until stopped when seconds is None."""
    server = ThreadingHTTPServer((host, port), NotReadyHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        if seconds is None:
            threading.Event().wait()
        time.sleep(seconds)
    finally:
        server.shutdown()
        server.server_close()


def stop_on_signal(signum: int, _frame) -> None:
    # As PID 1 in a container, the process ignores SIGTERM unless it handles it.
    say(f"received signal {signum}: stopping")
    sys.exit(0)


def serve(argv: list[str]) -> int:
    args = build_parser().parse_args(normalise_flag_names(argv))
    model_path = args.model_tag or args.model
    if not model_path:
        build_parser().error("the model directory is required: vllm serve MODEL [options]")
    check_model_path(model_path)

    model_name = ",".join(args.served_model_name) if args.served_model_name else model_path
    api_key = args.api_key or os.environ.get("VLLM_API_KEY") or None
    gguf = os.environ.get("STANDIN_MODEL", DEFAULT_GGUF)
    if not Path(gguf).is_file():
        say(f"error: the stand-in's GGUF model {gguf} is missing from the image")
        return 1

    ignored = sorted(name for name, value in vars(args).items() if name in IGNORED_OPTIONS and value is not None)
    if ignored:
        say("accepted and ignored (not covered by the stand-in): " + ", ".join(ignored))
    rocm = [name for name in ROCM_VARIABLES if name in os.environ]
    if rocm:
        say("ROCm environment ignored (no GPU in the stand-in): " + ", ".join(rocm))

    signal.signal(signal.SIGTERM, stop_on_signal)
    signal.signal(signal.SIGINT, stop_on_signal)
    if os.environ.get("STANDIN_NEVER_HEALTHY") == "1":
        say(f"STANDIN_NEVER_HEALTHY=1: responding with 503 on {args.host}:{args.port} until stopped")
        serve_not_ready(args.host, args.port, None)
        return 0
    delay = float(os.environ.get("STANDIN_START_DELAY") or 0)
    if delay > 0:
        say(f"STANDIN_START_DELAY={delay:g}: responding with 503 on {args.host}:{args.port} for {delay:g} s")
        serve_not_ready(args.host, args.port, delay)

    command = llama_server_command(args, model_name, gguf, api_key)
    printable_command = ["***" if api_key and part == api_key else part for part in command]
    say(f"serving {model_name!r} on {args.host}:{args.port}: " + " ".join(printable_command))
    os.execv(command[0], command)
    return 1  # not reached: execv replaces this process


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print("usage: vllm serve MODEL [options]   (stand-in for vLLM; see `vllm serve --help`)")
        return 0 if argv else 2
    if argv[0] in {"-v", "--version"}:
        print(STANDIN_VERSION)
        return 0
    if argv[0] != "serve":
        print(f"vllm: error: the stand-in supports only `vllm serve`, not {argv[0]!r}", file=sys.stderr)
        return 2
    return serve(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

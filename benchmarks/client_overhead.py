#!/usr/bin/env python3
"""Measure the cost of scripts/benchmark_vllm.py itself, to show whether it could limit a measured rate.

Two measurements:

1. Parser only, in memory: a synthetic chat completion stream in vLLM's
   chunk format goes through SSEDecoder and StreamAccumulator one event per
   read, as a live stream arrives. The result is the CPU time per token and
   the highest token rate the parser handles on one core.
2. Whole client over loopback: stream_chat talks to an HTTP server in a
   separate process that streams as fast as it can. The client's own CPU
   time (time.process_time, which excludes the server process) gives the
   fixed cost of one request and the cost per token over HTTP.

The client's worker threads share one interpreter lock, so the per-core rate
bounds the sum over all concurrent requests. The script exits 1 when that
rate is below `--margin` times `--target-rate` (default 10 x 100 tokens/s,
the order of what the target box serves).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import socket
import statistics
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

SCRIPT_PATH = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_vllm.py"


def load_client():
    spec = importlib.util.spec_from_file_location("benchmark_vllm", SCRIPT_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def synthetic_events(tokens: int, prompt_tokens: int = 128) -> list[bytes]:
    """Return the events of one chat completion stream, shaped like vLLM's."""
    base = {"id": "chatcmpl-0123456789abcdef", "object": "chat.completion.chunk", "created": 1767225600,
            "model": "qwen3-30b"}

    def event(body: dict) -> bytes:
        return b"data: " + json.dumps({**base, **body}).encode() + b"\n\n"

    events = [event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                  "logprobs": None, "finish_reason": None}]})]
    for index in range(tokens):
        events.append(event({"choices": [{"index": 0, "delta": {"content": f" word{index % 50}"},
                                          "logprobs": None, "finish_reason": None}]}))
        if index % 100 == 99:
            events.append(b": ping\n\n")
    events.append(event({"choices": [{"index": 0, "delta": {"content": ""}, "logprobs": None,
                                      "finish_reason": "length", "stop_reason": None}]}))
    events.append(event({"choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens,
                                                  "total_tokens": prompt_tokens + tokens}}))
    events.append(b"data: [DONE]\n\n")
    return events


def measure_parser(client, tokens: int, repeats: int) -> dict:
    """Parse an in-memory stream `repeats` times; return the best CPU time per token."""
    events = synthetic_events(tokens)
    per_token = []
    for _ in range(repeats):
        start = time.process_time()
        result = client.RequestResult(index=0)
        accumulator = client.StreamAccumulator(result, time.perf_counter())
        decoder = client.SSEDecoder()
        for data in events:
            now = time.perf_counter()
            for payload in decoder.feed(data):
                accumulator.add(payload, now)
        accumulator.finish(time.perf_counter())
        elapsed = time.process_time() - start
        if result.completion_tokens != tokens or not result.success:
            raise RuntimeError(f"parser counted {result.completion_tokens} tokens, expected {tokens}")
        per_token.append(elapsed / tokens)
    best = min(per_token)
    return {"tokens": tokens, "repeats": repeats, "cpu_us_per_token": best * 1e6,
            "max_tokens_per_s": 1.0 / best if best > 0 else float("inf")}


class _StreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        events = synthetic_events(int(body["max_tokens"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for data in events:
            # One HTTP chunk per event, as a server that flushes each event sends it. The pause
            # makes each client read return one event, as it does at a live
            # server's pace, so no read is shared between tokens.
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
            time.sleep(self.server.pace_s)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _serve(listener: socket.socket, pace_s: float) -> None:
    server = ThreadingHTTPServer(listener.getsockname(), _StreamHandler, bind_and_activate=False)
    server.pace_s = pace_s
    server.socket.close()
    server.socket = listener
    server.serve_forever()


def measure_loopback(client, tokens: int, requests_count: int, pace_s: float) -> dict:
    """Stream from a loopback server in another process; return the client's own costs."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    url = "http://127.0.0.1:%d/v1/chat/completions" % listener.getsockname()[1]
    context = multiprocessing.get_context("fork")
    server = context.Process(target=_serve, args=(listener, pace_s), daemon=True)
    server.start()
    listener.close()
    try:
        headers = client.build_headers(None)
        with requests.Session() as session:

            def run(output_tokens: int) -> tuple[float, float]:
                body = client.build_chat_body("qwen3-30b", "hello", output_tokens, None)
                cpu_start, wall_start = time.process_time(), time.perf_counter()
                result = client.stream_chat(session, url, body, headers, 30.0)
                cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
                if not result.success or result.completion_tokens != output_tokens:
                    raise RuntimeError(f"loopback request failed: {result.error_kind} {result.error_reason}")
                return cpu, wall

            run(1)  # opens the connection that the session then reuses
            short = [run(1) for _ in range(requests_count)]
            long = [run(tokens) for _ in range(requests_count)]
    finally:
        server.terminate()
        server.join(5)

    short_cpu = statistics.median(cpu for cpu, _ in short)
    long_cpu = statistics.median(cpu for cpu, _ in long)
    long_wall = statistics.median(wall for _, wall in long)
    per_token = max(long_cpu - short_cpu, 1e-9) / (tokens - 1)
    return {
        "tokens": tokens,
        "requests": requests_count,
        "request_cpu_ms": short_cpu * 1e3,
        "request_wall_ms": statistics.median(wall for _, wall in short) * 1e3,
        "cpu_us_per_token": per_token * 1e6,
        "max_tokens_per_s": 1.0 / per_token,
        "received_tokens_per_s": tokens / long_wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=2000, help="output tokens per synthetic stream (default 2000)")
    parser.add_argument("--repeats", type=int, default=5, help="in-memory parses and loopback requests (default 5)")
    parser.add_argument("--target-rate", type=float, default=100.0,
                        help="token rate of the server under test, in tokens/s (default 100)")
    parser.add_argument("--margin", type=float, default=10.0,
                        help="required ratio of the client's one-core rate to --target-rate (default 10)")
    parser.add_argument("--pace-ms", type=float, default=0.2,
                        help="pause of the loopback server between events, in ms (default 0.2)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    if args.tokens < 2 or args.repeats < 1:
        parser.error("--tokens must be 2 or more and --repeats 1 or more")

    client = load_client()
    parsed = measure_parser(client, args.tokens, args.repeats)
    loopback = measure_loopback(client, args.tokens, args.repeats, args.pace_ms / 1000.0)

    print(f"Parser only ({args.tokens}-token stream, best of {args.repeats}):")
    print(f"  CPU per token:                 {parsed['cpu_us_per_token']:.1f} us")
    print(f"  Max rate on one core:          {parsed['max_tokens_per_s']:,.0f} tokens/s")
    print(f"Whole client over loopback (median of {args.repeats} requests):")
    print(f"  CPU per request (1 token):     {loopback['request_cpu_ms']:.2f} ms "
          f"(wall {loopback['request_wall_ms']:.2f} ms)")
    print(f"  CPU per further token:         {loopback['cpu_us_per_token']:.1f} us")
    print(f"  Max rate on one core:          {loopback['max_tokens_per_s']:,.0f} tokens/s")
    print(f"  Rate received from the server: {loopback['received_tokens_per_s']:,.0f} tokens/s "
          "(bounded by the server's pace)")

    limit = min(parsed["max_tokens_per_s"], loopback["max_tokens_per_s"])
    load = args.target_rate / limit
    gap_us = 1e6 / args.target_rate
    print(f"Against a server at {args.target_rate:g} tokens/s:")
    print(f"  Client CPU use:                {load:.2%} of one core")
    print(f"  Client cost per token:         {loopback['cpu_us_per_token']:.1f} us of a {gap_us:,.0f} us "
          "inter-token gap")
    if args.json:
        print(json.dumps({"parser": parsed, "loopback": loopback, "target_rate": args.target_rate}, indent=2))
    if limit < args.margin * args.target_rate:
        print(f"FAIL: the client handles {limit:,.0f} tokens/s, less than {args.margin:g} x {args.target_rate:g}")
        return 1
    print(f"PASS: the client handles {limit / args.target_rate:,.0f} x the target rate on one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())

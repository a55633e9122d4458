#!/usr/bin/env python3
"""Benchmark an OpenAI-compatible chat completions server such as vLLM.

Every request streams, so the client measures time to first token (TTFT),
time per output token (TPOT), inter-token latency (ITL) and end-to-end
latency. Token counts come from the usage chunk that the server sends when
`stream_options.include_usage` is set. The run ends with a verdict against
three thresholds, and the exit status reports it:

    0  every threshold passed
    1  at least one threshold failed (the output names each one)
    2  invalid command line, or the results could not be written

The script runs on its own with Python 3, requests and tqdm. matplotlib is
needed only for the chart of a concurrency sweep. Example:

    benchmark_vllm.py --num-prompts 8 --input-length 128 --output-length 128 \
        --max-concurrent 2 --output results.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import requests
import urllib3
from tqdm import tqdm

# Defaults. They must equal the vllm_* keys of group_data/all.py, which
# tests/benchmark/test_defaults.py checks: the deploy copies this file to the
# host unchanged and runs it with no flags.
DEFAULT_URL = "http://localhost:8001"
DEFAULT_MODEL = "qwen3-30b"
# Maximum p99 end-to-end latency, in seconds, of a request for 128 output tokens.
DEFAULT_MAX_LATENCY_S = 10.0
# Minimum fraction of requests that must succeed.
DEFAULT_MIN_SUCCESS_RATE = 0.99
# Minimum total (prompt plus output) tokens per second over the whole run.
DEFAULT_MIN_TOTAL_TOKENS_PER_S = 16.0

DEFAULT_NUM_PROMPTS = 8
DEFAULT_INPUT_LENGTH = 128
DEFAULT_OUTPUT_LENGTH = 128
DEFAULT_MAX_CONCURRENT = 2
DEFAULT_SEED = 0
DEFAULT_TIMEOUT_S = 300.0

EXIT_OK = 0
EXIT_THRESHOLD_FAILED = 1
EXIT_USAGE = 2

PERCENTILES = (50, 90, 99)
READ_SIZE = 65536
ERROR_BODY_LIMIT = 300


# --- Server-sent events -------------------------------------------------------


class SSEDecoder:
    """Incremental decoder of a text/event-stream body.

    `feed` takes raw bytes as they arrive, in pieces of any size, and returns
    the `data` payload of each event completed by them. Comment lines (such
    as the `: ping` keep-alives), other fields and blank lines between events
    produce nothing. Lines may end in CRLF, LF or CR, as the event-stream
    format allows.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data_lines: list[str] = []
        self._pending_cr = False

    def feed(self, chunk: bytes) -> list[str]:
        if self._pending_cr and chunk.startswith(b"\n"):
            # The CR of a CRLF pair ended the previous chunk.
            chunk = chunk[1:]
        self._pending_cr = False
        self._buffer += chunk
        payloads: list[str] = []
        while True:
            cut = _find_line_end(self._buffer)
            if cut is None:
                break
            end, next_start = cut
            if next_start > len(self._buffer):
                # A CR at the end of the buffer: the LF may follow later.
                self._pending_cr = True
                next_start = len(self._buffer)
            line = self._buffer[:end].decode("utf-8", errors="replace")
            self._buffer = self._buffer[next_start:]
            payload = self._process_line(line)
            if payload is not None:
                payloads.append(payload)
        return payloads

    def finish(self) -> list[str]:
        """Flush an event that the stream closed without a blank line."""
        payloads: list[str] = []
        if self._buffer:
            line = self._buffer.decode("utf-8", errors="replace")
            self._buffer = b""
            self._process_line(line)
        if self._data_lines:
            payloads.append("\n".join(self._data_lines))
            self._data_lines = []
        return payloads

    def _process_line(self, line: str) -> str | None:
        if line == "":
            if not self._data_lines:
                return None
            payload = "\n".join(self._data_lines)
            self._data_lines = []
            return payload
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data_lines.append(value)
        return None


def _find_line_end(buffer: bytes) -> tuple[int, int] | None:
    """Return (end of line, start of next line) for the first line ending."""
    lf = buffer.find(b"\n")
    cr = buffer.find(b"\r")
    if cr == -1 and lf == -1:
        return None
    if cr == -1 or (lf != -1 and lf < cr):
        return lf, lf + 1
    if cr + 1 < len(buffer):
        return cr, cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1
    # CR is the last byte: report a next start past the end so that the
    # caller remembers to drop a following LF.
    return cr, cr + 2


# --- One request ------------------------------------------------------------------


@dataclass
class RequestResult:
    """Measurements of one streamed request. Times are in seconds."""

    index: int
    success: bool = False
    error_kind: str | None = None
    error_reason: str | None = None
    http_status: int | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    latency_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    content_chunks: int = 0
    usage_reported: bool = False
    finish_reason: str | None = None
    server_timings: dict | None = None
    output_chars: int = 0


class StreamAccumulator:
    """Apply the decoded chunks of one chat completion stream to a result.

    Handles the role-only first chunk, content in `content`, `text` (legacy
    completions), `reasoning_content` or `reasoning`, a usage chunk with an
    empty `choices` list, an `error` object sent in the stream, and the
    llama.cpp `timings` object.
    """

    def __init__(self, result: RequestResult, start: float) -> None:
        self.result = result
        self.start = start
        self.done = False
        self._last_token_time: float | None = None

    def add(self, payload: str, now: float) -> None:
        """Record one event payload that arrived at `now` (perf_counter)."""
        if payload.strip() == "[DONE]":
            self.done = True
            return
        try:
            chunk = json.loads(payload)
        except json.JSONDecodeError as error:
            raise StreamError("invalid_response", f"chunk is not valid JSON ({error}): {payload[:120]!r}")
        if not isinstance(chunk, dict):
            raise StreamError("invalid_response", f"chunk is not a JSON object: {payload[:120]!r}")
        if "error" in chunk:
            raise StreamError("server_error", "server sent an error in the stream: " + _describe_error(chunk["error"]))

        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._apply_usage(usage)
        timings = chunk.get("timings")
        if isinstance(timings, dict):
            self.result.server_timings = timings

        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            text = _choice_text(choice)
            if text:
                self._record_token_chunk(len(text), now)
            if choice.get("finish_reason"):
                self.result.finish_reason = choice["finish_reason"]

    def _apply_usage(self, usage: dict) -> None:
        prompt = usage.get("prompt_tokens")
        completion = usage.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            self.result.prompt_tokens = prompt
            self.result.completion_tokens = completion
            self.result.usage_reported = True

    def _record_token_chunk(self, chars: int, now: float) -> None:
        result = self.result
        if result.ttft_s is None:
            result.ttft_s = now - self.start
        else:
            result.itl_s.append(now - self._last_token_time)
        self._last_token_time = now
        result.content_chunks += 1
        result.output_chars += chars

    def finish(self, now: float) -> None:
        """Complete the result once the stream has ended with [DONE]."""
        result = self.result
        result.latency_s = now - self.start
        if not result.usage_reported:
            # NOTE: without a usage chunk the completion token count is the
            # number of chunks that carried text, which is exact only when the
            # server sends one token per chunk. The prompt count is unknown.
            result.completion_tokens = result.content_chunks
        tokens = result.completion_tokens or 0
        if result.ttft_s is not None and tokens > 1:
            result.tpot_s = (result.latency_s - result.ttft_s) / (tokens - 1)
        result.success = True


class StreamError(Exception):
    """A failure detected while reading a stream, with an error kind."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _choice_text(choice: dict) -> str:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        for key in ("content", "reasoning_content", "reasoning"):
            value = delta.get(key)
            if isinstance(value, str) and value:
                return value
        return ""
    text = choice.get("text")
    return text if isinstance(text, str) else ""


def _describe_error(error: object) -> str:
    if isinstance(error, dict):
        message = error.get("message") or json.dumps(error)[:ERROR_BODY_LIMIT]
        return str(message)
    return str(error)[:ERROR_BODY_LIMIT]


def build_headers(api_key: str | None) -> dict:
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def build_chat_body(model: str, prompt: str, max_tokens: int, seed: int | None) -> dict:
    """Return a streaming chat request for exactly max_tokens output tokens."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        # vLLM and llama-server both accept ignore_eos, so generation runs to
        # max_tokens and every request produces the same amount of work.
        "ignore_eos": True,
        "temperature": 0.0,
    }
    if seed is not None:
        body["seed"] = seed
    return body


def stream_chat(
    session: requests.Session,
    url: str,
    body: dict,
    headers: dict,
    timeout_s: float,
    index: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> RequestResult:
    """Send one streaming chat completion and measure it.

    `timeout_s` bounds both the wait for any single read and the whole
    request. HTTP, network and stream failures do not raise: each is stored in
    the result's
    `error_kind` (`http_<status>`, `timeout`, `connection`, `disconnect`,
    `server_error`, `invalid_response`) and `error_reason`.
    """
    result = RequestResult(index=index)
    start = clock()
    accumulator = StreamAccumulator(result, start)
    decoder = SSEDecoder()
    response = None
    try:
        response = session.post(
            url, json=body, headers=headers, stream=True, timeout=(min(timeout_s, 30.0), timeout_s)
        )
        result.http_status = response.status_code
        if response.status_code != 200:
            raise StreamError(f"http_{response.status_code}", _read_error_body(response))
        while not accumulator.done:
            data = response.raw.read1(READ_SIZE)
            now = clock()
            if not data:
                for payload in decoder.finish():
                    accumulator.add(payload, now)
                break
            for payload in decoder.feed(data):
                accumulator.add(payload, now)
            if now - start > timeout_s:
                raise StreamError("timeout", f"request took longer than {timeout_s:g} s")
        if not accumulator.done:
            raise StreamError("disconnect", _describe_early_end(result))
        accumulator.finish(clock())
    except StreamError as error:
        result.error_kind, result.error_reason = error.kind, error.reason
    except requests.Timeout as error:
        result.error_kind, result.error_reason = "timeout", f"no data for {timeout_s:g} s ({type(error).__name__})"
    except requests.ConnectionError as error:
        kind = "disconnect" if result.http_status == 200 else "connection"
        result.error_kind, result.error_reason = kind, _short_exception(error)
    except (requests.RequestException, OSError) as error:
        kind = "disconnect" if result.http_status == 200 else "connection"
        result.error_kind, result.error_reason = kind, _short_exception(error)
    except urllib3.exceptions.TimeoutError as error:
        # Reads of the body go to urllib3 directly, so its own types arrive here.
        result.error_kind, result.error_reason = "timeout", _short_exception(error)
    except urllib3.exceptions.HTTPError as error:
        result.error_kind, result.error_reason = "disconnect", _short_exception(error)
    finally:
        if response is not None:
            response.close()
    if not result.success:
        result.latency_s = None
        result.tpot_s = None
    return result


def _describe_early_end(result: RequestResult) -> str:
    if result.content_chunks:
        return f"stream closed after {result.content_chunks} content chunks without data: [DONE]"
    return "stream closed before any content and without data: [DONE]"


def _read_error_body(response: requests.Response) -> str:
    try:
        text = response.text
    except requests.RequestException as error:
        return f"HTTP {response.status_code}; body unreadable: {_short_exception(error)}"
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and "error" in parsed:
        return f"HTTP {response.status_code}: {_describe_error(parsed['error'])}"
    if isinstance(parsed, dict) and "message" in parsed:
        return f"HTTP {response.status_code}: {parsed['message']}"
    return f"HTTP {response.status_code}: {text.strip()[:ERROR_BODY_LIMIT]}"


def _short_exception(error: BaseException) -> str:
    text = str(error)
    if len(text) > ERROR_BODY_LIMIT:
        text = text[:ERROR_BODY_LIMIT] + "..."
    return f"{type(error).__name__}: {text}"


# --- Statistics ---------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Return the q-th percentile with linear interpolation, or None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def describe(values: list[float], scale: float = 1.0) -> dict:
    """Return mean, p50, p90 and p99 of `values` times `scale`; None when empty."""
    scaled = [value * scale for value in values]
    summary = {"count": len(scaled), "mean": statistics.fmean(scaled) if scaled else None}
    for q in PERCENTILES:
        summary[f"p{q}"] = percentile(scaled, q)
    return summary


def summarize(results: list[RequestResult], duration_s: float, concurrency: int) -> dict:
    """Aggregate the results of one run at one concurrency."""
    successes = [r for r in results if r.success]
    failures = [r for r in results if not r.success]
    prompt_tokens = sum(r.prompt_tokens or 0 for r in successes)
    completion_tokens = sum(r.completion_tokens or 0 for r in successes)

    def rate(amount: float) -> float:
        return amount / duration_s if duration_s > 0 else 0.0

    reasons: dict[str, Counter] = {}
    for failure in failures:
        reasons.setdefault(failure.error_kind or "unknown", Counter())[failure.error_reason or ""] += 1

    return {
        "concurrency": concurrency,
        "num_requests": len(results),
        "successful_requests": len(successes),
        "failed_requests": len(failures),
        "success_rate": len(successes) / len(results) if results else 0.0,
        "duration_s": duration_s,
        "total_prompt_tokens": prompt_tokens,
        "total_completion_tokens": completion_tokens,
        "request_throughput_per_s": rate(len(successes)),
        "output_tokens_per_s": rate(completion_tokens),
        "total_tokens_per_s": rate(prompt_tokens + completion_tokens),
        "ttft_ms": describe([r.ttft_s for r in successes if r.ttft_s is not None], 1000.0),
        "tpot_ms": describe([r.tpot_s for r in successes if r.tpot_s is not None], 1000.0),
        "itl_ms": describe([gap for r in successes for gap in r.itl_s], 1000.0),
        "e2e_latency_s": describe([r.latency_s for r in successes if r.latency_s is not None]),
        # The rate of a single request: output tokens over its whole latency.
        "per_request_output_tokens_per_s": describe([
            r.completion_tokens / r.latency_s for r in successes if r.latency_s and r.completion_tokens
        ]),
        "requests_without_usage": sum(1 for r in successes if not r.usage_reported),
        "errors_by_kind": {kind: sum(counter.values()) for kind, counter in sorted(reasons.items())},
        "error_reasons": {
            kind: [{"reason": reason, "count": count} for reason, count in counter.most_common()]
            for kind, counter in sorted(reasons.items())
        },
    }


# --- Verdict --------------------------------------------------------------------------


@dataclass
class Thresholds:
    max_latency_s: float = DEFAULT_MAX_LATENCY_S
    min_success_rate: float = DEFAULT_MIN_SUCCESS_RATE
    min_total_tokens_per_s: float = DEFAULT_MIN_TOTAL_TOKENS_PER_S


def evaluate(summary: dict, thresholds: Thresholds) -> list[dict]:
    """Check one run's summary against the thresholds.

    The latency check uses the p99 end-to-end latency of successful requests,
    so a slow tail fails the run even when the mean is fine. Each bound is
    inclusive: a value equal to the threshold passes.
    """
    p99 = summary["e2e_latency_s"]["p99"]
    checks = [
        {
            "name": "p99 end-to-end latency (s)",
            "value": p99,
            "limit": thresholds.max_latency_s,
            "passed": p99 is not None and p99 <= thresholds.max_latency_s,
            "rule": "at most",
        },
        {
            "name": "success rate",
            "value": summary["success_rate"],
            "limit": thresholds.min_success_rate,
            "passed": summary["success_rate"] >= thresholds.min_success_rate,
            "rule": "at least",
        },
        {
            "name": "total (prompt + output) tokens/s",
            "value": summary["total_tokens_per_s"],
            "limit": thresholds.min_total_tokens_per_s,
            "passed": summary["total_tokens_per_s"] >= thresholds.min_total_tokens_per_s,
            "rule": "at least",
        },
    ]
    return checks


# --- Server probes and prompts -----------------------------------------------------------


def fetch_server_info(session: requests.Session, base_url: str, headers: dict, timeout_s: float) -> dict:
    """Return the server's version details from vLLM's /version or llama.cpp's /props."""
    info: dict = {}
    for path in ("/version", "/props"):
        try:
            response = session.get(base_url + path, headers=headers, timeout=timeout_s)
        except requests.RequestException:
            continue
        if response.status_code != 200:
            continue
        try:
            body = response.json()
        except ValueError:
            continue
        if not isinstance(body, dict):
            continue
        if path == "/version" and "version" in body:
            info["vllm_version"] = body["version"]
        if path == "/props":
            for key in ("build_info", "model_path", "total_slots"):
                if key in body:
                    info[f"llama_cpp_{key}"] = body[key]
    return info


class Tokenizer:
    """Count tokens with the server's /tokenize endpoint.

    vLLM takes {"model", "prompt"} and returns "count" and "tokens"; llama-server
    takes {"content"} and returns "tokens". The first form that works is kept.
    """

    def __init__(self, session: requests.Session, base_url: str, model: str, headers: dict, timeout_s: float):
        self.session = session
        self.url = base_url + "/tokenize"
        self.model = model
        self.headers = headers
        self.timeout_s = timeout_s
        self.style: str | None = None

    def _bodies(self, text: str) -> Iterator[tuple[str, dict]]:
        styles = {"vllm": {"model": self.model, "prompt": text}, "llama.cpp": {"content": text}}
        order = [self.style] if self.style else list(styles)
        for style in order:
            yield style, styles[style]

    def count(self, text: str) -> int | None:
        for style, body in self._bodies(text):
            try:
                response = self.session.post(self.url, json=body, headers=self.headers, timeout=self.timeout_s)
            except requests.RequestException:
                return None
            if response.status_code != 200:
                continue
            try:
                parsed = response.json()
            except ValueError:
                continue
            if not isinstance(parsed, dict):
                continue
            # llama-server answers a vLLM-style body with an empty token list,
            # so the vLLM form counts only when "count" is present.
            if style == "vllm" and isinstance(parsed.get("count"), int):
                self.style = style
                return parsed["count"]
            if style == "llama.cpp" and isinstance(parsed.get("tokens"), list):
                self.style = style
                return len(parsed["tokens"])
        return None


# Words for synthetic prompts. Distinct random sequences keep a prefix cache
# from serving one prompt's tokens to another.
WORDS = (
    "river stone window garden engine paper yellow market silver forest "
    "planet signal harbor candle mirror orange castle bridge valley rocket "
    "summer winter thunder pocket basket ladder marble needle copper velvet "
    "island meadow canyon saddle lantern anchor timber feather crystal hammer "
    "violet meteor glacier orchard pepper wallet blanket compass spiral beacon "
    "kettle puzzle falcon walnut cactus harvest tunnel quartz parrot station "
    "cotton cobalt zipper magnet pillow circus lemon jacket button helmet "
    "granite voyage comet pebble shadow motor velvet trumpet cabin desert "
    "number letter simple gentle rapid quiet bright narrow hollow steady "
    "carry gather follow measure travel borrow listen wander polish answer"
).split()
# Appended one at a time to close the last gap to the target token count.
FILLERS = (" a", " I", " x", ".", ",", " the", "a")


def random_words(rng: random.Random, count: int) -> list[str]:
    return [rng.choice(WORDS) for _ in range(count)]


def fit_text(words: list[str], target: int, count: Callable[[str], int | None]) -> tuple[str, int | None]:
    """Return the text built from `words` whose token count is closest to `target`.

    A binary search finds the longest prefix of words with at most `target`
    tokens. Filler pieces then close the remaining gap. The returned count is
    None when the tokenizer failed.
    """
    low, high = 0, len(words)
    best_text, best_count = "", 0
    while low <= high:
        middle = (low + high) // 2
        text = " ".join(words[:middle])
        tokens = count(text)
        if tokens is None:
            return " ".join(words[: max(1, target // 2)]), None
        if tokens <= target:
            best_text, best_count = text, tokens
            low = middle + 1
        else:
            high = middle - 1
    attempts = 0
    filler_index = 0
    while best_count < target and attempts < 4 * (target - best_count) + len(FILLERS):
        candidate = best_text + FILLERS[filler_index % len(FILLERS)]
        tokens = count(candidate)
        attempts += 1
        if tokens is None:
            break
        if tokens <= target and tokens > best_count:
            best_text, best_count = candidate, tokens
        else:
            filler_index += 1
    return best_text, best_count


@dataclass
class PromptSet:
    prompts: list[str]
    exact: bool
    method: str
    template_overhead_tokens: int | None = None


def build_prompts(
    num_prompts: int,
    input_length: int,
    rng: random.Random,
    tokenizer: Tokenizer | None,
    template_overhead: int | None,
) -> PromptSet:
    """Build prompts whose chat request has `input_length` prompt tokens.

    `template_overhead` is the number of tokens the chat template adds around
    the user message. Without a tokenizer the prompts use one word per
    requested token, and the lengths are approximate.
    """
    content_target = input_length - (template_overhead or 0)
    if tokenizer is None or template_overhead is None or content_target < 1:
        words = max(1, content_target)
        prompts = [" ".join(random_words(rng, words)) for _ in range(num_prompts)]
        return PromptSet(prompts, False, "approximate: one word per requested token, no tokenizer used")
    prompts = []
    exact = True
    for _ in range(num_prompts):
        words = random_words(rng, content_target + 8)
        text, tokens = fit_text(words, content_target, tokenizer.count)
        if tokens != content_target:
            exact = False
        prompts.append(text)
    method = f"server /tokenize ({tokenizer.style}) plus {template_overhead} chat template tokens"
    if not exact:
        method += "; some prompts could not be fitted exactly"
    return PromptSet(prompts, exact, method, template_overhead)


def measure_template_overhead(
    session: requests.Session,
    chat_url: str,
    model: str,
    headers: dict,
    tokenizer: Tokenizer,
    timeout_s: float,
    rng: random.Random,
) -> tuple[int | None, RequestResult | None]:
    """Measure how many tokens the chat template adds, with one warm-up request.

    The request carries a probe message of known token count and requests a
    single output token. The overhead is the prompt token count from the
    usage chunk minus the probe's count.
    """
    probe = " ".join(random_words(rng, 12))
    probe_tokens = tokenizer.count(probe)
    if probe_tokens is None:
        return None, None
    result = stream_chat(session, chat_url, build_chat_body(model, probe, 1, None), headers, timeout_s)
    if not result.success or not result.usage_reported or result.prompt_tokens is None:
        return None, result
    return result.prompt_tokens - probe_tokens, result


# --- Running ------------------------------------------------------------------------------


def run_level(
    chat_url: str,
    model: str,
    prompts: list[str],
    output_length: int,
    concurrency: int,
    headers: dict,
    timeout_s: float,
    seed: int | None,
    progress: bool = True,
) -> tuple[list[RequestResult], float]:
    """Send every prompt with at most `concurrency` requests in flight."""
    local = threading.local()

    def send(index: int) -> RequestResult:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        body = build_chat_body(model, prompts[index], output_length, None if seed is None else seed + index)
        return stream_chat(local.session, chat_url, body, headers, timeout_s, index=index)

    results: list[RequestResult] = []
    bar = tqdm(total=len(prompts), desc=f"concurrency {concurrency}", unit="req", disable=not progress)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(send, index) for index in range(len(prompts))]
        for future in as_completed(futures):
            result = future.result()
            results.append(result)
            bar.update(1)
            if not result.success:
                bar.set_postfix_str(f"last error: {result.error_kind}")
    duration = time.perf_counter() - start
    bar.close()
    results.sort(key=lambda r: r.index)
    return results, duration


def parse_sweep(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid concurrency list {text!r}: expected integers such as 1,2,4,8")
    if not levels or any(level < 1 for level in levels):
        raise argparse.ArgumentTypeError(f"invalid concurrency list {text!r}: every level must be 1 or more")
    return levels


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: must be 1 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark an OpenAI-compatible chat completions server with streamed requests.",
        epilog="Exit status: 0 all thresholds passed, 1 a threshold failed, 2 invalid usage or output error.",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"server base URL without /v1 (default {DEFAULT_URL})")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"served model name (default {DEFAULT_MODEL})")
    parser.add_argument("--num-prompts", type=positive_int, default=DEFAULT_NUM_PROMPTS,
                        help=f"requests per concurrency level (default {DEFAULT_NUM_PROMPTS})")
    parser.add_argument("--input-length", type=positive_int, default=DEFAULT_INPUT_LENGTH,
                        help="prompt tokens per request as the server counts them, chat template included "
                             f"(default {DEFAULT_INPUT_LENGTH})")
    parser.add_argument("--output-length", type=positive_int, default=DEFAULT_OUTPUT_LENGTH,
                        help=f"output tokens per request (max_tokens, with ignore_eos) (default {DEFAULT_OUTPUT_LENGTH})")
    parser.add_argument("--max-concurrent", type=positive_int, default=DEFAULT_MAX_CONCURRENT,
                        help=f"requests in flight at once (default {DEFAULT_MAX_CONCURRENT})")

    parser.add_argument("--concurrency-sweep", type=parse_sweep, metavar="LIST",
                        help="comma-separated concurrency levels, such as 1,2,4,8; replaces --max-concurrent "
                             "and draws a chart")

    parser.add_argument("--output", type=Path, metavar="FILE", help="write parameters and every figure as JSON")
    parser.add_argument("--chart", type=Path, metavar="FILE",
                        help="PNG chart of a sweep (default: the --output path with .png, else benchmark-sweep.png)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed for prompts and sampling (default {DEFAULT_SEED})")
    parser.add_argument("--api-key", default=os.environ.get("VLLM_API_KEY"),
                        help="bearer token for the server (default: the VLLM_API_KEY environment variable)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help=f"seconds allowed for one request (default {DEFAULT_TIMEOUT_S:g})")

    parser.add_argument("--max-latency-s", type=float, default=DEFAULT_MAX_LATENCY_S,
                        help=f"maximum p99 end-to-end latency in seconds (default {DEFAULT_MAX_LATENCY_S:g})")
    parser.add_argument("--min-success-rate", type=float, default=DEFAULT_MIN_SUCCESS_RATE,
                        help=f"minimum fraction of successful requests (default {DEFAULT_MIN_SUCCESS_RATE:g})")
    parser.add_argument("--min-total-tokens-per-s", type=float, default=DEFAULT_MIN_TOTAL_TOKENS_PER_S,
                        help="minimum total (prompt + output) tokens per second "
                             f"(default {DEFAULT_MIN_TOTAL_TOKENS_PER_S:g})")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _format(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_summary(summary: dict, checks: list[dict], output_length: int, out=sys.stdout) -> None:
    line = "-" * 60
    print(line, file=out)
    print(f"Concurrency {summary['concurrency']}: "
          f"{summary['successful_requests']}/{summary['num_requests']} requests succeeded "
          f"in {summary['duration_s']:.2f} s", file=out)
    print(f"  Request throughput:            {summary['request_throughput_per_s']:.3f} req/s", file=out)
    print(f"  Output tokens/s:               {summary['output_tokens_per_s']:.2f}", file=out)
    print(f"  Total (prompt+output) tok/s:   {summary['total_tokens_per_s']:.2f}", file=out)

    per_request = summary["per_request_output_tokens_per_s"]
    print(f"  Output tok/s per request:      mean {_format(per_request['mean'])}, "
          f"p50 {_format(per_request['p50'])}", file=out)
    print(f"  Prompt / output tokens:        {summary['total_prompt_tokens']} / "
          f"{summary['total_completion_tokens']}", file=out)

    if summary["requests_without_usage"]:
        print(f"  WARNING: {summary['requests_without_usage']} requests had no usage chunk; their output "
              "tokens are counted as text chunks and their prompt tokens are unknown", file=out)

    print(f"  {'':22}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}", file=out)
    for key, label in (("ttft_ms", "TTFT (ms)"), ("tpot_ms", "TPOT (ms)"), ("itl_ms", "ITL (ms)"),
                       ("e2e_latency_s", "Latency (s)")):
        stats = summary[key]
        print(f"  {label:22}" + "".join(f"{_format(stats[name]):>10}" for name in ("mean", "p50", "p90", "p99")),
              file=out)

    for kind, reasons in summary["error_reasons"].items():
        print(f"  Errors {kind}: {summary['errors_by_kind'][kind]}", file=out)
        for entry in reasons[:5]:
            print(f"    {entry['count']} x {entry['reason']}", file=out)

    print("  Verdict:", file=out)
    for check in checks:
        status = "PASS" if check["passed"] else "FAIL"
        print(f"    {status} {check['name']}: {_format(check['value'], 3)} "
              f"({check['rule']} {check['limit']:g})", file=out)

    if output_length != 128:
        print("  NOTE: the latency threshold is set for 128 output tokens; this run asked for "
              f"{output_length}", file=out)


def draw_chart(summaries: list[dict], path: Path) -> str | None:
    """Draw throughput and latency against concurrency; return an error or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed, so no chart was drawn (pip install matplotlib)"
    levels = [s["concurrency"] for s in summaries]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.plot(levels, [s["output_tokens_per_s"] for s in summaries], marker="o", label="output tokens/s")
    left.plot(levels, [s["total_tokens_per_s"] for s in summaries], marker="s", label="total tokens/s")
    left.set_xlabel("concurrent requests")
    left.set_ylabel("tokens/s")
    left.set_title("Throughput")
    left.legend()
    for key, label, marker in (("mean", "mean", "o"), ("p99", "p99", "s")):
        values = [s["e2e_latency_s"][key] for s in summaries]
        right.plot(levels, [math.nan if v is None else v for v in values], marker=marker, label=f"latency {label}")
    ttft = [s["ttft_ms"]["p99"] for s in summaries]
    right.plot(levels, [math.nan if v is None else v / 1000.0 for v in ttft], marker="^", label="TTFT p99")
    right.set_xlabel("concurrent requests")
    right.set_ylabel("seconds")
    right.set_title("Latency")
    right.legend()
    for axis in (left, right):
        axis.set_xticks(levels)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    base_url = args.url.rstrip("/")
    if base_url.endswith("/v1"):
        base_url = base_url[: -len("/v1")]
    chat_url = base_url + "/v1/chat/completions"
    headers = build_headers(args.api_key)
    levels = args.concurrency_sweep or [args.max_concurrent]
    thresholds = Thresholds(args.max_latency_s, args.min_success_rate, args.min_total_tokens_per_s)
    probe_timeout = min(args.timeout, 30.0)

    session = requests.Session()
    server_info = fetch_server_info(session, base_url, headers, probe_timeout)
    tokenizer = Tokenizer(session, base_url, args.model, headers, probe_timeout)
    rng = random.Random(f"{args.seed}:probe")
    overhead, warmup = measure_template_overhead(session, chat_url, args.model, headers, tokenizer, args.timeout, rng)
    if warmup is not None and not warmup.success:
        print(f"WARNING: warm-up request failed ({warmup.error_kind}: {warmup.error_reason})", file=sys.stderr)

    runs = []
    all_passed = True
    for level_index, concurrency in enumerate(levels):
        # Fresh prompts per level, so a prefix cache filled by one level does
        # not speed up the next.
        prompt_set = build_prompts(args.num_prompts, args.input_length, random.Random(f"{args.seed}:level:{level_index}"),
                                   tokenizer if overhead is not None else None, overhead)
        if level_index == 0:
            print(f"Prompt lengths: {'exact' if prompt_set.exact else 'APPROXIMATE'} ({prompt_set.method})")
        results, duration = run_level(chat_url, args.model, prompt_set.prompts, args.output_length, concurrency,
                                      headers, args.timeout, args.seed, progress=not args.no_progress)
        summary = summarize(results, duration, concurrency)
        mismatched = sum(1 for r in results if r.success and r.prompt_tokens not in (None, args.input_length))
        summary["requests_with_other_prompt_length"] = mismatched
        checks = evaluate(summary, thresholds)
        all_passed = all_passed and all(check["passed"] for check in checks)
        print_summary(summary, checks, args.output_length)
        if mismatched:
            print(f"  NOTE: {mismatched} requests had a prompt token count other than {args.input_length}")
        runs.append({
            "summary": summary,
            "verdict": checks,
            "prompt_lengths": {"exact": prompt_set.exact, "method": prompt_set.method},
            "requests": [asdict(r) for r in results],
        })

    chart_path = None
    if args.concurrency_sweep:
        chart_path = args.chart or (args.output.with_suffix(".png") if args.output else Path("benchmark-sweep.png"))
        problem = draw_chart([run["summary"] for run in runs], chart_path)
        if problem:
            print(f"WARNING: {problem}", file=sys.stderr)
            chart_path = None
        else:
            print(f"Chart written to {chart_path}")

    failed = [f"concurrency {run['summary']['concurrency']}: {check['name']}"
              for run in runs for check in run["verdict"] if not check["passed"]]
    if args.output:
        parameters = {key: (str(value) if isinstance(value, Path) else value)
                      for key, value in vars(args).items() if key != "api_key"}
        parameters["api_key_set"] = bool(args.api_key)
        document = {
            "parameters": parameters,
            "server": {"url": base_url, **server_info},
            "template_overhead_tokens": overhead,
            "thresholds": asdict(thresholds),
            "latency_statistic": "p99",
            "passed": all_passed,
            "failed_checks": failed,
            "chart": str(chart_path) if chart_path else None,
            "runs": runs,
        }
        try:
            args.output.write_text(json.dumps(document, indent=2) + "\n")
        except OSError as error:
            print(f"ERROR: cannot write {args.output}: {error}", file=sys.stderr)
            return EXIT_USAGE
        print(f"Results written to {args.output}")

    if all_passed:
        print("RESULT: PASS, every threshold met")
        return EXIT_OK
    print("RESULT: FAIL, thresholds not met:")
    for entry in failed:
        print(f"  {entry}")
    return EXIT_THRESHOLD_FAILED


if __name__ == "__main__":
    sys.exit(main())

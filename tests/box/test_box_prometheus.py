"""Prometheus's LLM scrape job, moved from the llama.cpp port to the vLLM port."""

from __future__ import annotations

import pytest
import yaml

from bestbox.edits import LLM_JOB_RE


@pytest.fixture(scope="module")
def llm_targets(host, settings) -> list[str]:
    """Return the static targets of every scrape job whose name matches llm, llama or vllm.

    Skips when the file or the job is missing, because the deploy then only
    warns and leaves Prometheus as it is.
    """
    path = settings.path(settings.bestbox_prometheus_config)
    config_file = host.file(path)
    if not config_file.is_file:
        pytest.skip(f"{path} is missing, so the deploy left Prometheus alone")
    document = yaml.safe_load(config_file.content_string) or {}
    jobs = [job for job in document.get("scrape_configs") or []
            if LLM_JOB_RE.search(str(job.get("job_name", "")))]
    if not jobs:
        pytest.skip(f"{path} has no LLM scrape job, so the deploy left it alone")
    return [str(target) for job in jobs for config in job.get("static_configs") or []
            for target in config.get("targets") or []]


def test_llm_scrape_job_targets_vllm_port(llm_targets, settings):
    assert any(target.endswith(f":{settings.vllm_port}") for target in llm_targets), llm_targets


def test_llm_scrape_job_has_no_llamacpp_target(llm_targets, settings):
    old = [target for target in llm_targets
           if target.endswith(f":{settings.bestbox_llamacpp_port}")]
    assert old == []

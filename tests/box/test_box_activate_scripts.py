"""The LLM_BASE_URL export in each activate script."""

from __future__ import annotations

from bestbox.edits import active_llm_base_urls


def test_activate_script_exports_vllm_url_once(host, settings, activate_script):
    script = host.file(activate_script)
    assert script.is_file, f"{activate_script} is missing"
    urls = active_llm_base_urls(script.content_string)
    assert len(urls) == 1, f"expected one active LLM_BASE_URL export, found {urls}"
    assert urls[0] == settings.llm_base_url

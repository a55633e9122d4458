"""Line-level edits of BestBox files that the deploy changes in place.

Each function takes the current text and returns the desired text. Run on
its own output, it returns that output unchanged, so the deploy stays idempotent.
"""

from __future__ import annotations

import re
import shlex

import yaml

ACTIVE_EXPORT_RE = re.compile(r"^(\s*)export\s+LLM_BASE_URL=.*$")
# Any active assignment of LLM_BASE_URL, exported or not, at any indentation.
ANY_ASSIGNMENT_RE = re.compile(r"^\s*(export\s+)?LLM_BASE_URL=")
TOP_LEVEL_EXPORT_RE = re.compile(r"^export\s+LLM_BASE_URL=")


class ActivateEditError(ValueError):
    """The script sets LLM_BASE_URL in a way that a line edit could break."""


def check_llm_base_url_lines(text: str, path: str) -> None:
    """Raise ActivateEditError unless every active LLM_BASE_URL assignment is a top-level export.

    An indented export sits inside an if, a function or a heredoc, where
    removing or rewriting it could break the script or change its meaning.
    A plain assignment may override the export later in the script.
    """
    for number, line in enumerate(text.splitlines(), start=1):
        if ANY_ASSIGNMENT_RE.match(line) and not TOP_LEVEL_EXPORT_RE.match(line):
            raise ActivateEditError(
                f"{path} line {number} sets LLM_BASE_URL inside a block or without export "
                f"({line.strip()!r}); the deploy edits only top-level 'export LLM_BASE_URL=' "
                "lines. Replace that line with a top-level export, or remove it, then rerun.")
LLM_JOB_RE = re.compile(r"llm|llama|vllm", re.IGNORECASE)


def set_llm_base_url(text: str, url: str) -> str:
    """Leave exactly one active `export LLM_BASE_URL="url"` line in a shell script.

    The first active line is replaced in place, whatever its old URL,
    and later active ones are removed. Commented-out lines stay as they are.
    Without an active line, one is appended with a comment above it.
    """
    export_line = f'export LLM_BASE_URL="{url}"'
    lines = text.splitlines(keepends=True)
    result = []
    replaced = False
    for line in lines:
        match = ACTIVE_EXPORT_RE.match(line.rstrip("\n"))
        if not match:
            result.append(line)
            continue
        if not replaced:
            ending = "\n" if line.endswith("\n") else ""
            result.append(f"{match.group(1)}{export_line}{ending}")
            replaced = True
    if not replaced:
        if result and not result[-1].endswith("\n"):
            result[-1] += "\n"
        result.append("\n# LLM endpoint: vLLM (set by the BestBox vLLM deploy)\n")
        result.append(export_line + "\n")
    return "".join(result)


def active_llm_base_urls(text: str) -> list[str]:
    """Return the values of the active LLM_BASE_URL exports in a shell script."""
    values = []
    for line in text.splitlines():
        if ACTIVE_EXPORT_RE.match(line):
            words = shlex.split(line, comments=True)
            values.append(words[1].split("=", 1)[1] if len(words) > 1 else "")
    return values


class PrometheusEditError(ValueError):
    """The Prometheus file has no LLM scrape job that the deploy can recognise."""


def set_llm_scrape_port(text: str, new_port: int, path: str) -> str:
    """Point every target of the LLM scrape job at new_port, whatever its port was.

    The LLM job is the scrape job whose job_name contains llm, llama or vllm.
    Only its target lines change, so comments and formatting elsewhere stay.
    Raises PrometheusEditError when no such job exists.
    """
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as error:
        raise PrometheusEditError(f"{path} is not valid YAML ({error}).") from None
    jobs = _scrape_jobs(root)
    llm_jobs = [job for job in jobs if LLM_JOB_RE.search(_scalar(job, "job_name") or "")]
    if not llm_jobs:
        names = ", ".join(_scalar(job, "job_name") or "?" for job in jobs) or "none"
        raise PrometheusEditError(
            f"{path} has no scrape job whose job_name contains llm, llama or vllm "
            f"(jobs: {names}); the LLM scrape target was not changed.")

    lines = text.splitlines(keepends=True)
    for job in llm_jobs:
        for target in _targets(job):
            address, separator, port = target.value.rpartition(":")
            if not separator or not port.isdigit() or port == str(new_port):
                continue
            line = target.start_mark.line
            lines[line] = lines[line].replace(target.value, f"{address}:{new_port}", 1)
    return "".join(lines)


def _scalar(mapping: yaml.Node, key: str) -> str | None:
    if not isinstance(mapping, yaml.MappingNode):
        return None
    for key_node, value_node in mapping.value:
        if key_node.value == key and isinstance(value_node, yaml.ScalarNode):
            return value_node.value
    return None


def _child(mapping: yaml.Node, key: str) -> yaml.Node | None:
    if not isinstance(mapping, yaml.MappingNode):
        return None
    for key_node, value_node in mapping.value:
        if key_node.value == key:
            return value_node
    return None


def _scrape_jobs(root: yaml.Node) -> list[yaml.Node]:
    jobs = _child(root, "scrape_configs")
    return list(jobs.value) if isinstance(jobs, yaml.SequenceNode) else []


def _targets(job: yaml.Node) -> list[yaml.ScalarNode]:
    found = []
    configs = _child(job, "static_configs")
    for config in configs.value if isinstance(configs, yaml.SequenceNode) else []:
        targets = _child(config, "targets")
        for target in targets.value if isinstance(targets, yaml.SequenceNode) else []:
            if isinstance(target, yaml.ScalarNode):
                found.append(target)
    return found


# Patterns of the old endpoint that the audit reports. Each names what it finds.
def old_endpoint_patterns(port: int) -> list[tuple[str, re.Pattern]]:
    return [
        ("health check", re.compile(rf"(localhost|127\.0\.0\.1):{port}/health")),
        ("/v1 URL", re.compile(rf"(localhost|127\.0\.0\.1|0\.0\.0\.0):{port}/v1")),
        ("OPENAI_BASE_URL default", re.compile(rf"OPENAI_BASE_URL.*:{port}\b")),
        ("NEXT_PUBLIC_LLM_PORT default", re.compile(rf"NEXT_PUBLIC_LLM_PORT.*\b{port}\b")),
    ]

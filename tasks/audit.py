"""Report BestBox files that still point at the old llama.cpp endpoint.

The deploy does not edit these files: each may need a different fix, and
some uses of the old port are unrelated to the LLM. The tree is read before
the run (in the host snapshot), and the report is printed when pyinfra
exits, after its results table.
"""

import atexit

from pyinfra import host, logger

from bestbox.plan import archive_pairs, plan_for

plan = plan_for(host)
settings = plan.settings
# The tree was read before this run, so files the deploy writes (Prometheus,
# the activate scripts) or moves away (the archive) would be reported stale.
skipped = set(plan.files) | {source for source, _ in archive_pairs(settings)}
hits = [hit for hit in plan.snapshot.get("audit", []) if hit["path"] not in skipped]


def print_report(host_name: str, settings, hits: list[dict]) -> None:
    if not hits:
        logger.info("%s: no file in %s points at the llama.cpp endpoint any more.",
                    host_name, settings.bestbox_path)
        return
    lines = "\n".join(f"  {hit['path']}:{hit['line']}: {hit['kind']}: {hit['text']}"
                      for hit in hits)
    logger.warning("%s: %d lines in %s still point at the llama.cpp endpoint (port %s); "
                   "update them to %s:\n%s", host_name, len(hits), settings.bestbox_path,
                   settings.bestbox_llamacpp_port, settings.llm_base_url, lines)


atexit.register(print_report, host.name, settings, hits)

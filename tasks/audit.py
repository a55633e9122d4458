"""Report BestBox files that still point at the old llama.cpp endpoint.

The deploy does not edit these files: each may need a different fix, and
some uses of the old port are unrelated to the LLM.
"""

from pyinfra import host, logger

from bestbox.plan import archive_pairs, plan_for

plan = plan_for(host)
hits = plan.snapshot.get("audit", [])
prometheus = plan.settings.path(plan.settings.bestbox_prometheus_config)
# The deploy updates Prometheus itself and moves the archived files away.
skipped = {prometheus} | {source for source, _ in archive_pairs(plan.settings)}
hits = [hit for hit in hits if hit["path"] not in skipped]
if hits:
    lines = "\n".join(f"  {hit['path']}:{hit['line']}: {hit['kind']}: {hit['text']}"
                      for hit in hits)
    logger.warning("%s: %d lines in %s still point at the llama.cpp endpoint (port %s); "
                   "update them to %s:\n%s", host.name, len(hits), plan.settings.bestbox_path,
                   plan.settings.bestbox_llamacpp_port, plan.settings.llm_base_url, lines)
else:
    host.log("No file in the BestBox tree points at the llama.cpp endpoint any more.")

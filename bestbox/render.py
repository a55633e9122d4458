"""Render the Jinja2 templates in templates/ from the validated configuration."""

from __future__ import annotations

import json
from typing import Any

import jinja2

from bestbox.config import REPO_ROOT, Settings

TEMPLATE_DIR = REPO_ROOT / "templates"

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)
# JSON strings are valid YAML double-quoted scalars, and valid shell words
# only where the script quotes them again, so templates use this for YAML.
_environment.filters["tojson"] = lambda value: json.dumps(value, ensure_ascii=False)
_environment.filters["basename"] = lambda value: value.rsplit("/", 1)[-1]


def render_template(name: str, settings: Settings, **extra: Any) -> str:
    """Render templates/NAME with every configuration key plus extra values."""
    context = dict(settings.values)
    context.update(extra)
    context["llm_base_url"] = settings.llm_base_url
    context["local_base_url"] = settings.local_base_url
    context["compose_path"] = settings.compose_path
    context["env_file_path"] = settings.env_file_path
    return _environment.get_template(name).render(context)

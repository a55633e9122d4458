"""Render the vLLM compose service and splice it into BestBox's compose file.

A YAML round trip (even with ruamel.yaml) rewrites details such as the spaces
inside `[ "CMD", "redis-cli", "ping" ]`, and every byte outside the vLLM
service must survive. So the merge works on the text: a YAML parser finds where
the service goes, and the rendered block is spliced in between marker comments.
Later runs replace only the text between the markers.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import yaml

from bestbox.config import Settings
from bestbox.render import render_template

SERVICE_BEGIN = "  # >>> vllm service"
SERVICE_END = "  # <<< vllm service"
NETWORK_BEGIN = "# >>> vllm network"
NETWORK_END = "# <<< vllm network"


class ComposeMergeError(ValueError):
    """The compose file cannot take the vLLM service without losing something."""


@dataclass(frozen=True)
class ServiceInputs:
    """Values read from the target host that the service definition needs."""

    home: str
    video_gid: int
    render_gid: int


def vllm_command(settings: Settings) -> list[str]:
    """Return the container command, in list form, for `vllm serve`."""
    command = [
        "vllm", "serve", settings.model_dir_in_container,
        "--host", "0.0.0.0",
        "--port", str(settings.vllm_port),
        "--served-model-name", settings.vllm_served_model_name,
        "--dtype", settings.vllm_dtype,
        "--gpu-memory-utilization", f"{settings.vllm_gpu_memory_utilization:g}",
        "--max-model-len", str(settings.vllm_max_model_len),
        "--max-num-seqs", str(settings.vllm_max_num_seqs),
        "--max-num-batched-tokens", str(settings.vllm_max_num_batched_tokens),
    ]
    if settings.vllm_enforce_eager:
        command.append("--enforce-eager")
    if settings.vllm_trust_remote_code:
        command.append("--trust-remote-code")
    if settings.vllm_log_requests:
        command.append("--enable-log-requests")
    # The API key is not on the command line, where `docker inspect` and `ps`
    # would show it: vLLM reads VLLM_API_KEY from the environment, which the
    # env file sets when vllm_api_key is not empty.
    command += list(settings.vllm_extra_args)
    return command


def published_port(settings: Settings) -> str:
    address = ipaddress.ip_address(settings.vllm_bind_address)
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{host}:{settings.vllm_port}:{settings.vllm_port}"


def render_service(settings: Settings, inputs: ServiceInputs) -> str:
    """Return the vllm service block, indented for the services mapping."""
    return render_template(
        "vllm-service.yml.j2",
        settings,
        image=settings.image,
        command=vllm_command(settings),
        published_port=published_port(settings),
        group_add=[inputs.video_gid, inputs.render_gid],
        security_opt=["seccomp=unconfined"] if settings.vllm_seccomp_unconfined else [],
        cap_add=["SYS_PTRACE"] if settings.vllm_cap_sys_ptrace else [],
        modelscope_host=settings.home_path(inputs.home, settings.vllm_modelscope_cache),
        huggingface_host=settings.home_path(inputs.home, settings.vllm_huggingface_cache),
    )


def render_network(settings: Settings) -> str:
    return render_template("vllm-network.yml.j2", settings)


def _marked_span(lines: list[str], begin: str, end: str, path: str) -> tuple[int, int] | None:
    """Return (first, last) line indexes of a marked block, or None when absent."""
    starts = [i for i, line in enumerate(lines) if line.startswith(begin)]
    ends = [i for i, line in enumerate(lines) if line.startswith(end)]
    if not starts and not ends:
        return None
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ComposeMergeError(
            f"{path}: the markers '{begin.strip()}' and '{end.strip()}' are unbalanced or "
            "repeated. Restore the file from its backup, or remove the vllm blocks "
            "between the markers by hand, then rerun the deploy.")
    return starts[0], ends[0]


def _last_content_line(node: yaml.Node) -> int:
    """Return the 0-based line of the last character that belongs to node."""
    if isinstance(node, yaml.MappingNode) and not node.flow_style and node.value:
        return _last_content_line(node.value[-1][1])
    if isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value:
        return _last_content_line(node.value[-1])
    mark = node.end_mark
    # A block scalar ends at column 0 of the line after its text.
    return mark.line if mark.column > 0 else mark.line - 1


def _top_level(root: yaml.MappingNode, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    for key_node, value_node in root.value:
        if key_node.value == key:
            return key_node, value_node
    return None


def merge(text: str, service_block: str, network_block: str, network: str,
          path: str) -> str:
    """Return the compose text with the vllm service and its network in place.

    Raises ComposeMergeError, before anything is written, when the file is not
    valid YAML, has no services, or already defines an unmanaged `vllm` service
    or a `networks` section that lacks the network.
    """
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"

    service_span = _marked_span(lines, SERVICE_BEGIN, SERVICE_END, path)
    network_span = _marked_span(lines, NETWORK_BEGIN, NETWORK_END, path)

    # Replace marked blocks from the bottom up so earlier indexes stay valid.
    spans = [(span, block) for span, block in ((service_span, service_block),
                                               (network_span, network_block)) if span]
    for (first, last), block in sorted(spans, key=lambda item: item[0][0], reverse=True):
        lines[first:last + 1] = block.splitlines(keepends=True)

    if service_span and network_span:
        return _checked("".join(lines), network, path)

    try:
        root = yaml.compose("".join(lines))
    except yaml.YAMLError as error:
        raise ComposeMergeError(
            f"{path} is not valid YAML ({error}). Fix the file, then rerun the deploy.") from None
    if not isinstance(root, yaml.MappingNode) or _top_level(root, "services") is None:
        raise ComposeMergeError(
            f"{path} has no top-level 'services' mapping. Point bestbox_compose_file at "
            "BestBox's compose file.")
    _, services = _top_level(root, "services")
    if not isinstance(services, yaml.MappingNode) or not services.value:
        raise ComposeMergeError(f"{path}: 'services' is empty or not a mapping.")

    if not service_span:
        for key_node, _ in services.value:
            if key_node.value == "vllm":
                raise ComposeMergeError(
                    f"{path} line {key_node.start_mark.line + 1} already defines a 'vllm' "
                    "service that this deploy did not write, and the deploy will not "
                    "overwrite it. Move it aside (for example rename it to vllm-old), then "
                    "rerun the deploy.")
    existing_networks = _top_level(root, "networks")

    insert_after = _last_content_line(services.value[-1][1])
    addition = []
    if not service_span:
        addition += ["\n"] + service_block.splitlines(keepends=True)
    if not network_span:
        if existing_networks is None:
            addition += ["\n"] + network_block.splitlines(keepends=True)
        elif not _defines_network(existing_networks[1], network):
            line = existing_networks[0].start_mark.line + 1
            raise ComposeMergeError(
                f"{path} line {line} has a top-level 'networks' section without the network "
                f"'{network}'. Add '{network}:' to it, or set vllm_network to one of its "
                "networks, then rerun the deploy.")

    if service_span and addition:
        # The service block exists but the network block does not: put the
        # network right after the service block.
        insert_after = next(i for i, line in enumerate(lines) if line.startswith(SERVICE_END))
    lines[insert_after + 1:insert_after + 1] = addition
    return _checked("".join(lines), network, path)


def _defines_network(node: yaml.Node, network: str) -> bool:
    return isinstance(node, yaml.MappingNode) and any(
        key.value == network for key, _ in node.value)


def _checked(text: str, network: str, path: str) -> str:
    """Parse the merged text and confirm the service and network are where expected."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ComposeMergeError(
            f"Merging the vllm service into {path} produced invalid YAML ({error}). "
            "The file was not changed.") from None
    if "vllm" not in (data.get("services") or {}):
        raise ComposeMergeError(f"Merging into {path} lost the vllm service; file unchanged.")
    if network not in (data.get("networks") or {}):
        raise ComposeMergeError(f"Merging into {path} lost the network {network}; unchanged.")
    return text


"""GPU access: the render and video groups, the udev rule and the device nodes."""

from __future__ import annotations

from bestbox.render import render_template

KFD_NODE = "/dev/kfd"


def test_gpu_group_exists(host, gpu_group):
    assert host.group(gpu_group).exists, f"the group {gpu_group} does not exist"


def test_bestbox_user_is_in_gpu_group(host, bestbox_account, gpu_group):
    # `id -Gn` reads the group database, so it shows a membership that
    # usermod added even before the user logs in again.
    groups = host.user(bestbox_account.name).groups
    assert gpu_group in groups


def test_udev_rule_matches_template(host, settings):
    rule = host.file(settings.bestbox_udev_rule_path)
    assert rule.is_file, f"{settings.bestbox_udev_rule_path} is missing"
    assert rule.content_string == render_template("udev-amd-gpu.rules.j2", settings)


def test_udev_rule_is_root_0644(host, settings):
    rule = host.file(settings.bestbox_udev_rule_path)
    assert rule.is_file, f"{settings.bestbox_udev_rule_path} is missing"
    assert rule.user == "root"
    assert rule.group == "root"
    assert rule.mode == 0o644


def _render_nodes(host) -> list[str]:
    result = host.run("find /dev/dri -maxdepth 1 -name 'renderD*'")
    return sorted(line for line in result.stdout.splitlines() if line)


def _device_node_attributes(host) -> dict[str, tuple[str, int]]:
    """Return the group and mode of /dev/kfd and every render node that exists."""
    attributes = {}
    for node in [KFD_NODE] + _render_nodes(host):
        device = host.file(node)
        if device.exists:
            attributes[node] = (device.group, device.mode)
    return attributes


def test_kfd_node_is_character_device(host):
    kind = host.run("stat -c %%F -- %s", KFD_NODE)
    assert kind.rc == 0, f"{KFD_NODE} is missing: {kind.stderr.strip()}"
    assert kind.stdout.strip() == "character special file"


def test_render_node_exists(host):
    assert _render_nodes(host), "no /dev/dri/renderD* node: is the amdgpu driver loaded?"


# The nodes exist only on the host, so they cannot be parametrized at
# collection time. Each test checks every node and lists all wrong ones.
def test_gpu_device_nodes_belong_to_render_group(host):
    wrong = {node: group for node, (group, _) in _device_node_attributes(host).items()
             if group != "render"}
    assert wrong == {}


def test_gpu_device_nodes_have_mode_0660(host):
    wrong = {node: oct(mode) for node, (_, mode) in _device_node_attributes(host).items()
             if mode != 0o660}
    assert wrong == {}

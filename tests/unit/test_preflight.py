"""Preflight checks, given host snapshots shaped like the probe's output."""

import copy

import pytest

from bestbox.config import load_defaults, settings_from
from bestbox.preflight import gfx_name, run_checks

GIB = 1024 ** 3
READY = {
    "user": {"uid": 1000, "gid": 1000, "home": "/home/bestbox", "primary_group": "bestbox",
             "groups": ["render", "video"]},
    "paths": {"/home/bestbox/BestBox": {"exists": True, "type": "directory"}},
    "files": {path: {"exists": True, "type": "file", "owner": "bestbox"} for path in (
        "/home/bestbox/BestBox/docker-compose.yml", "/home/bestbox/BestBox/activate.sh",
        "/home/bestbox/BestBox/activate-cuda.sh")},
    "gpu": {
        "kfd_nodes": [{"node": "0", "gfx_target_version": 0},
                      {"node": "1", "gfx_target_version": 110501}],
        "cards": [{"card": "card1", "vram_total": 512 * 1024 ** 2, "gtt_total": 110 * GIB}],
        "kfd": {"exists": True, "type": "char", "path": "/dev/kfd"},
        "render_nodes": [{"exists": True, "type": "char", "path": "/dev/dri/renderD128"}],
        "amdgpu_loaded": True, "ttm_pages_limit": None, "page_size": 4096,
    },
    "memory": {"mem_total": 128 * GIB},
    "disk": [{"path": "/var/lib/docker", "free": 200 * GIB}],
    "port": {"port": 8001, "listening": False, "holders": []},
    "docker": {"server_version": "27.0", "security_options": ["name=seccomp"],
               "compose_version": "2.40.3", "compose_v1_version": None, "container": None},
    "model": {"dir": "/m", "exists": True, "config": {"exists": True, "size": 900},
              "index": {"exists": True, "size": 100},
              "config_fields": {"num_hidden_layers": 48, "num_key_value_heads": 4,
                                "head_dim": 128},
              "shards": [{"name": f"model-{i:05d}-of-00016.safetensors", "exists": True,
                          "size": 61 * GIB // 16} for i in range(1, 17)]},
}


def findings(snapshot=None, **overrides):
    data = load_defaults()
    data.update(overrides)
    return run_checks(settings_from(data, "test"), snapshot or READY)


def errors(snapshot=None, **overrides):
    return [f for f in findings(snapshot, **overrides) if f.error]


def broken(change):
    snapshot = copy.deepcopy(READY)
    change(snapshot)
    return snapshot


def test_ready_host_has_no_errors():
    assert errors() == []


def test_rocm_override_warning_names_values():
    warnings = [f for f in findings() if f.check == "rocm-env"]
    assert len(warnings) == 1
    assert not warnings[0].error
    assert "HSA_OVERRIDE_GFX_VERSION=11.0.0" in warnings[0].message
    assert "PYTORCH_ROCM_ARCH=gfx1151" in warnings[0].message


@pytest.mark.parametrize("version, name", [(110501, "gfx1151"), (110000, "gfx1100"),
                                           (90010, "gfx90a"), (120001, "gfx1201")])
def test_gfx_name_decodes_target_version(version, name):
    assert gfx_name(version) == name


def test_other_gpu_is_named():
    def wrong_gpu(s):
        s["gpu"]["kfd_nodes"][1]["gfx_target_version"] = 110000
    [finding] = errors(broken(wrong_gpu))
    assert finding.check == "gpu"
    assert "gfx1100" in finding.message


def test_missing_shards_are_named():
    def lose_shards(s):
        s["model"]["shards"][3]["exists"] = False
        s["model"]["shards"][9]["exists"] = False
    [finding] = errors(broken(lose_shards))
    assert "model-00004-of-00016.safetensors" in finding.message
    assert "model-00010-of-00016.safetensors" in finding.message


def test_too_little_gpu_memory_names_the_knobs():
    def small_gtt(s):
        s["gpu"]["cards"][0]["gtt_total"] = 32 * GIB
    [finding] = errors(broken(small_gtt))
    assert finding.check == "memory"
    assert "ttm.pages_limit" in finding.fix
    assert "vllm_max_model_len" in finding.fix
    assert "GiB" in finding.message


def test_pages_limit_caps_gtt():
    def limited(s):
        s["gpu"]["ttm_pages_limit"] = 8 * GIB // 4096
    assert [f.check for f in errors(broken(limited))] == ["memory"]


def test_port_held_by_llama_server_is_named():
    def held(s):
        s["port"] = {"port": 8001, "listening": True, "holders": [
            {"pid": 4242, "comm": "llama-server", "cmdline": "llama-server --port 8001"}]}
    [finding] = errors(broken(held))
    assert "llama-server (pid 4242" in finding.message
    assert errors(broken(held), bestbox_stop_llamacpp=True) == []


def test_port_held_by_our_container_is_accepted():
    def ours(s):
        s["port"] = {"port": 8001, "listening": True, "holders": [
            {"pid": 7, "comm": "docker-proxy", "cmdline": "docker-proxy"}]}
        s["docker"]["container"] = {"status": "running"}
    assert errors(broken(ours)) == []


def test_rootless_daemon_is_rejected_with_reason():
    def rootless(s):
        s["docker"]["security_options"] = ["name=seccomp", "name=rootless"]
    [finding] = errors(broken(rootless))
    assert "cannot pass /dev/kfd" in finding.message


def test_compose_v1_only_is_rejected():
    def v1(s):
        s["docker"]["compose_version"] = None
        s["docker"]["compose_v1_version"] = "1.29.2"
    [finding] = errors(broken(v1))
    assert finding.check == "compose"
    assert "1.29.2" in finding.message


def test_skipped_check_warns():
    def v1(s):
        s["docker"]["compose_version"] = None
    result = findings(broken(v1), skip_checks="compose")
    assert [f for f in result if f.error] == []
    assert any(f.check == "compose" and "skipped" in f.message for f in result)


def test_missing_render_node_is_reported():
    def no_render(s):
        s["gpu"]["render_nodes"] = []
    [finding] = errors(broken(no_render))
    assert "renderD" in finding.message


def test_low_disk_is_reported():
    def full(s):
        s["disk"][0]["free"] = 10 * GIB
    [finding] = errors(broken(full))
    assert "10.0 GiB free" in finding.message

"""Preflight checks: decide from a host snapshot whether the host is ready.

Each check has an id (see KNOWN_CHECK_IDS in bestbox/config.py) that
`--data skip_checks=ID,...` skips. A check returns Findings: errors stop the
deploy before anything changes, warnings are printed and the deploy goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

from bestbox.config import Settings

GFX1151 = 110501
GIB = 1024 ** 3


@dataclass(frozen=True)
class Finding:
    check: str
    message: str
    fix: str
    error: bool = True

    def __str__(self) -> str:
        level = "error" if self.error else "warning"
        return f"[{self.check}] {level}: {self.message} Fix: {self.fix}"


def gfx_name(version: int) -> str:
    """Return the gfx name of a KFD gfx_target_version, e.g. 110501 -> gfx1151."""
    major, minor, stepping = version // 10000, (version // 100) % 100, version % 100
    return f"gfx{major}{minor:x}{stepping:x}"


def check_gpu(settings: Settings, snapshot: dict) -> list[Finding]:
    versions = [node["gfx_target_version"] for node in snapshot["gpu"]["kfd_nodes"]
                if node["gfx_target_version"]]
    if GFX1151 in versions:
        return []
    if versions:
        names = ", ".join(gfx_name(v) for v in versions)
        return [Finding("gpu", f"the KFD topology lists {names}, not gfx1151 "
                        f"(gfx_target_version {GFX1151}).",
                        "run this deploy on the Strix Halo box (Radeon 8060S), or skip the check "
                        "with --data skip_checks=gpu if the GPU is known to work with this image.")]
    return [Finding("gpu", "no GPU node in /sys/class/kfd/kfd/topology/nodes.",
                    "install the amdgpu kernel driver with KFD support (ROCm 7.x) and reboot.")]


def check_devices(settings: Settings, snapshot: dict) -> list[Finding]:
    findings = []
    kfd = snapshot["gpu"]["kfd"]
    if not kfd.get("exists") or kfd.get("type") != "char":
        findings.append(Finding("devices", "/dev/kfd is missing or not a character device.",
                                "load amdgpu (modprobe amdgpu) and check dmesg for KFD errors."))
    if not [node for node in snapshot["gpu"]["render_nodes"] if node.get("type") == "char"]:
        findings.append(Finding("devices", "no /dev/dri/renderD* node exists.",
                                "load amdgpu and check that the iGPU is enabled in the BIOS."))
    return findings


def check_amdgpu(settings: Settings, snapshot: dict) -> list[Finding]:
    if snapshot["gpu"]["amdgpu_loaded"]:
        return []
    return [Finding("amdgpu", "the amdgpu kernel module is not loaded (/sys/module/amdgpu "
                    "is missing).", "run modprobe amdgpu, or install linux-modules-extra "
                    "for the running kernel.")]


def check_docker(settings: Settings, snapshot: dict) -> list[Finding]:
    docker = snapshot["docker"]
    if docker["server_version"]:
        return []
    return [Finding("docker", f"the Docker engine does not answer "
                    f"({docker.get('server_error') or 'no output'}).",
                    "install Docker Engine and start it (systemctl start docker), and run the "
                    "deploy as root or with --sudo.")]


def check_compose(settings: Settings, snapshot: dict) -> list[Finding]:
    docker = snapshot["docker"]
    if docker["compose_version"]:
        return []
    seen = f"docker-compose v1 {docker['compose_v1_version']} is installed, but " \
        if docker.get("compose_v1_version") else ""
    return [Finding("compose", f"{seen}`docker compose version` failed: the Compose v2 "
                    "plugin is missing.", "install the docker-compose-plugin package "
                    "(Docker's apt repository) or the docker-compose-v2 package (Ubuntu).")]


def check_rootless(settings: Settings, snapshot: dict) -> list[Finding]:
    options = " ".join(snapshot["docker"].get("security_options") or [])
    if "rootless" not in options:
        return []
    return [Finding("rootless", "the Docker daemon runs rootless, and a rootless daemon "
                    "cannot pass /dev/kfd through to a container.",
                    "use the system (rootful) Docker daemon: unset DOCKER_HOST and run the "
                    "deploy as root or with --sudo.")]


def check_bestbox(settings: Settings, snapshot: dict) -> list[Finding]:
    findings = []
    user = settings.bestbox_user
    if snapshot["user"] is None:
        return [Finding("bestbox", f"the user {user} does not exist.",
                        f"create it, or set bestbox_user to the owner of {settings.bestbox_path}.")]
    checkout = snapshot["paths"].get(settings.bestbox_path, {})
    if checkout.get("type") != "directory":
        return [Finding("bestbox", f"the BestBox checkout {settings.bestbox_path} does not exist.",
                        "clone BestBox there, or set bestbox_path.")]
    edited = [settings.compose_path] + [settings.path(p) for p in settings.bestbox_activate_scripts]
    for path in edited:
        entry = snapshot["files"].get(path, {})
        if not entry.get("exists"):
            findings.append(Finding("bestbox", f"{path} is missing.",
                                    "restore it from git (git checkout -- FILE) in the checkout."))
        elif entry.get("type") != "file":
            findings.append(Finding("bestbox", f"{path} is a {entry.get('type')}, not a "
                                    "regular file.", "replace it with the regular file from git."))
        elif entry.get("owner") != user:
            findings.append(Finding("bestbox", f"{path} is owned by {entry.get('owner')}, "
                                    f"not {user}.", f"run chown {user} {path}."))
    return findings


def model_bytes(snapshot: dict) -> int:
    return sum(shard["size"] for shard in snapshot["model"].get("shards", []))


def check_model(settings: Settings, snapshot: dict) -> list[Finding]:
    model = snapshot["model"]
    where = model["dir"]
    fetch = (f"download it as {settings.bestbox_user}: modelscope download --model "
             f"{settings.vllm_model_id} (into ~/{settings.vllm_modelscope_cache}/hub).")
    if not model["exists"]:
        return [Finding("model", f"the model directory {where} does not exist.", fetch)]
    findings = []
    if not model["config"].get("exists") or not model["config"].get("size"):
        findings.append(Finding("model", f"{where}/config.json is missing or empty.", fetch))
    if not model["index"].get("exists") or "shards" not in model:
        findings.append(Finding("model", f"{where}/model.safetensors.index.json is missing or "
                                f"unreadable ({model.get('index_error', 'no weight_map')}).", fetch))
        return findings
    missing = [shard["name"] for shard in model["shards"] if not shard["exists"]]
    empty = [shard["name"] for shard in model["shards"] if shard["exists"] and not shard["size"]]
    if missing:
        findings.append(Finding("model", f"{len(missing)} of {len(model['shards'])} shards "
                                f"listed in the index are missing: {', '.join(missing)}.",
                                "finish the download (rerun it; it resumes).", ))
    if empty:
        findings.append(Finding("model", f"empty shards: {', '.join(empty)}.",
                                "delete them and rerun the download."))
    return findings


def kv_cache_bytes(settings: Settings, snapshot: dict) -> int:
    """Estimate the KV cache for max-model-len x max-num-seqs tokens from config.json."""
    fields = snapshot["model"].get("config_fields") or {}
    layers = fields.get("num_hidden_layers") or 48
    kv_heads = fields.get("num_key_value_heads") or 4
    head_dim = fields.get("head_dim") or (
        (fields.get("hidden_size") or 2048) // (fields.get("num_attention_heads") or 32))
    bytes_per_value = 4 if settings.vllm_dtype in ("float32", "float") else 2
    per_token = 2 * layers * kv_heads * head_dim * bytes_per_value
    return per_token * settings.vllm_max_model_len * settings.vllm_max_num_seqs


def gpu_memory_bytes(snapshot: dict) -> int:
    """Return VRAM carve-out plus GTT as ROCm reports it, with GTT capped by ttm.pages_limit."""
    gpu = snapshot["gpu"]
    if not gpu["cards"]:
        return 0
    card = max(gpu["cards"], key=lambda c: c["vram_total"] + c["gtt_total"])
    gtt = card["gtt_total"]
    if gpu.get("ttm_pages_limit"):
        gtt = min(gtt, gpu["ttm_pages_limit"] * gpu["page_size"])
    return card["vram_total"] + gtt


def check_memory(settings: Settings, snapshot: dict) -> list[Finding]:
    need = model_bytes(snapshot) + kv_cache_bytes(settings, snapshot)
    usable_gpu = int(gpu_memory_bytes(snapshot) * settings.vllm_gpu_memory_utilization)
    system = snapshot["memory"]["mem_total"] or 0
    knobs = ("raise the BIOS UMA frame buffer size, raise the GTT limit with the kernel "
             "parameters ttm.pages_limit and amdgpu.gttsize, raise vllm_gpu_memory_utilization "
             "(at most 0.95), or lower vllm_max_model_len or vllm_max_num_seqs.")
    findings = []
    figures = (f"the model needs {need / GIB:.1f} GiB ({model_bytes(snapshot) / GIB:.1f} GiB of "
               f"weights plus a {kv_cache_bytes(settings, snapshot) / GIB:.2f} GiB KV cache for "
               f"{settings.vllm_max_model_len} tokens x {settings.vllm_max_num_seqs} sequences)")
    if need > usable_gpu:
        findings.append(Finding("memory", f"{figures}, but vLLM may use only "
                                f"{usable_gpu / GIB:.1f} GiB: {gpu_memory_bytes(snapshot) / GIB:.1f}"
                                f" GiB of VRAM plus GTT x {settings.vllm_gpu_memory_utilization}.",
                                knobs))
    if not system:
        findings.append(Finding("memory", "could not read MemTotal from /proc/meminfo, so the "
                                "system RAM was not checked.", "mount /proc on the host.",
                                error=False))
    elif need > system:
        findings.append(Finding("memory", f"{figures}, but the system has only "
                                f"{system / GIB:.1f} GiB of RAM, which the GPU shares.",
                                "use a smaller or quantized model, or lower vllm_max_model_len."))
    return findings


def check_port(settings: Settings, snapshot: dict) -> list[Finding]:
    port = snapshot["port"]
    if not port["listening"]:
        return []
    container = snapshot["docker"].get("container")
    holders = port["holders"]
    if container and container.get("status") == "running" and all(
            holder["comm"] in ("docker-proxy", "dockerd") for holder in holders):
        return []
    names = ", ".join(f"{h['comm']} (pid {h['pid']}: {h['cmdline'][:80]})" for h in holders) \
        or "a process this user cannot see"
    if settings.bestbox_stop_llamacpp and holders and all(
            h["comm"] == "llama-server" for h in holders):
        return []
    return [Finding("port", f"port {settings.vllm_port} is held by {names}.",
                    "stop that process (BestBox's scripts/start-llm.sh starts llama-server "
                    f"on {settings.vllm_port}), or set bestbox_stop_llamacpp=true to let the "
                    "deploy stop a llama-server there, or choose another vllm_port.")]


def check_rocm_env(settings: Settings, snapshot: dict) -> list[Finding]:
    override = settings.vllm_hsa_override_gfx_version
    if override and settings.vllm_pytorch_rocm_arch == "gfx1151":
        return [Finding("rocm-env", f"HSA_OVERRIDE_GFX_VERSION={override} makes the runtime "
                        "treat the GPU as another target, while PYTORCH_ROCM_ARCH=gfx1151 asks "
                        "for native gfx1151 kernels; the two contradict each other.",
                        "set vllm_hsa_override_gfx_version to an empty string once the image is "
                        "known to run natively on gfx1151.", error=False)]
    return []


def check_disk(settings: Settings, snapshot: dict) -> list[Finding]:
    need = settings.vllm_min_free_disk_gb * 1024 ** 3
    findings = []
    for disk in snapshot["disk"]:
        if disk["free"] < need:
            findings.append(Finding("disk", f"{disk['path']} has {disk['free'] / GIB:.1f} GiB "
                                    f"free; at least {settings.vllm_min_free_disk_gb} GiB are "
                                    "needed for the image and the container logs.",
                                    "free space there (docker system prune), or move Docker's "
                                    "data-root, or lower vllm_min_free_disk_gb."))
    return findings


CHECKS = {
    "gpu": check_gpu,
    "devices": check_devices,
    "amdgpu": check_amdgpu,
    "docker": check_docker,
    "compose": check_compose,
    "rootless": check_rootless,
    "bestbox": check_bestbox,
    "model": check_model,
    "memory": check_memory,
    "port": check_port,
    "rocm-env": check_rocm_env,
    "disk": check_disk,
}


def run_checks(settings: Settings, snapshot: dict) -> list[Finding]:
    """Run every check that is not skipped, in order, and return all findings."""
    findings = []
    docker_ok = bool(snapshot["docker"]["server_version"])
    for check_id, check in CHECKS.items():
        if check_id in settings.skipped_checks:
            findings.append(Finding(check_id, "check skipped by skip_checks.",
                                    "remove it from skip_checks to run it.", error=False))
            continue
        if check_id in ("compose", "rootless") and not docker_ok:
            continue
        if check_id == "memory" and (not snapshot["model"].get("shards")
                                     or "model" in settings.skipped_checks):
            findings.append(Finding("memory", "not checked, because the model's shard sizes "
                                    "are unknown or the model check was skipped.",
                                    "make the model check pass.", error=False))
            continue
        findings += check(settings, snapshot)
    return findings

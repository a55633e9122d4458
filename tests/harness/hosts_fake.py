"""Test doubles for the parts of a Strix Halo box that cannot exist here.

This machine has no AMD GPU and no room for the 61 GB model, so a throwaway
host gets stand-ins. A KFD topology and a DRM tree are bind-mounted over the
host's /sys/class, and device nodes are made with mknod. Static files can
replace /proc/cmdline, /proc/meminfo and /proc/modules. The model directory
has the real file names, and its shards are sparse files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

GiB = 1 << 30

# Device ids of the Radeon 8060S (Strix Halo) as the amdgpu driver reports them.
AMD_VENDOR_ID = 0x1002
STRIX_HALO_DEVICE_ID = 0x1586
DRM_MAJOR = 226


@dataclasses.dataclass
class GpuSpec:
    """What the fake KFD topology, DRM tree and device nodes describe."""

    # One entry per GPU node. 110501 decodes as gfx1151 (major*10000 +
    # minor*100 + stepping). The CPU node 0 always reports 0.
    gfx_target_versions: tuple[int, ...] = (110501,)
    card_index: int = 1
    render_minor: int = 128
    render_node: bool = True
    kfd_node: bool = True
    amdgpu_loaded: bool = True
    # Bytes. 96 GiB of BIOS carve-out leaves 32 GiB of system RAM, and the
    # kernel's default GTT limit is half of that.
    vram_total: int = 96 * GiB
    gtt_total: int = 16 * GiB
    vram_used: int = 512 << 20
    gtt_used: int = 64 << 20


def gfx_name(version: int) -> str:
    """Return the gfx target name for a KFD gfx_target_version (110501 -> gfx1151)."""
    major, minor, stepping = version // 10000, (version // 100) % 100, version % 100
    return f"gfx{major}{minor:x}{stepping:x}"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _properties(values: dict[str, int]) -> str:
    return "".join(f"{key} {value}\n" for key, value in values.items())


def _cpu_node_properties(cpu_cores: int) -> dict[str, int]:
    return {
        "cpu_cores_count": cpu_cores,
        "simd_count": 0,
        "mem_banks_count": 1,
        "caches_count": 0,
        "io_links_count": 1,
        "p2p_links_count": 0,
        "cpu_core_id_base": 0,
        "simd_id_base": 0,
        "max_waves_per_simd": 0,
        "lds_size_in_kb": 0,
        "gds_size_in_kb": 0,
        "num_gws": 0,
        "wave_front_size": 0,
        "array_count": 0,
        "simd_arrays_per_engine": 0,
        "cu_per_simd_array": 0,
        "simd_per_cu": 0,
        "max_slots_scratch_cu": 0,
        "gfx_target_version": 0,
        "vendor_id": 0,
        "device_id": 0,
        "location_id": 0,
        "domain": 0,
        "drm_render_minor": 0,
        "hive_id": 0,
        "num_sdma_engines": 0,
        "num_sdma_xgmi_engines": 0,
        "num_sdma_queues_per_engine": 0,
        "num_cp_queues": 0,
        "max_engine_clk_ccompute": 5187,
    }


def _gpu_node_properties(version: int, render_minor: int, node: int) -> dict[str, int]:
    return {
        "cpu_cores_count": 0,
        "simd_count": 80,
        "mem_banks_count": 1,
        "caches_count": 70,
        "io_links_count": 1,
        "p2p_links_count": 0,
        "cpu_core_id_base": 0,
        "simd_id_base": 2147487744 + node,
        "max_waves_per_simd": 16,
        "lds_size_in_kb": 64,
        "gds_size_in_kb": 0,
        "num_gws": 64,
        "wave_front_size": 32,
        "array_count": 4,
        "simd_arrays_per_engine": 2,
        "cu_per_simd_array": 10,
        "simd_per_cu": 2,
        "max_slots_scratch_cu": 32,
        "gfx_target_version": version,
        "vendor_id": AMD_VENDOR_ID,
        "device_id": STRIX_HALO_DEVICE_ID,
        "location_id": 0xC500 + node - 1,
        "domain": 0,
        "drm_render_minor": render_minor,
        "hive_id": 0,
        "num_sdma_engines": 2,
        "num_sdma_xgmi_engines": 0,
        "num_sdma_queues_per_engine": 6,
        "num_cp_queues": 8,
        "max_engine_clk_fcompute": 2900,
        "local_mem_size": 0,
        "fw_version": 2350,
        "capability": 671588992,
        "debug_prop": 1495,
        "sdma_fw_version": 14,
        "unique_id": 0,
        "num_xcc": 1,
        "max_engine_clk_ccompute": 5187,
    }


def build_kfd_tree(dest: Path, gpu: GpuSpec, cpu_cores: int = 32) -> None:
    """Write a fake /sys/class/kfd/kfd tree into `dest` (the `kfd` directory)."""
    topology = dest / "kfd/topology"
    _write(topology / "generation_id", "1\n")
    _write(topology / "system_properties", "platform_oem 0\nplatform_id 0\nplatform_rev 0\n")
    nodes = topology / "nodes"
    _write(nodes / "0/properties", _properties(_cpu_node_properties(cpu_cores)))
    _write(nodes / "0/name", "\n")
    _write(nodes / "0/gpu_id", "0\n")
    _write(nodes / "0/mem_banks/0/properties", _properties({
        "heap_type": 0, "size_in_bytes": gpu.gtt_total, "flags": 0, "width": 64, "mem_clk_max": 8000,
    }))
    for offset, version in enumerate(gpu.gfx_target_versions):
        node = nodes / str(offset + 1)
        minor = gpu.render_minor + offset
        _write(node / "properties", _properties(_gpu_node_properties(version, minor, offset + 1)))
        _write(node / "name", gfx_name(version) + "\n")
        _write(node / "gpu_id", f"{55233 + offset}\n")
        _write(node / "mem_banks/0/properties", _properties({
            "heap_type": 1, "size_in_bytes": gpu.vram_total, "flags": 0, "width": 256, "mem_clk_max": 8000,
        }))


def build_drm_tree(dest: Path, gpu: GpuSpec) -> None:
    """Write a fake /sys/class/drm tree into `dest` (the `drm` directory)."""
    card = dest / f"card{gpu.card_index}"
    device = card / "device"
    _write(dest / "version", "drm 1.1.0 20060810\n")
    _write(card / "dev", f"{DRM_MAJOR}:{gpu.card_index}\n")
    _write(card / "uevent", f"MAJOR={DRM_MAJOR}\nMINOR={gpu.card_index}\nDEVNAME=dri/card{gpu.card_index}\nDEVTYPE=drm_minor\n")
    _write(device / "vendor", f"0x{AMD_VENDOR_ID:04x}\n")
    _write(device / "device", f"0x{STRIX_HALO_DEVICE_ID:04x}\n")
    _write(device / "uevent", f"DRIVER=amdgpu\nPCI_ID={AMD_VENDOR_ID:04X}:{STRIX_HALO_DEVICE_ID:04X}\nPCI_SLOT_NAME=0000:c5:00.0\n")
    _write(device / "gpu_busy_percent", "0\n")
    set_drm_memory(dest, gpu)
    if gpu.render_node:
        render = dest / f"renderD{gpu.render_minor}"
        _write(render / "dev", f"{DRM_MAJOR}:{gpu.render_minor}\n")
        _write(render / "uevent", f"MAJOR={DRM_MAJOR}\nMINOR={gpu.render_minor}\nDEVNAME=dri/renderD{gpu.render_minor}\nDEVTYPE=drm_minor\n")
        (render / "device").symlink_to(f"../card{gpu.card_index}/device")


def set_drm_memory(drm_dir: Path, gpu: GpuSpec) -> None:
    """Write the mem_info_* files of the fake card from `gpu` (values in bytes)."""
    device = drm_dir / f"card{gpu.card_index}/device"
    _write(device / "mem_info_vram_total", f"{gpu.vram_total}\n")
    _write(device / "mem_info_vram_used", f"{gpu.vram_used}\n")
    _write(device / "mem_info_vis_vram_total", f"{gpu.vram_total}\n")
    _write(device / "mem_info_gtt_total", f"{gpu.gtt_total}\n")
    _write(device / "mem_info_gtt_used", f"{gpu.gtt_used}\n")


def build_amdgpu_module(dest: Path) -> None:
    """Write a fake /sys/module/amdgpu directory into `dest`."""
    _write(dest / "initstate", "live\n")
    _write(dest / "refcnt", "12\n")
    _write(dest / "version", "6.14.14\n")
    _write(dest / "parameters/gttsize", "-1\n")
    _write(dest / "parameters/vm_fragment_size", "-1\n")


def fake_modules_file(real: str, amdgpu_loaded: bool) -> str:
    """Return /proc/modules content with the amdgpu line added or removed."""
    lines = [line for line in real.splitlines() if not line.startswith("amdgpu ")]
    if amdgpu_loaded:
        lines.insert(0, "amdgpu 19648512 12 - Live 0x0000000000000000")
    return "\n".join(lines) + "\n"


def fake_meminfo_file(real: str, total_bytes: int) -> str:
    """Return /proc/meminfo content rescaled so MemTotal is `total_bytes`.

    The file is a static snapshot: its numbers do not move while the host runs.
    """
    values: dict[str, int] = {}
    for line in real.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0])
    real_total = values.get("MemTotal", 1)
    scale = (total_bytes // 1024) / real_total
    out = []
    for line in real.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if key in ("MemTotal", "MemFree", "MemAvailable", "Cached", "Buffers", "Active", "Inactive") and parts:
            number = total_bytes // 1024 if key == "MemTotal" else int(int(parts[0]) * scale)
            unit = " kB" if len(parts) > 1 else ""
            out.append(f"{key}:{number:>16}{unit}")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def unregistered_char_major(candidates: tuple[int, ...]) -> int:
    """Return the first major number in `candidates` that no driver on this machine registered.

    Opening a node with an unregistered major fails with ENXIO, so a fake node
    can never reach a real device of this machine.
    """
    registered: set[int] = set()
    in_char_section = False
    with open("/proc/devices") as handle:
        for line in handle:
            if line.startswith("Character devices"):
                in_char_section = True
            elif line.startswith("Block devices"):
                in_char_section = False
            elif in_char_section and line.split():
                registered.add(int(line.split()[0]))
    for major in candidates:
        if major not in registered:
            return major
    raise RuntimeError(f"all candidate device majors {candidates} are registered on this machine")


def make_char_device(path: Path, major: int, minor: int, uid: int, gid: int, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
    os.mknod(path, stat.S_IFCHR | mode, os.makedev(major, minor))
    os.chown(path, uid, gid)
    os.chmod(path, mode)


# --- Model stand-in ----------------------------------------------------------

QWEN3_30B_A3B_CONFIG = {
    "architectures": ["Qwen3MoeForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "decoder_sparse_step": 1,
    "eos_token_id": 151645,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 6144,
    "max_position_embeddings": 262144,
    "max_window_layers": 48,
    "mlp_only_layers": [],
    "model_type": "qwen3_moe",
    "moe_intermediate_size": 768,
    "norm_topk_prob": True,
    "num_attention_heads": 32,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 48,
    "num_key_value_heads": 4,
    "output_router_logits": False,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 10000000,
    "router_aux_loss_coef": 0.001,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.51.0",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}


@dataclasses.dataclass
class FakeModel:
    """A stand-in for the Qwen3-30B-A3B-Instruct-2507 directory in the ModelScope cache.

    The shards are sparse files, so their apparent size (stat, `du -b`,
    os.path.getsize) adds up to `total_size` while they take almost no disk.
    `du` without `-b` reports the blocks actually used, which is near zero.
    """

    # The real BF16 checkpoint is about 61 GB in 16 shards.
    total_size: int = 61_064_000_000
    shards: int = 16
    missing_shards: tuple[int, ...] = ()
    subdir: str = ".cache/modelscope/hub/models/Qwen/Qwen3-30B-A3B-Instruct-2507"

    def shard_name(self, number: int) -> str:
        return f"model-{number:05d}-of-{self.shards:05d}.safetensors"


def _safetensors_header(shard_index: int) -> bytes:
    header = json.dumps({"__metadata__": {"format": "pt", "shard": str(shard_index)}}).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header


def write_fake_model(directory: Path, model: FakeModel, uid: int, gid: int) -> None:
    """Create the model stand-in in `directory`, owned by uid:gid."""
    directory.mkdir(parents=True, exist_ok=True)
    layers = QWEN3_30B_A3B_CONFIG["num_hidden_layers"]
    weight_map: dict[str, str] = {"model.embed_tokens.weight": model.shard_name(1)}
    for layer in range(layers):
        shard = model.shard_name(1 + layer * model.shards // layers)
        for tensor in ("input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                       "self_attn.v_proj.weight", "self_attn.o_proj.weight", "mlp.gate.weight"):
            weight_map[f"model.layers.{layer}.{tensor}"] = shard
    weight_map["model.norm.weight"] = model.shard_name(model.shards)
    weight_map["lm_head.weight"] = model.shard_name(model.shards)

    files = {
        "config.json": json.dumps(QWEN3_30B_A3B_CONFIG, indent=2) + "\n",
        "generation_config.json": json.dumps({
            "bos_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643],
            "pad_token_id": 151643, "temperature": 0.7, "top_k": 20, "top_p": 0.8,
        }, indent=2) + "\n",
        "model.safetensors.index.json": json.dumps(
            {"metadata": {"total_size": model.total_size}, "weight_map": weight_map}, indent=2) + "\n",
        "tokenizer_config.json": json.dumps({"model_max_length": 262144, "eos_token": "<|im_end|>"}) + "\n",
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}}) + "\n",
        "vocab.json": "{}\n",
        "merges.txt": "#version: 0.2\n",
        "configuration.json": json.dumps({"framework": "pytorch", "task": "text-generation"}) + "\n",
    }
    for name, text in files.items():
        (directory / name).write_text(text)

    base, remainder = divmod(model.total_size, model.shards)
    for number in range(1, model.shards + 1):
        path = directory / model.shard_name(number)
        if number in model.missing_shards:
            path.unlink(missing_ok=True)
            continue
        size = base + (remainder if number == model.shards else 0)
        with open(path, "wb") as handle:
            handle.write(_safetensors_header(number))
            handle.truncate(size)

    for path in [directory, *directory.iterdir()]:
        os.chown(path, uid, gid)

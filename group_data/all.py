"""Every value the vLLM deploy uses, with its default.

pyinfra loads this file into each host's data. Override a value per host in
`inventory.py`, or for one run with `--data key=value`. Every key here is
validated before any operation runs (see `bestbox/config.py`): a wrong type,
an out-of-range value or an unknown key that starts with `bestbox_` or `vllm_`
stops the deploy before anything on the host changes.
"""

# --- BestBox checkout -------------------------------------------------------
# The user who owns the checkout. Relative cache paths below resolve against
# this user's home directory as read from the target host's passwd database,
# never against the home of the user who runs pyinfra.
bestbox_user = "bestbox"
# Absolute path of the BestBox checkout on the target host.
bestbox_path = "/home/bestbox/BestBox"
# The compose file that receives the `vllm` service, relative to bestbox_path.
bestbox_compose_file = "docker-compose.yml"
# Scripts that operators source; each gets one `export LLM_BASE_URL=...` line.
bestbox_activate_scripts = ["activate.sh", "activate-cuda.sh"]
# Prometheus configuration whose LLM scrape target moves to the vLLM port.
bestbox_prometheus_config = "config/prometheus/prometheus.yml"

# --- Ports --------------------------------------------------------------------
# Port that vLLM publishes on the host.
vllm_port = 8001
# Port of the old llama.cpp server (llama-server on Vulkan). The endpoint audit
# reports files that still point at it.
bestbox_llamacpp_port = 8080
# Stop a llama-server that listens on vllm_port before deploying. BestBox's
# scripts/start-llm.sh listens on 8001, so a running one blocks the container.
bestbox_stop_llamacpp = False

# --- Network exposure ---------------------------------------------------------
# Address the published port binds to. "127.0.0.1" keeps vLLM local to the box.
# "0.0.0.0" publishes it on every interface and then requires vllm_api_key.
vllm_bind_address = "127.0.0.1"
# API key that vLLM requires from clients (its --api-key flag), read from the
# env file. Empty means no key. Required when vllm_bind_address is not loopback.
vllm_api_key = ""
# Docker network the service joins. It is declared in the compose file.
vllm_network = "bestbox-llm"

# --- Model --------------------------------------------------------------------
# Hub id of the model, as stored in the ModelScope cache.
vllm_model_id = "Qwen/Qwen3-30B-A3B-Instruct-2507"
# Name clients use in requests (vLLM's --served-model-name).
vllm_served_model_name = "qwen3-30b"
# Cache directories relative to the BestBox user's home. Both are created,
# owned by that user, and mounted read-only into the container.
vllm_modelscope_cache = ".cache/modelscope"
vllm_huggingface_cache = ".cache/huggingface"
# The model directory, relative to vllm_modelscope_cache. vLLM receives the
# matching absolute path inside the container, so it never contacts a hub.
vllm_model_subdir = "hub/models/Qwen/Qwen3-30B-A3B-Instruct-2507"
# Mount points of the two caches inside the container.
vllm_container_modelscope_cache = "/root/.cache/modelscope"
vllm_container_huggingface_cache = "/root/.cache/huggingface"

# --- vLLM engine flags ----------------------------------------------------------
vllm_dtype = "float16"
# Fraction of the GPU memory that ROCm reports. On unified memory a value that
# is too high makes the whole system swap or meet the OOM killer.
vllm_gpu_memory_utilization = 0.90
vllm_max_model_len = 2048
vllm_max_num_seqs = 8
vllm_max_num_batched_tokens = 4096
vllm_enforce_eager = True
vllm_trust_remote_code = True
# vLLM has logged no requests by default since 0.10; True adds
# --enable-log-requests.
vllm_log_requests = False
# Further arguments appended to `vllm serve`, as a list of strings.
vllm_extra_args = []

# --- ROCm environment -----------------------------------------------------------
# These are the values the BestBox team tested. Setting an override next to a
# native gfx1151 architecture is contradictory: preflight warns about it.
vllm_pytorch_rocm_arch = "gfx1151"
vllm_hsa_override_gfx_version = "11.0.0"
vllm_flash_attention_triton_amd_enable = "TRUE"
vllm_hip_visible_devices = "0"
vllm_hsa_enable_sdma = "0"

# --- Container --------------------------------------------------------------------
vllm_container_name = "bestbox-vllm"
# Prebuilt ROCm 7.2 vLLM image that BestBox validated on gfx1151 (41.5 GB).
vllm_image = "rocm/vllm-dev:rocm7.2_navi_ubuntu24.04_py3.12_pytorch_2.9_vllm_0.14.0rc0"
# Build the image once from templates/Dockerfile.vllm.j2 instead of pulling
# vllm_image. The built image is tagged vllm_build_tag.
vllm_build_image = False
vllm_build_base_image = "rocm/pytorch:rocm7.2_ubuntu24.04_py3.12_pytorch_release_2.9.1"
vllm_build_vllm_version = "0.14.0"
vllm_build_tag = "bestbox/vllm-rocm:local"
vllm_restart_policy = "unless-stopped"
# "host" shares the host's IPC namespace and /dev/shm, as the design does, so
# the engine's worker processes never meet Docker's 64 MB default. Docker
# ignores vllm_shm_size in that mode; it applies with "private".
vllm_ipc_mode = "host"
vllm_shm_size = "16g"
# The design runs the container with seccomp unconfined and SYS_PTRACE, which
# ROCm's debugger and some HIP runtime paths need.
vllm_seccomp_unconfined = True
vllm_cap_sys_ptrace = True

# --- Container health check -----------------------------------------------------
# Durations in seconds. The start period covers the model load, which takes up
# to five minutes on the target box.
vllm_healthcheck_interval = 30
vllm_healthcheck_timeout = 10
vllm_healthcheck_retries = 5
vllm_healthcheck_start_period = 420

# --- Container logs -----------------------------------------------------------------
vllm_log_max_size = "100m"
vllm_log_max_file = 3

# --- Bringing the service up ----------------------------------------------------
# Start or recreate the container after the files are in place.
start_service = True
# Seconds to wait for /health before the deploy fails, and between polls.
vllm_health_wait_timeout = 900
vllm_health_poll_interval = 5
# Prove a chat completion (plain and streaming) once the service is healthy.
vllm_smoke_test = True

# --- Host files the deploy manages ------------------------------------------------
bestbox_udev_rule_path = "/etc/udev/rules.d/70-bestbox-amd-gpu.rules"
# Each run that changes a file saves the original under a new folder here,
# with a manifest. Rollback reads these folders.
bestbox_backup_root = "/var/backups/bestbox-vllm"
# Archive folder, relative to bestbox_path, for the llama.cpp files below.
bestbox_archive_dir = "docs/archive/llama-cpp"
# Rollback removes the files the deploy created (the scripts, the env file and
# the udev rule) unless this is true.
bestbox_rollback_keep_created = False
bestbox_archive_scripts = [
    "scripts/start-llm.sh",
    "scripts/start-llm-cuda.sh",
    "scripts/start-llm-strix.sh",
    "scripts/start-llm-docker.sh",
    "scripts/build-llama-cuda.sh",
    "scripts/install-llama-rocm.sh",
]
bestbox_archive_docs = [
    "docs/llm_backend_comparison.md",
    "docs/VULKAN_VALIDATION_REPORT.md",
]

# --- Preflight ----------------------------------------------------------------------
# Check ids to skip, as a list or a comma-separated string, for example
# `--data skip_checks=memory,disk`. Each skipped check prints a warning.
skip_checks = []
# Free space needed where Docker keeps images (the image alone is 41.5 GB).
vllm_min_free_disk_gb = 60
vllm_docker_data_root = "/var/lib/docker"

# --- Benchmark thresholds ---------------------------------------------------------
# scripts/benchmark_vllm.py exits non-zero when a threshold fails.
# End-to-end latency of one request with 128 output tokens.
vllm_benchmark_max_latency_s = 10.0
vllm_benchmark_min_success_rate = 0.99
# Floor on total (prompt plus output) tokens/s. The design's 16-76 tok/s range
# mixes measures: 16.5 was output tok/s at concurrency 16, and 76.4 was total
# tok/s at concurrency 2 with 128/128 tokens.
vllm_benchmark_min_total_tokens_per_s = 16.0

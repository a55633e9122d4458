"""Read everything the deploy needs from the target host, in one command.

The `HostSnapshot` fact sends this script to the host's python3 together with
a JSON request, and the script prints one JSON document. It only reads: it
opens files, lists directories and runs read-only `docker` commands. Reading
all facts in one remote command keeps a no-op run fast on many hosts.
"""

import base64
import grp
import hashlib
import json
import os
import pwd
import stat
import subprocess
import sys

REQUEST = json.loads(sys.argv[1])
MAX_CONTENT_BYTES = 1024 * 1024


def run(argv, timeout=20, stdin_text=None):
    """Run a command and return (exit code, stdout, stderr); 127 if it is missing."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              input=stdin_text)
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: command not found"
    except subprocess.TimeoutExpired:
        return 124, "", f"{' '.join(argv)}: timed out after {timeout} s"
    return proc.returncode, proc.stdout, proc.stderr


def read_text(path, default=None):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return default


def name_of_uid(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def name_of_gid(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def describe_path(path, want_content, want_hash=True):
    """Return type, mode, owner, group, size, sha256 and (optionally) content of a path.

    want_hash=False skips reading the file, for files as large as model shards.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return {"exists": False}
    except OSError as error:
        return {"exists": False, "error": str(error)}

    kind = "other"
    if stat.S_ISREG(info.st_mode):
        kind = "file"
    elif stat.S_ISDIR(info.st_mode):
        kind = "directory"
    elif stat.S_ISLNK(info.st_mode):
        kind = "link"
    elif stat.S_ISCHR(info.st_mode):
        kind = "char"

    entry = {
        "exists": True,
        "type": kind,
        "mode": stat.S_IMODE(info.st_mode),
        "uid": info.st_uid,
        "gid": info.st_gid,
        "owner": name_of_uid(info.st_uid),
        "group": name_of_gid(info.st_gid),
        "size": info.st_size,
    }
    if kind == "file" and want_hash:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as error:
            entry["error"] = str(error)
            return entry
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        if want_content and len(data) <= MAX_CONTENT_BYTES:
            entry["content"] = base64.b64encode(data).decode("ascii")
    return entry


def read_user(name):
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    groups = sorted(g.gr_name for g in grp.getgrall() if name in g.gr_mem)
    return {
        "uid": entry.pw_uid,
        "gid": entry.pw_gid,
        "home": entry.pw_dir,
        "primary_group": name_of_gid(entry.pw_gid),
        "groups": groups,
    }


def read_groups(names):
    found = {}
    for name in names:
        try:
            found[name] = {"gid": grp.getgrnam(name).gr_gid}
        except KeyError:
            found[name] = None
    return found


def read_gpu():
    nodes = []
    topology = "/sys/class/kfd/kfd/topology/nodes"
    try:
        node_names = sorted(os.listdir(topology), key=lambda n: int(n) if n.isdigit() else 0)
    except OSError:
        node_names = []
    for node in node_names:
        properties = read_text(os.path.join(topology, node, "properties"), "")
        version = 0
        for line in properties.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "gfx_target_version":
                version = int(parts[1]) if parts[1].isdigit() else 0
        nodes.append({"node": node, "gfx_target_version": version})

    cards = []
    try:
        drm_entries = sorted(os.listdir("/sys/class/drm"))
    except OSError:
        drm_entries = []
    for card in drm_entries:
        if not card.startswith("card") or "-" in card:
            continue
        device = os.path.join("/sys/class/drm", card, "device")
        vram = read_text(os.path.join(device, "mem_info_vram_total"))
        gtt = read_text(os.path.join(device, "mem_info_gtt_total"))
        if vram is None and gtt is None:
            continue
        cards.append({
            "card": card,
            "vram_total": int(vram) if vram and vram.isdigit() else 0,
            "gtt_total": int(gtt) if gtt and gtt.isdigit() else 0,
        })

    render_nodes = []
    try:
        dri_entries = sorted(os.listdir("/dev/dri"))
    except OSError:
        dri_entries = []
    for entry in dri_entries:
        if entry.startswith("renderD"):
            described = describe_path(os.path.join("/dev/dri", entry), False)
            described["path"] = os.path.join("/dev/dri", entry)
            render_nodes.append(described)

    kfd = describe_path("/dev/kfd", False)
    kfd["path"] = "/dev/kfd"
    pages_limit = read_text("/sys/module/ttm/parameters/pages_limit")
    return {
        "kfd_nodes": nodes,
        "cards": cards,
        "kfd": kfd,
        "render_nodes": render_nodes,
        "amdgpu_loaded": os.path.isdir("/sys/module/amdgpu"),
        "ttm_pages_limit": int(pages_limit) if pages_limit and pages_limit.isdigit() else None,
        "page_size": os.sysconf("SC_PAGE_SIZE"),
    }


def read_memory():
    total = None
    for line in (read_text("/proc/meminfo", "") or "").splitlines():
        if line.startswith("MemTotal:"):
            total = int(line.split()[1]) * 1024
    return {"mem_total": total}


def read_model(model_dir):
    """Return config.json fields and the shard list with sizes for a model directory."""
    result = {"dir": model_dir, "exists": os.path.isdir(model_dir)}
    config_path = os.path.join(model_dir, "config.json")
    index_path = os.path.join(model_dir, "model.safetensors.index.json")
    result["config"] = describe_path(config_path, False, want_hash=False)
    result["index"] = describe_path(index_path, False, want_hash=False)
    try:
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
        keys = ("num_hidden_layers", "num_key_value_heads", "num_attention_heads",
                "head_dim", "hidden_size", "torch_dtype")
        result["config_fields"] = {key: config.get(key) for key in keys}
    except (OSError, ValueError) as error:
        result["config_error"] = str(error)
    try:
        with open(index_path, encoding="utf-8") as handle:
            index = json.load(handle)
        shard_names = sorted(set(index.get("weight_map", {}).values()))
        shards = []
        for shard in shard_names:
            described = describe_path(os.path.join(model_dir, shard), False, want_hash=False)
            shards.append({"name": shard, "exists": described.get("exists", False),
                           "size": described.get("size", 0)})
        result["shards"] = shards
    except (OSError, ValueError) as error:
        result["index_error"] = str(error)
    return result


def free_bytes(path):
    """Return free bytes on the filesystem of path, or of its nearest existing parent."""
    probe = path
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe.rstrip("/")) or "/"
    stats = os.statvfs(probe or "/")
    return {"path": path, "measured_at": probe, "free": stats.f_bavail * stats.f_frsize}


def listening_inodes(port):
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in (read_text(table, "") or "").splitlines()[1:]:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "0A":
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port:
                inodes.add(fields[9])
    return inodes


def read_port(port):
    """Return whether a TCP port is listened on, and by which processes."""
    inodes = listening_inodes(port)
    holders = []
    if inodes:
        targets = {f"socket:[{inode}]" for inode in inodes}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            fd_dir = os.path.join("/proc", pid, "fd")
            try:
                links = {os.readlink(os.path.join(fd_dir, fd)) for fd in os.listdir(fd_dir)}
            except OSError:
                continue
            if links & targets:
                cmdline = (read_text(os.path.join("/proc", pid, "cmdline"), "") or "")
                holders.append({
                    "pid": int(pid),
                    "comm": read_text(os.path.join("/proc", pid, "comm"), "?"),
                    "cmdline": cmdline.replace("\0", " ").strip(),
                })
    return {"port": port, "listening": bool(inodes), "holders": holders}


def compose_service_hash(project_directory, compose_file, service):
    """Return (hash, error) of a service, computed as `docker compose up` labels its container.

    Compose v2.40.3 hashes a service for `config --hash` before it merges the
    service's env_file into `environment`, and for the container's
    com.docker.compose.config-hash label after, so the two never match for a
    service with an env_file. Hashing the resolved model that `config` prints
    gives the label's value. The model contains the env file's values, API key
    included, so only the hash leaves this function.
    """
    compose = ["docker", "compose", "--project-directory", project_directory]
    code, resolved, err = run([*compose, "-f", compose_file, "config", service])
    if code != 0:
        return None, err.strip() or f"docker compose config {service} failed"
    code, out, err = run([*compose, "-f", "-", "config", "--hash", service],
                         stdin_text=resolved)
    if code != 0 or not out.split():
        return None, err.strip() or f"docker compose config --hash {service} failed"
    return out.split()[-1], None


def read_docker(container, project_directory, compose_file, service, images):
    result = {}
    # One `docker info` call returns both the server version and the security
    # options. Each docker command costs a process start, and these add up on
    # a no-op run.
    code, out, err = run(["docker", "info", "--format",
                          '{"version": {{json .ServerVersion}}, '
                          '"security": {{json .SecurityOptions}}}'])
    info = {}
    if code == 0:
        try:
            info = json.loads(out)
        except ValueError:
            err = f"unexpected output of docker info: {out.strip()[:200]}"
    result["server_version"] = info.get("version") or None
    result["server_error"] = None if result["server_version"] else (err or out).strip()
    result["security_options"] = info.get("security") or []
    code, out, err = run(["docker", "compose", "version", "--short"])
    result["compose_version"] = out.strip() if code == 0 else None
    result["compose_error"] = (err or out).strip() if code != 0 else None
    result["compose_v1_version"] = None
    if not result["compose_version"]:
        code, out, _ = run(["docker-compose", "version", "--short"])
        result["compose_v1_version"] = out.strip() if code == 0 else None

    code, out, _ = run(["docker", "inspect", "--type", "container", container])
    result["container"] = None
    if code == 0:
        info = json.loads(out)[0]
        state = info.get("State", {})
        result["container"] = {
            "id": info.get("Id"),
            "status": state.get("Status"),
            "health": (state.get("Health") or {}).get("Status"),
            "config_hash": info.get("Config", {}).get("Labels", {}).get(
                "com.docker.compose.config-hash"),
        }

    result["compose_hash"] = None
    if result["compose_version"] and os.path.isfile(compose_file):
        result["compose_hash"], error = compose_service_hash(project_directory, compose_file,
                                                             service)
        if error:
            result["compose_hash_error"] = error

    result["images"] = {}
    for image in images:
        code, _, _ = run(["docker", "image", "inspect", "--format", "{{.Id}}", image])
        result["images"][image] = code == 0
    return result


def read_backups(root):
    """Return the manifests of earlier runs, oldest first.

    Each run folder contains manifest.jsonl, one JSON object a line, written
    before the change it describes. A line cut short by a killed run is skipped.
    """
    runs = []
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return runs
    for name in names:
        entries = []
        try:
            with open(os.path.join(root, name, "manifest.jsonl"), encoding="utf-8") as handle:
                for line in handle:
                    try:
                        entries.append(json.loads(line))
                    except ValueError:
                        continue
        except OSError:
            continue
        rolled_back = os.path.exists(os.path.join(root, name, "rolled-back"))
        runs.append({"run": name, "entries": entries, "rolled_back": rolled_back})
    return runs


def read_audit(root, patterns, skip_dirs):
    """Return file:line hits of the given regular expressions in the text files under root."""
    import re

    compiled = [(kind, re.compile(pattern)) for kind, pattern in patterns]
    hits = []
    for directory, subdirs, names in os.walk(root):
        relative = os.path.relpath(directory, root)
        subdirs[:] = sorted(d for d in subdirs
                            if d not in skip_dirs and os.path.join(relative, d) not in skip_dirs)
        for name in sorted(names):
            path = os.path.join(directory, name)
            try:
                if os.path.getsize(path) > MAX_CONTENT_BYTES:
                    continue
                with open(path, encoding="utf-8") as handle:
                    lines = handle.read().splitlines()
            except (OSError, UnicodeDecodeError):
                continue
            for number, line in enumerate(lines, start=1):
                for kind, pattern in compiled:
                    if pattern.search(line):
                        hits.append({"path": path, "line": number, "kind": kind,
                                     "text": line.strip()[:160]})
                        break
    return hits


def main():
    request = REQUEST
    user = read_user(request["user"])

    def resolve(path):
        # "~/" means the home of the BestBox user on this host, not the home of
        # the user who runs the probe. Results stay keyed by the path as requested.
        if path.startswith("~/") and user:
            return os.path.join(user["home"], path[2:])
        return path

    snapshot = {
        "user": user,
        "groups": read_groups(request["groups"]),
        "used_gids": sorted({group.gr_gid for group in grp.getgrall()}),
        "files": {path: describe_path(resolve(path), True) for path in request["content_paths"]},
        "paths": {path: describe_path(resolve(path), False) for path in request["stat_paths"]},
        "udevadm_verify": run(["udevadm", "verify", "--help"])[0] == 0,
        "backups": read_backups(request["backup_root"]),
    }
    if request.get("preflight"):
        snapshot["gpu"] = read_gpu()
        snapshot["memory"] = read_memory()
        snapshot["disk"] = [free_bytes(path) for path in request["disk_paths"]]
        snapshot["port"] = read_port(request["port"])
    if request.get("model_dir"):
        snapshot["model"] = read_model(resolve(request["model_dir"]))
    if request.get("docker"):
        snapshot["docker"] = read_docker(request["container"], request["project_directory"],
                                         request["compose_file"], request["service"],
                                         request["images"])
    if request.get("audit"):
        audit = request["audit"]
        snapshot["audit"] = read_audit(audit["root"], audit["patterns"], set(audit["skip_dirs"]))
    print(json.dumps(snapshot))


main()

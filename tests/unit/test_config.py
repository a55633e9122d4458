"""Configuration validation: defaults pass, and each kind of mistake is named."""

import pytest

from bestbox.config import ConfigError, load_defaults, settings_from, validate


def test_defaults_are_valid():
    assert validate(load_defaults()) == []


@pytest.mark.parametrize("key, value, expected", [
    ("vllm_port", "8001", "vllm_port='8001': expected a TCP port"),
    ("vllm_port", 70000, "vllm_port=70000: expected a TCP port"),
    ("vllm_port", True, "got a boolean"),
    ("vllm_gpu_memory_utilization", 1.2, "a fraction above 0 and at most 0.95"),
    ("vllm_max_num_seqs", 0, "vllm_max_num_seqs=0"),
    ("vllm_dtype", "fp8", "one of auto, float16"),
    ("bestbox_path", "BestBox", "an absolute path"),
    ("vllm_modelscope_cache", "~/.cache/modelscope", "relative to the user's home"),
    ("vllm_api_key", "has space", "without spaces"),
    ("vllm_bind_address", "localhost", "an IPv4 or IPv6 address"),
    ("bestbox_archive_scripts", ["../etc/passwd"], "relative to bestbox_path"),
    ("vllm_network", "default", "other than default, bridge, host or none"),
    ("bestbox_udev_rule_path", "/etc/udev/rules.d/sub/70-x.rules", "directly in /etc/udev"),
])
def test_invalid_value_is_named(key, value, expected):
    data = load_defaults()
    data[key] = value
    problems = validate(data)
    assert len(problems) == 1
    assert expected in problems[0]


def test_unknown_key_suggests_the_known_one():
    data = load_defaults()
    data["vllm_max_model_lenght"] = 4096
    problems = validate(data)
    assert problems == [
        "vllm_max_model_lenght: unknown configuration key. Did you mean vllm_max_model_len? "
        "Known keys are listed in group_data/all.py."]


def test_foreign_keys_are_ignored():
    data = load_defaults()
    data.update(ssh_user="root", ssh_port=22, _sudo=True)
    assert validate(data) == []


def test_public_bind_requires_api_key():
    data = load_defaults()
    data["vllm_bind_address"] = "0.0.0.0"
    problems = validate(data)
    assert len(problems) == 1
    assert "vllm_api_key must be set" in problems[0]
    data["vllm_api_key"] = "secret-key"
    assert validate(data) == []


def test_unknown_skip_check_is_rejected():
    data = load_defaults()
    data["skip_checks"] = "gpu,memroy"
    problems = validate(data)
    assert len(problems) == 1
    assert "['memroy']" in problems[0]


def test_every_problem_is_reported_at_once():
    data = load_defaults()
    data.update(vllm_port=0, vllm_dtype="int3", vllm_typo=1)
    with pytest.raises(ConfigError) as raised:
        settings_from(data, "strix-01")
    message = str(raised.value)
    assert message.startswith("Invalid configuration for host strix-01:")
    assert "vllm_port=0" in message
    assert "vllm_dtype='int3'" in message
    assert "vllm_typo" in message

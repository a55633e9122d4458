"""The vLLM container's env file, .env.vllm."""

from __future__ import annotations


def test_env_file_has_mode_0640(env_file):
    # The file can hold VLLM_API_KEY, so other users must not read it.
    assert env_file.mode == 0o640


def test_env_file_is_owned_by_bestbox_user(env_file, bestbox_account):
    assert env_file.user == bestbox_account.name
    assert env_file.group == bestbox_account.primary_group


# Values that a failed assert must not print.
SECRET_KEYS = ("VLLM_API_KEY",)


def test_env_file_sets_configured_value(env_pairs, expected_env, env_key):
    actual = dict(env_pairs)
    assert env_key in actual, f"{env_key} is not set"
    if env_key in SECRET_KEYS:
        matches = actual[env_key] == expected_env[env_key]
        assert matches, f"{env_key} in the env file differs from the configured value"
    else:
        assert actual[env_key] == expected_env[env_key]


def test_env_file_sets_no_other_keys(env_pairs, expected_env):
    extra = sorted({key for key, _ in env_pairs} - set(expected_env))
    assert extra == []


def test_env_file_sets_each_key_once(env_pairs):
    keys = [key for key, _ in env_pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    assert repeated == []


def test_env_file_has_no_comment_after_value(env_pairs):
    # Compose v2 drops " # text" after an unquoted value but keeps "VALUE#text"
    # whole, and Compose v1 kept both, so a "#" in a value is ambiguous.
    commented = [key for key, value in env_pairs if "#" in value]
    assert commented == []

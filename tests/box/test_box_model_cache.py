"""The model cache directories under the BestBox user's home."""

from __future__ import annotations


def test_cache_directory_is_owned_by_bestbox_user(host, settings, bestbox_account,
                                                  cache_directory):
    directory = host.file(settings.home_path(bestbox_account.home, cache_directory))
    assert directory.is_directory, f"{directory.path} is missing"
    assert directory.user == bestbox_account.name
    assert directory.group == bestbox_account.primary_group
    assert directory.mode == 0o755

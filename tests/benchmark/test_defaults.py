"""The script's built-in defaults equal the deploy configuration.

The deploy copies scripts/benchmark_vllm.py to the host unchanged and runs it
without flags, so its constants must match group_data/all.py.
"""

import runpy

import pytest

from conftest import REPO_ROOT

GROUP_DATA = runpy.run_path(str(REPO_ROOT / "group_data" / "all.py"))


@pytest.mark.parametrize("constant, key", [
    ("DEFAULT_MODEL", "vllm_served_model_name"),
    ("DEFAULT_MAX_LATENCY_S", "vllm_benchmark_max_latency_s"),
    ("DEFAULT_MIN_SUCCESS_RATE", "vllm_benchmark_min_success_rate"),
    ("DEFAULT_MIN_TOTAL_TOKENS_PER_S", "vllm_benchmark_min_total_tokens_per_s"),
])
def test_default_matches_group_data(bench, constant, key):
    assert getattr(bench, constant) == GROUP_DATA[key]


def test_default_url_uses_vllm_port(bench):
    assert bench.DEFAULT_URL == f"http://localhost:{GROUP_DATA['vllm_port']}"


def test_parser_defaults_are_the_constants(bench):
    args = bench.build_parser().parse_args([])
    assert args.url == bench.DEFAULT_URL
    assert args.model == bench.DEFAULT_MODEL
    assert args.max_latency_s == bench.DEFAULT_MAX_LATENCY_S
    assert args.min_success_rate == bench.DEFAULT_MIN_SUCCESS_RATE
    assert args.min_total_tokens_per_s == bench.DEFAULT_MIN_TOTAL_TOKENS_PER_S
    assert (args.num_prompts, args.input_length, args.output_length, args.max_concurrent) == (8, 128, 128, 2)

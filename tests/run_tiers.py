"""Run the test suite tier by tier, cheapest first, and print how long each took.

    .venv/bin/python tests/run_tiers.py [TIER ...]

Exits non-zero when any tier fails; every tier runs even after a failure.
"""

import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]

TIERS = {
    "unit": ["tests/unit", "tests/benchmark", "-m", "not llama_server"],
    "llama-server": ["tests/benchmark", "-m", "llama_server"],
    "service": ["tests/service"],
    "hosts": ["tests/e2e"],
}


def main(selected: list[str]) -> int:
    results = []
    for name in selected or list(TIERS):
        started = time.monotonic()
        print(f"=== tier {name}: pytest {' '.join(TIERS[name])}", flush=True)
        code = subprocess.call(PYTEST + TIERS[name], cwd=REPO_ROOT)
        results.append((name, code, time.monotonic() - started))
    print("\nTier          Result   Seconds")
    for name, code, seconds in results:
        print(f"{name:<13} {'passed' if code == 0 else f'FAILED ({code})':<8} {seconds:8.1f}")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

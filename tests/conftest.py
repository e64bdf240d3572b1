"""Shared test setup: import path, the optional ../shared data folder, and the `slow` marker."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

requires_shared = pytest.mark.skipif(not os.path.isdir(SHARED), reason="../shared is not present")


def assert_one_line_error(args: list[str], message: str) -> None:
    """Run ``python args...`` from the repository root and check that it stops with exit 2 and a single
    stderr line holding ``message``: the contract for bad input."""
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and message in done.stderr, done.stderr

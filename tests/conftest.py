"""Shared test setup: import path, the optional ../shared data folder, and the `slow` marker."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

requires_shared = pytest.mark.skipif(not os.path.isdir(SHARED), reason="../shared is not present")

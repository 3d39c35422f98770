"""The environment the suite runs in is the lock (the README's and CI's install), or the
newest-versions job (.ci/newest, RLX_NEWEST=1) that looks for drift on purpose."""

from __future__ import annotations

import os

import pytest
from conftest import drift


@pytest.mark.skipif(os.environ.get("RLX_NEWEST") == "1", reason="the newest-versions job differs from the lock")
def test_installed_dependencies_are_the_lock():
    assert drift() == [], "install with `pip install -c constraints.txt ...` as the README says, or regenerate " \
                          "the lock after a green .ci/newest (python .ci/lock.py)"

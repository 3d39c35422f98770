"""Suite-wide: which installed dependencies differ from the lock (constraints.txt), shown in
the report's header and again beside any failure, so that a failure caused by a newer
dependency names it."""

from __future__ import annotations

import os
import re
from importlib import metadata
from pathlib import Path

import pytest

LOCK = Path(__file__).resolve().parent.parent / "constraints.txt"

# The runs of the suite write MLflow from a thread of their own process, not from the writer
# process rlx starts by default: that process is a second interpreter importing MLflow, ~2.5 s
# of CPU per run on CI's 2 cores (test_run_status + test_bad_input_runs: 82 -> 61 s). The tests
# of the writer itself (its signals, crashes, system metrics) are marked ``writer_process``.
os.environ.setdefault("RLX_TRACKING_WRITER", "thread")

# Under pytest -n N the workers share the cores: a run's torch threads (all cores by default)
# would be N times too many. Measured on 2 cores, -n 2, the headline run in both workers at
# once: 205 s each with 2 threads, 88 s with 1. Set before any test imports torch.
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _workers))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def drift() -> list[str]:
    """``name installed (lock X)`` for each locked package installed at another version."""
    if not LOCK.exists():
        return []
    installed = {_norm(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}
    out = []
    for line in LOCK.read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if not sep or name.startswith("#"):
            continue
        have = installed.get(_norm(name))
        if have is not None and have.split("+")[0] != version:
            out.append(f"{name} {have} (lock {version})")
    return out


def pytest_report_header(config) -> str:
    found = drift()
    return ("dependencies differ from constraints.txt: " + ", ".join(found)) if found else \
        "dependencies: as in constraints.txt"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    found = drift()  # also under -q, which hides the header
    if found:
        why = "; a failure may come from them" if exitstatus not in (0, 5) else ""
        terminalreporter.write_line("these dependencies differ from the tested lock (constraints.txt)" + why + ": "
                                    + ", ".join(found), yellow=True)


@pytest.fixture(scope="session")
def example_site(tmp_path_factory) -> Path:
    """examples/rlx-example-plugin installed once for the session into a private folder
    (see ``_cli.install_copy``)."""
    from _cli import install_copy

    root = Path(__file__).resolve().parent.parent
    return install_copy(root / "examples" / "rlx-example-plugin", tmp_path_factory.mktemp("example_plugin"))


@pytest.fixture(scope="module", autouse=True)
def _one_at_a_time(request, tmp_path_factory):
    """Modules marked ``one_at_a_time(name)`` hold a file lock shared by the pytest -n workers
    while they run: two Ray test modules at once, in two workers, would find each other's
    cluster (``address="auto"``). (``--dist loadscope`` keeps a module's tests on one worker;
    pytest-xdist's own ``xdist_group`` has no effect under pytest 9: it renames
    ``item._nodeid``, which pytest 9 no longer reads.)"""
    mark = request.node.get_closest_marker("one_at_a_time")
    if mark is None:
        yield
        return
    import fcntl

    # the workers' base folders (popen-gwN) share their parent; a run without -n has its own
    lock = tmp_path_factory.getbasetemp().parent / f"rlx-tests-{mark.args[0]}.lock"
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@pytest.fixture(autouse=True)
def _writer_process(request, monkeypatch) -> None:
    if request.node.get_closest_marker("writer_process"):
        monkeypatch.setenv("RLX_TRACKING_WRITER", "process")


@pytest.fixture(autouse=True)
def _store_template() -> None:
    """A new MLflow store's schema is copied (``_store_template.py``), once MLflow's store
    code is imported here: a test that does not use MLflow does not pay its import."""
    import sys

    if "mlflow.store.db.utils" in sys.modules:
        from _store_template import use

        use()


# Under `pytest -n 2 --dist loadscope --no-loadscope-reorder` a module's tests run on one
# worker and modules are handed out in collection order. Longest first, so that the run
# does not end with one worker idle while the other works through a long module (before:
# ~110 s of one idle worker at the end). Seconds per module, summed from `pytest -n 2
# --durations=0` on 2026-12-03 (2-core CI-like machine): only the order matters; a module
# not listed runs after these, in its usual order.
LONGEST_FIRST = (
    "test_sweep.py",  # 218 s
    "test_multiprocess.py",  # 215
    "test_benchmarks.py",  # 207
    "test_bench_dpo_vs_trl.py",  # 162
    "test_ray_launcher.py",  # 161
    "test_bench_grpo_scaling.py",  # 129
    "test_bench_grpo_vs_trl.py",  # 112
    "test_ui.py",  # 109
    "test_scaffold.py",  # 106
    "test_ppo.py",  # 104
    "test_signals.py",  # 99
    "test_mlflow_ui.py",  # 91
    "test_bench_overheads.py",  # 74
    "test_bad_input.py",  # 72
    "test_resume.py",  # 70
    "test_headline.py",  # 69
    "test_gpu_check.py",  # 64
    "test_docs_plugins.py",  # 63
    "test_sweep_ray.py",  # 59
    "test_dqn.py",  # 56
    "test_compare.py",  # 56
    "test_reward_models.py",  # 50
)

# Modules that one worker runs one after the other (one scope of loadscope's): both start
# Ray clusters, which must not overlap, and under the lock alone the second waited for the
# first (56 s of one idle worker in a CI run here).
SAME_WORKER = {"tests/test_ray_launcher.py": "ray", "tests/test_sweep_ray.py": "ray"}
_missing = [n for n in (*LONGEST_FIRST, *(Path(m).name for m in SAME_WORKER))
            if not (Path(__file__).parent / n).exists()]
if _missing:  # a renamed module would silently lose its place
    raise pytest.UsageError(f"tests/conftest.py names no such module: {', '.join(_missing)}")


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroups(LoadScopeScheduling):
        """loadscope (a module's tests on one worker), with SAME_WORKER's modules as one scope."""

        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return SAME_WORKER.get(module, module)

    return ModuleGroups(config, log)


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a module keeps its order


def pytest_sessionfinish(session, exitstatus) -> None:
    from _cli import close_zygote
    from _store_template import remove

    close_zygote()
    remove()

"""How a run's end is recorded, so that the catalog and MLflow never disagree.

The catalog knows five statuses, MLflow four. CRASHED (the process vanished: SIGKILL,
out of memory, power loss) is FAILED in MLflow with the tag ``rlx.status=CRASHED``.
Every run carries ``rlx.status`` (the catalog's word) and, once it ended without
finishing, ``rlx.error``: why, and how to continue it.
"""

from __future__ import annotations

from typing import Any

ENDED = ("FINISHED", "FAILED", "KILLED", "CRASHED")
RESUMABLE = ("FAILED", "KILLED", "CRASHED")
MLFLOW_STATUS = {"RUNNING": "RUNNING", "FINISHED": "FINISHED", "FAILED": "FAILED", "KILLED": "KILLED",
                 "CRASHED": "FAILED"}
CRASHED_ERROR = ("the process died without ending the run (killed, out of memory, or power loss); "
                 "`rlx runs resume` continues it")


def end_in_mlflow(client: Any, run_id: str, status: str, error: str = "", *, if_running: bool = False) -> None:
    """Tag the run with rlx's status and reason, then end it with MLflow's status. With
    ``if_running``, only a run MLflow still has RUNNING: one whose end was already recorded
    keeps it (for those who learn of a death second hand: the writer, reaping)."""
    from mlflow.entities import RunTag

    if if_running and client.get_run(run_id).info.status != "RUNNING":
        return
    tags = [RunTag("rlx.status", status)]
    if error:
        tags.append(RunTag("rlx.error", error[:5000]))
    client.log_batch(run_id, tags=tags, synchronous=True)
    client.set_terminated(run_id, status=MLFLOW_STATUS[status])


def end_crashed_in_catalog(rlx_run_id: str, pid: int) -> None:
    """CRASHED in the catalog, if process ``pid`` still owns the run there (a resume may
    already have taken it over)."""
    from rlx import home
    from rlx.registry.catalog import Catalog

    Catalog(home.catalog_url()).end_if_owned(rlx_run_id, pid, "CRASHED", CRASHED_ERROR)

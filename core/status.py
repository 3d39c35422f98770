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


NOTE_TAG = "mlflow.note.content"  # the run's Description in the MLflow UI (markdown)
NOTE_MARK = "<!-- rlx: how the run ended -->"  # a note rlx wrote, which it may replace; a user's own it keeps


def end_in_mlflow(client: Any, run_id: str, status: str, error: str = "", *, if_running: bool = False,
                  step: int | None = None) -> None:
    """Tag the run with rlx's status and reason, then end it with MLflow's status. A run
    that did not finish also gets a description (what the MLflow UI shows on its page):
    the reason, the last step (``step``, or the newest metric's), its newest checkpoint and
    the command that resumes it. With ``if_running``, only a run MLflow still has RUNNING:
    one whose end was already recorded keeps it (for those who learn of a death second
    hand: the writer, reaping)."""
    from mlflow.entities import RunTag

    run = client.get_run(run_id) if if_running or status in RESUMABLE else None
    if if_running and run.info.status != "RUNNING":
        return
    tags = [RunTag("rlx.status", status)]
    if error:
        tags.append(RunTag("rlx.error", error[:5000]))
    if run is not None and status in RESUMABLE and not _users_note(run.data.tags.get(NOTE_TAG, "")):
        tags.append(RunTag(NOTE_TAG, failure_note(run, status, error, step)))
    client.log_batch(run_id, tags=tags, synchronous=True)
    client.set_terminated(run_id, status=MLFLOW_STATUS[status])


def _users_note(note: str) -> bool:
    return bool(note.strip()) and not note.startswith(NOTE_MARK)


def clear_note(client: Any, run: Any) -> None:
    """Take back rlx's description of how a run ended (it is running again); a note the
    user wrote stays."""
    note = run.data.tags.get(NOTE_TAG, "")
    if note.startswith(NOTE_MARK):
        client.delete_tag(run.info.run_id, NOTE_TAG)


def failure_note(run: Any, status: str, error: str, step: int | None = None) -> str:
    """The markdown description of a run that did not finish."""
    from rlx import checkpoint, home

    tags = run.data.tags
    rlx_id = tags.get("rlx.run_id", "")
    if step is None:  # the newest step any metric reached
        steps = [m.step for m in getattr(run.data, "_metric_objs", [])]
        step = max(steps) if steps else None
    newest = checkpoint.latest(home.runs_dir() / rlx_id / "checkpoints") if rlx_id else None
    reason = error.split("; `rlx runs resume")[0].split("; it has no checkpoint")[0] or "no reason recorded"
    lines = [NOTE_MARK, f"**{status}**: {reason}", ""]
    if step is not None:
        lines.append(f"- last step logged: {step}")
    if newest is not None:
        lines.append(f"- newest checkpoint: step {int(newest.name[len(checkpoint.PREFIX):])}, `{newest}`")
        lines.append(f"- resume: `rlx runs resume {rlx_id}`")
    elif rlx_id:
        lines.append("- no checkpoint: start it again (`rlx runs show " + rlx_id + "` has its command)")
    return "\n".join(lines)


def end_crashed_in_catalog(rlx_run_id: str, pid: int) -> None:
    """CRASHED in the catalog, if process ``pid`` still owns the run there (a resume may
    already have taken it over)."""
    from rlx import home
    from rlx.registry.catalog import Catalog

    Catalog(home.catalog_url()).end_if_owned(rlx_run_id, pid, "CRASHED", CRASHED_ERROR)

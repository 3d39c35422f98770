"""The process that writes a run's metrics to MLflow, so the training process does not.

MLflow's SQL store spends 0.15-0.5 ms of Python per metric in ``log_batch``; from a thread
of the training process that is GIL time taken from training (about 7% of a CartPole PPO
run's step time, measured). This process takes JSON lines on stdin and answers on stdout:

    {"m": [[key, value, timestamp_ms, step], ...]}   log these
    {"flush": n}                                      answer {"ack": n} once all before it are stored
    {"close": 1}                                      store the rest, answer {"closed": error or null}, exit

and says {"ready": 1} once it can write. Run as ``python -m rlx.tracking_writer URI RUN_ID``,
or started early with the store's URI alone (``rlx.tracking.prewarm``): it then imports
MLflow and opens the store (~2 s of CPU) while the training process is still starting up,
not while it trains, and waits for ``{"open": [URI, RUN_ID]}`` (end of input: it exits).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def send_with_retry(client: Any, run_id: str, metrics: list[Any], max_batch: int) -> Exception | None:
    """``log_batch`` in chunks, backing off on a busy shared store; the last error, if any."""
    error = None
    for i in range(0, len(metrics), max_batch):
        for attempt in range(6):
            try:
                client.log_batch(run_id, metrics=metrics[i:i + max_batch])
                break
            except Exception as exc:  # SQLite "database is locked" under concurrent runs
                if attempt == 5:
                    error = exc
                else:
                    time.sleep(0.5 * 2**attempt)
    return error


def main(argv: list[str]) -> int:
    try:  # below the training process: its steps come first, the store can wait (a flush or
        os.nice(10)  # the run's end waits on this process, but training is idle then)
    except (AttributeError, OSError):
        pass
    from mlflow.entities import Metric

    from rlx.tracking import _MAX_BATCH, _client

    if len(argv) == 2:
        uri, run_id = argv
        client = _client(uri)
    else:  # prewarmed: the run is named once the training process has created it
        client, early = None, argv[0] if argv else None
        if early:
            try:
                from rlx.home import store_lock

                with store_lock(early):  # the training process may be creating the same store
                    client = _client(early)
                    client.search_experiments(max_results=1)  # opens it: engine, tables, schema check
            except Exception:
                client = None  # the training process reports what is wrong with the store
        line = sys.stdin.readline()
        if not line:
            return 0
        uri, run_id = json.loads(line)["open"]
        if client is None or uri != early:
            client = _client(uri)
    try:  # the run's first batch then finds the store open
        client.get_run(run_id)
    except Exception:
        pass  # log_batch reports what is wrong
    out = sys.stdout

    def say(msg: dict[str, Any]) -> None:
        out.write(json.dumps(msg) + "\n")
        out.flush()

    say({"ready": 1})
    error: Exception | None = None
    for line in sys.stdin:
        msg = json.loads(line)
        if "m" in msg:
            error = send_with_retry(client, run_id, [Metric(*m) for m in msg["m"]], _MAX_BATCH) or error
        if "flush" in msg:
            say({"ack": msg["flush"]})
        if "close" in msg:
            break
    say({"closed": f"{type(error).__name__}: {error}" if error else None})
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    # everything is stored and answered: skip the interpreter's teardown (MLflow's exit
    # handlers take ~1 s, which the training process would wait for at the end of a run)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

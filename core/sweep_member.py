"""What a run started by ``rlx sweep`` knows of its sweep.

The controller hands it down in environment variables (as it hands down ``RLX_RUN_ID``),
so that the run itself stays an ordinary ``rlx run`` whose logged config re-creates it
outside the sweep. The run puts it in its MLflow tags and catalog row:

- ``mlflow.parentRunId``: the sweep's parent MLflow run (the UI nests the run under it);
- ``rlx.sweep``: the sweep id (``rlx sweep resume ID``, ``rlx compare ID``);
- ``rlx.cell``: the cell's label (e.g. ``objective.loss_type=dapo``);
- ``rlx.cell_values``: the cell's settings as JSON (``{"objective.loss_type": "dapo"}``).

The seed is in ``rlx.seed`` like any run's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

_ID, _CELL, _VALUES, _PARENT = "RLX_SWEEP_ID", "RLX_SWEEP_CELL", "RLX_SWEEP_VALUES", "RLX_SWEEP_PARENT"


@dataclass
class SweepMember:
    sweep_id: str
    cell: str
    values: dict[str, Any] = field(default_factory=dict)
    parent_run_id: str = ""  # empty when tracking is off

    @classmethod
    def from_env(cls) -> "SweepMember | None":
        """The sweep this process's run belongs to; None outside a sweep."""
        sweep_id = os.environ.get(_ID, "")
        if not sweep_id:
            return None
        try:
            values = json.loads(os.environ.get(_VALUES) or "{}")
        except json.JSONDecodeError:
            values = {}
        return cls(sweep_id, os.environ.get(_CELL, ""), values if isinstance(values, dict) else {},
                   os.environ.get(_PARENT, ""))

    def to_env(self) -> dict[str, str]:
        return {_ID: self.sweep_id, _CELL: self.cell, _VALUES: json.dumps(self.values, sort_keys=True),
                _PARENT: self.parent_run_id}

    def tags(self) -> dict[str, str]:
        tags = {"rlx.sweep": self.sweep_id, "rlx.cell": self.cell,
                "rlx.cell_values": json.dumps(self.values, sort_keys=True)}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        return tags

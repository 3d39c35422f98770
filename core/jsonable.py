"""Values made safe for JSON: NaN and infinities have no JSON spelling (Python's ``NaN``
and ``Infinity`` break every other parser), so they are written as null."""

from __future__ import annotations

import math
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with NaN and infinite floats as None, tuples as lists, in dicts and lists too."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value

"""Records from local data files (JSONL, JSON, CSV, parquet) through the ``datasets``
library, with errors that name the file and line (row for parquet) of a bad record.
Shared by the data environments (``preferences``, ``prompts``)."""

from __future__ import annotations

import codecs
import random
from pathlib import Path
from typing import Any

from rlx.environment import rng_state, set_rng_state
from rlx.errors import UsageError

_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def load_records(path: str, required: dict[str, str], optional: dict[str, str] | None = None,
                 non_empty: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every record of ``path`` as ``{name: value}`` for the ``required`` (and present
    ``optional``) columns, given as ``{name: column}``; required values must be strings
    (non-empty for the names in ``non_empty``), optional ones may be anything but null."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"env.path '{path}' is not a file; give a .jsonl, .json, .csv or .parquet file")
    fmt = _FORMATS.get(file.suffix.lower())
    if fmt is None:
        raise UsageError(f"env.path '{path}': unknown format '{file.suffix}'; use .jsonl, .json, .csv or .parquet")
    _check_contents(file, path, text=fmt != "parquet")
    import datasets

    datasets.disable_progress_bars()
    try:
        rows = datasets.load_dataset(fmt, data_files=str(file), split="train")
    except Exception as exc:  # the library's own parse error, with its cause
        raise UsageError(f"env.path '{path}' could not be read as {fmt}: {_first_line(exc)}") from None
    missing = [c for c in required.values() if c not in rows.column_names]
    if missing:
        raise UsageError(f"{path}: no column {', '.join(map(repr, missing))} (columns: {', '.join(rows.column_names)}); "
                         "set the env's *_field settings")
    present = {n: c for n, c in (optional or {}).items() if c in rows.column_names}
    where = "line" if fmt in ("json", "csv") else "row"
    offset = 2 if fmt == "csv" else 1  # a CSV's first line is its header
    out = []
    for i, rec in enumerate(rows):
        for name, col in required.items():
            value = rec[col]
            if not isinstance(value, str) or (name in non_empty and not value):
                raise UsageError(f"{path}:{where} {i + offset}: field '{col}' is {value!r}, expected a "
                                 f"{'non-empty ' if name in non_empty else ''}string")
        for name, col in present.items():
            if rec[col] is None:
                raise UsageError(f"{path}:{where} {i + offset}: field '{col}' is empty")
        out.append({**{n: rec[c] for n, c in required.items()}, **{n: rec[c] for n, c in present.items()}, "id": i})
    if not out:
        raise UsageError(f"env.path '{path}' holds no records")
    return out


def _check_contents(file: Path, path: str, *, text: bool) -> None:
    """An empty file, or a text file that is not UTF-8, passes ``datasets.load_dataset``
    or fails it with an unrelated error (an IndexError; a UnicodeDecodeError only once
    the rows are read): both are told here, with the line of the first bad byte."""
    blank, line = True, 1
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                if not text:  # binary (parquet): only emptiness is checked
                    return
                held = len(decoder.getstate()[0])  # bytes of a character split across chunks
                try:
                    decoded = decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    where = max(exc.start - held, 0)
                    line += chunk[:where].count(b"\n")
                    raise UsageError(
                        f"env.path '{path}' is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} on line {line} "
                        "is not valid UTF-8; save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from None
                line += chunk.count(b"\n")
                blank = blank and not decoded.strip()
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:  # the file ends inside a multi-byte character
        raise UsageError(f"env.path '{path}' is not UTF-8 text: it ends in the middle of a character; "
                         "save the file as UTF-8") from None
    except OSError as exc:
        raise UsageError(f"env.path '{path}' cannot be read: {exc.strerror}") from None
    if blank:
        raise UsageError(f"env.path '{path}' is empty; put records in it (JSONL: one JSON object per line; "
                         "CSV: a header row, then one row per record) or point env.path at another file")


def _first_line(exc: BaseException) -> str:
    """The first line of an error's message, or of its cause's when it has none (the
    ``datasets`` builders re-raise a bare StopIteration for an empty split)."""
    seen: BaseException | None = exc
    while seen is not None:
        lines = [ln for ln in str(seen).splitlines() if ln.strip()]
        if lines:
            return lines[0]
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


class ShuffledPasses:
    """A file's training rows handed out in shuffled passes (each row once per pass),
    with the position in the pass part of the checkpointed state."""

    def __init__(self, rows: list[dict[str, Any]], key: str):
        self.rows = rows
        self._rng = random.Random(key)
        self._order: list[int] = []

    def take(self, n: int) -> list[dict[str, Any]]:
        out = []
        while len(out) < n:
            if not self._order:
                self._order = list(range(len(self.rows)))
                self._rng.shuffle(self._order)
            out.append(dict(self.rows[self._order.pop()]))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state(self._rng), "order": list(self._order)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_rng_state(self._rng, state["rng"])
        self._order = list(state.get("order", []))

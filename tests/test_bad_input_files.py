"""Data files of the ``prompts`` and ``preferences`` environments (``env.path``) that are
empty or not UTF-8: one UsageError naming the file and what is wrong, from the loader
both share (rlx.datafiles)."""

from __future__ import annotations

import pytest

from rlx.datafiles import load_records
from rlx.errors import UsageError

PROMPTS = ({"prompt": "prompt"}, {"answer": "answer"})
PAIRS = ({"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}, None)


@pytest.mark.parametrize("columns", [PROMPTS, PAIRS], ids=["prompts", "preferences"])
@pytest.mark.parametrize("name,content", [
    ("empty.jsonl", b""), ("blank.jsonl", b"\n  \n\n"), ("empty.json", b""), ("empty.csv", b""),
    ("empty.parquet", b""),
])
def test_empty_file(tmp_path, columns, name, content):
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(UsageError, match=rf"env.path '.*{name}' is empty; put records in it"):
        load_records(str(f), *columns)


@pytest.mark.parametrize("columns", [PROMPTS, PAIRS], ids=["prompts", "preferences"])
@pytest.mark.parametrize("name,content,line", [
    ("latin1.jsonl", '{"prompt": "1"}\n{"prompt": "café", "answer": "2"}\n'.encode("latin-1"), 2),
    ("latin1.csv", "prompt,answer\nok,1\nok,2\ncafé,3\n".encode("latin-1"), 4),
    ("utf16.jsonl", '{"prompt": "a"}\n'.encode("utf-16"), 1),
])
def test_not_utf8(tmp_path, columns, name, content, line):
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(UsageError, match=rf"env.path '.*{name}' is not UTF-8 text: byte 0x[0-9a-f]{{2}} on "
                                         rf"line {line} .*save the file as UTF-8"):
        load_records(str(f), *columns)


def test_cut_inside_a_character(tmp_path):
    f = tmp_path / "cut.jsonl"
    f.write_bytes('{"prompt": "a"}\n{"prompt": "é'.encode()[:-1])
    with pytest.raises(UsageError, match="not UTF-8 text: it ends in the middle of a character"):
        load_records(str(f), *PROMPTS)


def test_character_across_read_chunks_is_fine(tmp_path):
    """The file is checked in 1 MiB chunks: a character split between two is not an error."""
    f = tmp_path / "big.jsonl"
    head = '{"prompt": "' + "a" * ((1 << 20) - len('{"prompt": "') - 1)
    f.write_bytes((head + 'é", "answer": "1"}\n{"prompt": "b", "answer": "2"}\n').encode())
    rows = load_records(str(f), *PROMPTS)
    assert [r["answer"] for r in rows] == ["1", "2"] and rows[0]["prompt"].endswith("aé")


def test_utf8_file_loads(tmp_path):
    f = tmp_path / "ok.jsonl"
    f.write_text('{"prompt": "café 1+1", "answer": "2"}\n', encoding="utf-8")
    assert load_records(str(f), *PROMPTS) == [{"prompt": "café 1+1", "answer": "2", "id": 0}]

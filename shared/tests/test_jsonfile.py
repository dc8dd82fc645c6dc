"""lora_shared.jsonfile: every way a JSON data file can fail is one DataError naming file:line and the cause."""

import json
import re

import pytest
from lora_shared.errors import DataError
from lora_shared.jsonfile import JSONError, iter_jsonl, loads, read_json, read_text


def test_loads_turns_deep_nesting_into_a_json_error_with_its_line():
    text = '{"a": 1,\n "b": "[[[[",\n "c": ' + "[" * 100_000
    with pytest.raises(JSONError) as e:
        loads(text)
    assert e.value.lineno == 3  # the brackets inside the string on line 2 are not nesting
    assert str(e.value).startswith("nested 100001 levels deep, more than Python's JSON parser can read")


def test_loads_syntax_error_has_line_and_column():
    with pytest.raises(JSONError) as e:
        loads('{"a": 1,\n "b" 2}')
    assert e.value.lineno == 2 and str(e.value) == "Expecting ':' delimiter at column 6"
    assert loads("[" * 50 + "]" * 50) == json.loads("[" * 50 + "]" * 50)  # moderate nesting still parses


def test_read_json_names_file_and_line(tmp_path):
    p = tmp_path / "coco.json"
    p.write_text('{"images": [],\n "annotations": ' + "[" * 100_000, encoding="utf-8")
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(p))}:2: not valid JSON \(nested 100001 levels deep.*\); use COCO$"
    ):
        read_json(p, fix="use COCO")
    p.write_text('{"images": [\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{re.escape(str(p))}:2: not valid JSON \("):
        read_json(p)
    p.write_bytes(b'\xef\xbb\xbf{"ok": "\xe6\x95\xb0"}')  # a BOM is fine
    assert read_json(p) == {"ok": "数"}


def test_read_text_non_utf8_and_unreadable(tmp_path):
    p = tmp_path / "gbk.jsonl"
    p.write_bytes(b'{"a": 1}\n' + '{"a": "数据"}'.encode("gbk") + b"\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(p))}:2: not UTF-8"):
        read_text(p)
    with pytest.raises(DataError, match="cannot read"):
        read_text(tmp_path)  # a directory


def test_iter_jsonl_lines_blank_lines_and_line_separators(tmp_path):
    p = tmp_path / "d.jsonl"
    # U+2028 is legal inside a JSON string: it must not split the record.
    p.write_text('{"t": "a\u2028b"}\n\n[1]\r\n' + "[" * 5000 + "\n", encoding="utf-8")
    it = iter_jsonl(p, fix="one object per line")
    assert next(it) == (1, {"t": "a\u2028b"})
    assert next(it) == (3, [1])
    with pytest.raises(
        DataError,
        match=rf"^{re.escape(str(p))}:4: not valid JSON \(nested 5000 levels.*\); one object per line$",
    ):
        next(it)

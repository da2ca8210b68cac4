"""plug_lite.io readers: JSON vs JSON lines by content, CSV/TSV with or without a header, and
line breaks only on "\\n" (str.splitlines also breaks on U+2028, U+2029, U+0085 and others)."""

from __future__ import annotations

import json

import pytest

from plug_lite.io import JsonlAppender, UserError, read_jsonl_resumable, read_records, strip_where, write_jsonl

#: Every character str.splitlines() treats as a line boundary, besides "\n" and "\r\n".
SPLITLINES_CHARS = ["\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def test_the_list_is_what_splitlines_splits_on():
    assert all(len(("a" + c + "b").splitlines()) == 2 for c in SPLITLINES_CHARS)
    assert len("a\u2027b".splitlines()) == 1


def tricky_records() -> list[dict]:
    recs = [{"id": f"c{i}", "output": f"a{c}b", "nested": {"t": [f"x{c}"]}} for i, c in enumerate(SPLITLINES_CHARS)]
    recs.append({"id": "all", "output": "".join(SPLITLINES_CHARS) + "\n\r\nend\u2028"})
    return recs


@pytest.mark.parametrize("name", ["a.jsonl", "a.json", "a.txt"])
def test_jsonl_with_unicode_line_separators_round_trips(tmp_path, name):
    path = tmp_path / name
    write_jsonl(path, tricky_records())
    raw = path.read_bytes()
    assert "\u2028".encode() in raw and "\x85".encode() in raw  # written raw (ensure_ascii=False)
    got = [strip_where(r) for r in read_records(path)]
    assert got == tricky_records()
    assert [r["_where"] for r in read_records(path)][-1] == f"{path}:{len(tricky_records())}"


def test_append_only_files_round_trip_them_too(tmp_path):
    path = tmp_path / "cache.jsonl"
    with JsonlAppender(path) as app:
        for r in tricky_records():
            app.write(r)
    with open(path, "ab") as f:  # a torn last line is still dropped
        f.write('{"id": "torn\u2028'.encode())
    assert read_jsonl_resumable(path) == tricky_records()
    assert path.read_bytes().endswith(b"\n")


def test_json_or_jsonl_is_decided_by_content(tmp_path):
    recs = [{"id": 1, "t": "x"}, {"id": 2, "t": "y"}]
    lines = "".join(json.dumps(r) + "\n" for r in recs)
    for name, text in [("lines.json", lines), ("array.jsonl", json.dumps(recs, indent=2)),
                       ("wrapped.json", json.dumps({"data": recs})), ("one.jsonl", json.dumps(recs[0], indent=1)),
                       ("noext", lines)]:
        p = tmp_path / name
        p.write_text(text, encoding="utf-8")
        got = [strip_where(r) for r in read_records(p)]
        assert got == (recs[:1] if name == "one.jsonl" else recs), name
    broken_array = tmp_path / "b.json"
    broken_array.write_text('[\n {"id": 1},\n {"id": 2,,}\n]\n')
    with pytest.raises(UserError, match=r"b.json:3: bad JSON \("):
        read_records(broken_array)
    broken_line = tmp_path / "c.json"
    broken_line.write_text('{"id": 1}\n{"id": 2}\n{"id": \n')
    with pytest.raises(UserError, match=r"c.json:3: bad JSON line"):
        read_records(broken_line)
    broken_object = tmp_path / "d.jsonl"
    broken_object.write_text('{\n  "id": 1,\n  "t": \n}\n')
    with pytest.raises(UserError, match=r"d.jsonl:4: bad JSON \("):
        read_records(broken_object)


def test_csv_and_tsv_tables(tmp_path):
    csv_path = tmp_path / "t.csv"
    csv_path.write_text('id,text\n1,"two\nlines, and a comma"\n\n2,"u\u2028v"\n', encoding="utf-8")
    recs = read_records(csv_path)
    assert [(r["id"], r["text"], r["_where"]) for r in recs] == [
        ("1", "two\nlines, and a comma", f"{csv_path}:2"), ("2", "u\u2028v", f"{csv_path}:5")]
    tsv = tmp_path / "t.tsv"
    tsv.write_text("what is 2+2?\t4\nand 3+3?\t6\n", encoding="utf-8")
    # without header_names the first row is the header, as before
    assert read_records(tsv)[0] == {"what is 2+2?": "and 3+3?", "4": "6", "_where": f"{tsv}:2"}
    rows = read_records(tsv, header_names=("question", "answer"), columns=("question", "answer"))
    assert [strip_where(r) for r in rows] == [{"question": "what is 2+2?", "answer": "4"},
                                              {"question": "and 3+3?", "answer": "6"}]
    headed = tmp_path / "h.tsv"
    headed.write_text("Question\tAnswer\nq\t1\n", encoding="utf-8")
    assert strip_where(read_records(headed, header_names=("question",), columns=("x", "y"))[0]) == {"Question": "q", "Answer": "1"}
    dup = tmp_path / "dup.csv"
    dup.write_text("a,a\n1,2\n")
    with pytest.raises(UserError, match=r"dup.csv:1: the header row has an empty or repeated column name"):
        read_records(dup)


def test_file_identity_tells_models_apart_not_names_or_dates(tmp_path):
    import os
    import random

    from plug_lite.io import file_identity

    a, b, copy = tmp_path / "a.gguf", tmp_path / "b.gguf", tmp_path / "sub" / "a.gguf"
    a.write_bytes(random.Random(0).randbytes(3 << 20))
    b.write_bytes(random.Random(1).randbytes(3 << 20))  # same size, other weights everywhere
    copy.parent.mkdir()
    copy.write_bytes(a.read_bytes())
    os.utime(copy, (1, 1))
    assert file_identity(a) == file_identity(copy) != file_identity(b)
    small = tmp_path / "s.json"
    small.write_text("{}")
    assert file_identity(small) != file_identity(a) and file_identity(a, small) != file_identity(small, a)
    with pytest.raises(FileNotFoundError):
        file_identity(tmp_path / "missing")


def test_staging_folders_a_killed_process_left_are_removed_and_only_those(tmp_path):
    import os
    import subprocess
    import sys

    from plug_lite.io import remove_stale_staging, staging_folder

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    old = 1_000_000  # long before this process started
    made = {
        f".export.{dead_pid}.abc123.tmp": True,  # ours, its process gone: removed
        f".export.{os.getppid()}.abc123.tmp": False,  # ours, its process alive
        ".export.k2j_x9.tmp": True,  # the name before it held the pid, a day old
        ".export.notes": False,  # not a staging name
        f".merged.{dead_pid}.abc.tmp": False,  # another stage's
        f"export.{dead_pid}.abc.tmp": False,  # not hidden
    }
    for name in made:
        (tmp_path / name).mkdir()
        (tmp_path / name / "part.gguf").write_bytes(b"x")
        os.utime(tmp_path / name, (old, old))
    fresh = tmp_path / f".export.{dead_pid}.fresh.tmp"  # a dead pid, but changed after this process started
    fresh.mkdir()
    removed = remove_stale_staging(tmp_path, "export")
    assert sorted(p.name for p in removed) == sorted(n for n, gone in made.items() if gone)
    assert fresh.is_dir() and all((tmp_path / n).is_dir() != gone for n, gone in made.items())
    mask = os.umask(0o027)
    try:
        stage = staging_folder(tmp_path / "out", "export")
    finally:
        os.umask(mask)
    assert stage.name.startswith(f".export.{os.getpid()}.") and stage.stat().st_mode & 0o777 == 0o750

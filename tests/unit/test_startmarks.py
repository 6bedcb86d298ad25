"""Start marks: appended per attempt, read back after a crash, compacted to the live ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hookrunner import startmarks
from hookrunner.startmarks import StartMarks, marks_path, read_marks


def test_one_file_per_node_with_a_safe_name(tmp_path: Path) -> None:
    assert marks_path(tmp_path, "web-1.example") == tmp_path / "started-web-1.example.marks"
    assert marks_path(tmp_path, "../x y") == tmp_path / "started-.._x_y.marks"


def test_marks_survive_into_the_next_process_until_it_opens_afresh(tmp_path: Path) -> None:
    path = tmp_path / "data" / "started-n1.marks"
    first = StartMarks(path)
    assert first.recorded == set()
    first.open()
    first.mark("run_a", 1)
    first.mark("run_b", 2)
    first.done("run_a", 1)  # its end line: its processes are not the next start's to stop
    # The process dies here (no close): the next one reads what was recorded.
    second = StartMarks(path)
    assert second.recorded == {("run_a", 1), ("run_b", 2)}
    assert second.unended == {("run_b", 2)}
    second.open()
    assert path.read_text() == ""
    assert second.recorded == {("run_a", 1), ("run_b", 2)}  # kept for the recovery in progress
    second.close()
    first.close()


def test_a_torn_or_foreign_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "m"
    path.write_text("run_a 1\nrun_b 2\nrun_c\n\ngarbage x\nrun_e 1 over\nrun_a 1 en\n"
                    "run_d 1")  # run_d: no newline yet
    assert read_marks(path) == {("run_a", 1), ("run_b", 2)}
    assert startmarks.read_all(path)[1] == {("run_a", 1), ("run_b", 2)}
    assert read_marks(tmp_path / "missing") == set()


def test_an_end_counts_for_the_start_before_it_not_one_after(tmp_path: Path) -> None:
    """An attempt whose process could not start is queued again under the same number: its
    second start, after the first one's end, is running."""
    path = tmp_path / "m"
    path.write_text("run_a 1\nrun_a 1 end\nrun_a 1\nrun_b 1\nrun_b 1 end\nrun_c 2 end\n")
    started, unended = startmarks.read_all(path)
    assert started == {("run_a", 1), ("run_b", 1)}
    assert unended == {("run_a", 1)}


def test_an_attempt_started_twice_stays_open_until_both_ends(tmp_path: Path) -> None:
    """review: a not-started attempt queued again under its number may start again before
    the first try's end line is written: that end must not close the second start."""
    path = tmp_path / "m"
    marks = StartMarks(path)
    marks.open()
    marks.mark("run_a", 1)
    marks.mark("run_a", 1)
    marks.done("run_a", 1)
    marks.done("run_b", 1)  # never started here: no end line
    assert startmarks.read_all(path) == ({("run_a", 1)}, {("run_a", 1)})
    assert "run_b" not in path.read_text()
    marks._rewrite()  # compacted: the open start kept
    assert startmarks.read_all(path) == ({("run_a", 1)}, {("run_a", 1)})
    marks.done("run_a", 1)
    assert startmarks.read_all(path) == ({("run_a", 1)}, set())
    marks.close()


def test_an_end_cut_short_by_a_full_disk_leaves_no_part_of_it(tmp_path: Path) -> None:
    code = f"""
import resource
from pathlib import Path
from hookrunner.startmarks import StartMarks, read_all
path = Path({str(tmp_path / "m.marks")!r})
marks = StartMarks(path)
marks.open()
marks.mark("run_a", 1)
size = path.stat().st_size
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 5, hard))  # a part of the end line
marks.done("run_a", 1)  # best effort: no error, and no part of a line
assert path.stat().st_size == size, path.read_bytes()
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
marks.mark("run_b", 1)
assert read_all(path) == ({{("run_a", 1), ("run_b", 1)}}, {{("run_a", 1), ("run_b", 1)}})
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_file_is_compacted_to_the_attempts_still_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(startmarks, "COMPACT_AT", 200)
    path = tmp_path / "m"
    marks = StartMarks(path)
    marks.open()
    for n in range(50):
        marks.mark(f"run_{n:03}", 1)
        if n != 7:
            marks.done(f"run_{n:03}", 1)
    assert path.stat().st_size <= 200 + len("run_000 1\n")
    assert ("run_007", 1) in read_marks(path)
    assert ("run_049", 1) in read_marks(path)  # the last one, marked after the rewrite
    assert len(read_marks(path)) < 50
    marks.close()


def test_a_mark_cut_short_by_a_full_disk_leaves_no_part_of_it(tmp_path: Path) -> None:
    """A full disk writes part of a line, then refuses: the part stayed, and the next write
    (the probe's newline) completed it into an attempt that never started. In a process of
    its own whose file size limit (RLIMIT_FSIZE: a partial write, then EFBIG) plays the disk."""
    code = f"""
import resource, sys
import subprocess
import sys
from pathlib import Path
from hookrunner.startmarks import StartMarks, read_marks
path = Path({str(tmp_path / "m.marks")!r})
marks = StartMarks(path)
marks.open()
marks.mark("run_a", 1)
size = path.stat().st_size
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 14, hard))  # all but its newline
try:
    marks.mark("run_bbbbbbbb", 3)
except OSError:
    pass
else:
    sys.exit("no error")
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
marks.probe()
print(sorted(read_marks(path)))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[('run_a', 1)]"

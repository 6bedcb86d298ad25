"""Results kept by a stop for the next start (pendingresults): what is written is read back
whole, and a line a crash cut short is skipped, not taken for a result."""

from __future__ import annotations

from pathlib import Path

import pytest

from hookrunner import pendingresults
from hookrunner.store.base import Finish


def _finish(run_id: str, attempt: int, outcome: str = "succeeded") -> Finish:
    return Finish(run_id=run_id, node="n1", outcome=outcome, exit_code=0, reason="",
                  outputs={"a": [1, "x"]}, finished_at=1.5, retry_at=None, log="out\n",
                  attempt=attempt)


def test_kept_results_are_read_back_by_run_and_attempt(tmp_path: Path) -> None:
    path = pendingresults.pending_path(tmp_path, "node/../1")
    assert path.parent == tmp_path and path.name == "results-node_.._1.pending"
    pendingresults.keep(path, [_finish("run_a", 1)])
    pendingresults.keep(path, [_finish("run_b", 2, "failed"), _finish("run_a", 1, "canceled")])
    pendingresults.keep(path, [])
    kept = pendingresults.read(path)
    assert set(kept) == {("run_a", 1), ("run_b", 2)}
    assert kept[("run_a", 1)].finish.outcome == "canceled"  # the later line of the same attempt
    assert kept[("run_b", 2)] == (_finish("run_b", 2, "failed"), True)
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_line_cut_short_or_foreign_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "results-n1.pending"
    assert pendingresults.read(path) == {}
    pendingresults.keep(path, [_finish("run_a", 1)])
    with path.open("a") as f:
        f.write('{"run_id": "run_x", "attempt": 1, "unknown": 2}\n')  # not a Finish
        f.write('[1, 2]\n{"run_id": "run_y", "attempt": "1"}\n')  # wrong shapes
        f.write('{"run_id": "run_z", "node": "n1", "outcome": "succ')  # no newline: cut
    assert set(pendingresults.read(path)) == {("run_a", 1)}


def test_a_result_kept_before_its_line_was_given_is_read_back_as_not_said(tmp_path: Path) -> None:
    """A stop while the store held back the reads that decide a retry kept the result before
    its run.finished line and metrics: the next start gives them (only for those)."""
    path = tmp_path / "results-n1.pending"
    pendingresults.keep(path, [_finish("run_a", 1), _finish("run_b", 1, "failed")],
                        unsaid=["run_b"])
    kept = pendingresults.read(path)
    assert kept[("run_a", 1)] == (_finish("run_a", 1), True)
    assert kept[("run_b", 1)] == (_finish("run_b", 1, "failed"), False)
    assert '"said"' not in path.read_text().splitlines()[0]  # (as an older version wrote it)


def test_a_data_dir_deleted_is_not_made_again_for_a_kept_result(tmp_path: Path) -> None:
    """A stop after `rm -rf` of the data dir made it again holding only this file: the next
    start took the dir for new and dropped the result, saying nothing (the stop's hint had
    said it would be recorded)."""
    path = pendingresults.pending_path(tmp_path / "gone", "n1")
    with pytest.raises(FileNotFoundError):  # said by the caller: run.result_not_kept
        pendingresults.keep(path, [_finish("run_a", 1)])
    assert not (tmp_path / "gone").exists()
    # On PostgreSQL the store still has the runs: the dir is made again for the next start.
    pendingresults.keep(path, [_finish("run_a", 1)], make_dir=True)
    assert set(pendingresults.read(path)) == {("run_a", 1)}
    assert (tmp_path / "gone").stat().st_mode & 0o777 == 0o700

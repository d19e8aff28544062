"""The history checker on histories known to be right and known to be
wrong: a key by key linearizability search, and the stale, lost and
unwritten reads it names."""

from __future__ import annotations

from pathlib import Path

from selectorkv.lab.studies.checker import check, linearizable
from selectorkv.lab.studies.history import FAIL, OK, READ, UNKNOWN, WRITE, History, Op


def w(value: str | None, start: float, end: float, outcome: str = OK, key: str = "k") -> Op:
    return Op(0, WRITE, key, value, start, end, outcome)


def r(value: str | None, start: float, end: float, outcome: str = OK, key: str = "k") -> Op:
    return Op(1, READ, key, value, start, end, outcome)


def test_sequential_reads_of_the_last_write_are_linearizable() -> None:
    assert linearizable([w("a", 0, 1), r("a", 2, 3), w("b", 4, 5), r("b", 6, 7)])
    assert linearizable([r(None, 0, 1), w("a", 2, 3), w(None, 4, 5), r(None, 6, 7)])


def test_a_read_may_see_either_of_two_concurrent_writes() -> None:
    assert linearizable([w("a", 0, 5), w("b", 1, 6), r("a", 7, 8)])
    assert linearizable([w("a", 0, 5), w("b", 1, 6), r("b", 7, 8)])
    # ... but reads after both cannot disagree and then go back
    assert not linearizable(
        [w("a", 0, 5), w("b", 1, 6), r("a", 7, 8), r("b", 9, 10), r("a", 11, 12)]
    )


def test_a_read_of_an_overwritten_value_is_not_linearizable() -> None:
    assert not linearizable([w("a", 0, 1), w("b", 2, 3), r("a", 4, 5)])


def test_a_read_during_a_write_sees_old_or_new_but_not_new_then_old() -> None:
    assert linearizable([w("a", 0, 1), w("b", 2, 10), r("a", 3, 4), r("b", 5, 6)])
    assert not linearizable([w("a", 0, 1), w("b", 2, 10), r("b", 3, 4), r("a", 5, 6)])


def test_an_unknown_write_may_take_effect_late_or_never() -> None:
    assert linearizable([w("a", 0, 1), w("u", 2, 3, UNKNOWN), r("a", 4, 5), r("u", 6, 7)])
    assert linearizable([w("a", 0, 1), w("u", 2, 3, UNKNOWN), r("a", 4, 5)])
    # once seen, it stays
    assert not linearizable([w("a", 0, 1), w("u", 2, 3, UNKNOWN), r("u", 4, 5), r("a", 6, 7)])


def test_the_verdict_names_stale_lost_and_unwritten_reads(tmp_path: Path) -> None:
    history = History.of(
        [
            w("a", 0, 1), w("b", 2, 3), r("a", 4, 5),  # stale: b was acknowledged
            w("x", 0, 1, key="j"), w("y", 2, 3, key="j"), r("x", 20, 21, key="j"),  # lost
            r("never", 4, 5, key="i"),  # nobody wrote it
            w("f", 0, 1, FAIL, key="h"), r(None, 2, 3, key="h"),  # a failed write: no effect
            r("z", 0, 1, FAIL, key="h"),  # a failed read: ignored
        ]
    )  # fmt: skip
    history.save(tmp_path / "history.jsonl")
    verdict = check(History.load(tmp_path / "history.jsonl"), final_after=10)
    assert not verdict.ok
    assert [op.key for op in verdict.stale] == ["k"]
    assert [op.key for op in verdict.lost] == ["j"]
    assert [op.value for op in verdict.unwritten] == ["never"]
    assert verdict.not_linearizable == ["i", "j", "k"]
    assert verdict.keys == 4


def test_a_good_history_passes_every_check() -> None:
    history = History.of(
        [w("a", 0, 1), w("b", 0.5, 2), r("b", 3, 4), w(None, 5, 6), r(None, 7, 8),
         w("u", 9, 10, UNKNOWN), r("u", 11, 12), r("u", 30, 31)]
    )  # fmt: skip
    verdict = check(history, final_after=20)
    assert verdict.ok, verdict


def test_many_concurrent_writes_are_searched_quickly() -> None:
    ops = [w(f"v{i}", i * 0.01, 5 + i * 0.01) for i in range(14)]
    ops.append(r("v3", 6, 7))
    ops += [r("v3", 8 + i, 8.5 + i) for i in range(10)]
    assert linearizable(ops)
    ops.append(r("v5", 30, 31))
    assert not linearizable(ops)

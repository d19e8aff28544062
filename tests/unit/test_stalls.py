"""The stall record (reactor/stalls.py) on its own: garbage collections
seen through ``gc.callbacks``, rounds kept only from their threshold, the
bound, and a record that stops when uninstalled."""

from __future__ import annotations

import gc
import json
import time

from selectorkv.reactor.stalls import StallRecorder


def test_a_collection_is_recorded_with_its_generation_on_the_monotonic_clock() -> None:
    recorder = StallRecorder()
    recorder.install()
    try:
        before = time.monotonic()
        gc.collect()
        after = time.monotonic()
    finally:
        recorder.uninstall()
    collections = [event for event in recorder.since(before) if event.kind == "gc"]
    assert any(event.detail == "2" for event in collections)
    assert all(before <= event.start <= after and event.seconds >= 0 for event in collections)
    count = len(recorder.since(0))
    gc.collect()
    assert len(recorder.since(0)) == count  # uninstalled: nothing more


def test_only_rounds_from_the_threshold_on_are_events() -> None:
    recorder = StallRecorder(round_threshold=0.01)
    recorder.round(time.monotonic(), "SelectorThread-1")  # just ended: short
    recorder.round(time.monotonic() - 0.05, "SelectorThread-1")
    events = recorder.since(0)
    assert [(event.kind, event.detail) for event in events] == [("round", "SelectorThread-1")]
    assert events[0].seconds >= 0.05
    page = json.loads(recorder.as_json(events[0].start))
    assert page["clock"] == "monotonic" and len(page["events"]) == 1
    assert json.loads(recorder.as_json(events[0].start + 1))["events"] == []


def test_the_record_keeps_the_newest_events_within_its_capacity() -> None:
    recorder = StallRecorder(capacity=3)
    for start in range(5):
        recorder.record("round", float(start), 0.01, "t")
    assert [event.start for event in recorder.since(0)] == [2.0, 3.0, 4.0]

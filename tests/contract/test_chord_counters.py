"""The ``ChordCounters`` role (djtasks/brokers/base.py), run against every broker."""

from __future__ import annotations

import threading

from django.db import connections


def test_a_chord_is_complete_once_every_member_is_recorded(broker):
    assert [broker.chord_members_done("c1", [f"m{i}"], 3, 60) for i in range(3)] == [
        False, False, True]


def test_a_member_recorded_twice_is_counted_once(broker):
    assert not broker.chord_members_done("c1", ["m0"], 2, 60)
    assert not broker.chord_members_done("c1", ["m0"], 2, 60)  # a rerun of m0
    assert broker.chord_members_done("c1", ["m1"], 2, 60)


def test_a_rerun_of_the_last_member_still_sees_the_chord_complete(broker):
    broker.chord_members_done("c1", ["m0"], 2, 60)
    assert broker.chord_members_done("c1", ["m1"], 2, 60)
    assert broker.chord_members_done("c1", ["m1"], 2, 60)


def test_chords_are_counted_apart(broker):
    broker.chord_members_done("c1", ["m0"], 2, 60)
    assert not broker.chord_members_done("c2", ["m1"], 2, 60)


def test_a_forgotten_chord_starts_again_from_nothing(broker):
    broker.chord_members_done("c1", ["m0"], 2, 60)
    broker.forget_chord("c1")
    assert not broker.chord_members_done("c1", ["m1"], 2, 60)


def test_every_broker_object_of_one_store_counts_the_same_chord(broker, same_store):
    broker.chord_members_done("c1", ["m0"], 2, 60)
    assert same_store().chord_members_done("c1", ["m1"], 2, 60)


def test_members_finishing_at_once_complete_the_chord_exactly_once(broker, same_store):
    size = 40
    seen: list[bool] = []
    lock = threading.Lock()

    def member(i: int) -> None:
        try:
            done = same_store().chord_members_done("c1", [f"m{i}"], size, 60)
            with lock:
                seen.append(done)
        finally:
            connections.close_all()  # this thread's own database connections

    threads = [threading.Thread(target=member, args=(i,)) for i in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == size
    assert seen.count(True) == 1


def test_members_recorded_together_are_each_counted_once(broker):
    assert not broker.chord_members_done("c1", ["m0", "m1", "m1"], 3, 60)
    assert broker.chord_members_done("c1", ["m1", "m2"], 3, 60)

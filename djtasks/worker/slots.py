"""What the supervisor sees of each executor: running or not, the hard
time-limit deadline, tasks done. The prefork pool keeps it in shared memory."""

from __future__ import annotations

import mmap
import struct


class SlotState:
    """What the supervisor sees of one executor: whether a task runs, its
    hard time-limit deadline (a timestamp, 0 for none) and tasks done.

    The prefork pool backs this with shared memory (``SharedSlots``).
    """

    def __init__(self) -> None:
        self.running = False
        self.deadline = 0.0
        self.tasks_done = 0


class SharedSlots:
    """Per-slot ``SlotState`` in anonymous shared memory, written by the
    prefork children and read by the supervisor (3 doubles a slot)."""

    _FMT = "ddd"
    _SIZE = struct.calcsize(_FMT)

    def __init__(self, count: int) -> None:
        self._mem = mmap.mmap(-1, self._SIZE * count)
        self.count = count

    def slot(self, index: int) -> SlotState:
        return _SharedSlot(self, index)

    def read(self, index: int) -> tuple[bool, float, int]:
        running, deadline, done = struct.unpack_from(self._FMT, self._mem, index * self._SIZE)
        return bool(running), deadline, int(done)

    def write(self, index: int, running: bool, deadline: float, done: int) -> None:
        struct.pack_into(self._FMT, self._mem, index * self._SIZE, float(running), deadline,
                         float(done))


class _SharedSlot(SlotState):
    def __init__(self, shared: SharedSlots, index: int) -> None:
        self._shared, self._index = shared, index

    def _get(self, i: int) -> float:
        return self._shared.read(self._index)[i]

    def _set(self, i: int, value: float) -> None:
        values: list[float] = list(self._shared.read(self._index))
        values[i] = value
        self._shared.write(self._index, bool(values[0]), values[1], int(values[2]))

    running = property(lambda s: bool(s._get(0)), lambda s, v: s._set(0, v))
    deadline = property(lambda s: s._get(1), lambda s, v: s._set(1, v))
    tasks_done = property(lambda s: int(s._get(2)), lambda s, v: s._set(2, v))

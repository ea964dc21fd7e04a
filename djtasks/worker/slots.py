"""What the supervisor sees of each executor: the task it runs (id and hard
time-limit deadline) and tasks done. The prefork pool keeps it in shared
memory, one seqlock-guarded record per slot."""

from __future__ import annotations

import mmap
import struct
from typing import NamedTuple

MAX_ID = 255  # bytes of a task id (printable ASCII, as the broker's frame allows)


class SlotView(NamedTuple):
    """One consistent reading of a slot."""

    running: bool
    deadline: float  # timestamp of the running task's hard time limit, 0.0 for none
    task_id: str  # the running task's id, "" when none runs
    done: int  # tasks finished in this slot, across replacements of its executor
    seq: int  # even; changes with every write, so an equal view is the same run


IDLE = SlotView(running=False, deadline=0.0, task_id="", done=0, seq=0)


class SlotState:
    """One executor's slot, in this process (threads and solo pools).

    The executor calls ``start()`` and ``end()``; each replaces the whole
    view in one assignment, so a reader on another thread sees one state or
    the next, never half of each.
    """

    def __init__(self) -> None:
        self._view = IDLE

    def read(self) -> SlotView:
        return self._view

    def start(self, task_id: str, deadline: float) -> None:
        """A task starts; ``deadline`` is its hard limit (timestamp, 0 for none)."""
        v = self._view
        self._view = SlotView(True, deadline, task_id, v.done, v.seq + 2)

    def end(self) -> None:
        """The running task ended (however it ended)."""
        v = self._view
        self._view = SlotView(False, 0.0, "", v.done + 1, v.seq + 2)


class SharedSlots:
    """``count`` slots in anonymous shared memory, written by the prefork
    children (one writer per slot) and read by the supervisor.

    Each slot is a seqlock: the writer makes the sequence odd, writes the
    record, and makes it even again; a reader retries while it is odd or
    changed under it. A child killed mid-write leaves it odd, which
    ``reset()`` repairs before the slot's next child starts. (Python has no
    memory fences: on a CPU that reorders stores, such as ARM, a torn read
    stays possible if unlikely; the prefork pool reads a slot twice, and
    wants the same view, before it kills.)
    """

    _RECORD = struct.Struct(f"=Qd?B{MAX_ID}s")  # done, deadline, running, id length, id
    _SIZE = 64 * -(-(8 + _RECORD.size) // 64)  # whole cache lines: seq, then the record
    READ_TRIES = 1000

    def __init__(self, count: int) -> None:
        self._mem = mmap.mmap(-1, self._SIZE * count)
        # The sequence numbers as one aligned 8-byte load or store each:
        # struct.pack_into would zero the field before writing it.
        self._seq = memoryview(self._mem).cast("Q")
        self.count = count

    def slot(self, index: int) -> SlotState:
        """The writer's side of slot ``index`` (for the child's executor)."""
        return _SharedSlot(self, index)

    def read(self, index: int) -> SlotView | None:
        """Slot ``index`` as one consistent view; ``None`` if its writer kept
        it busy through every try (or died writing it)."""
        at, seq_at = index * self._SIZE, index * self._SIZE // 8
        for _ in range(self.READ_TRIES):
            seq = self._seq[seq_at]
            if seq & 1:
                continue
            done, deadline, running, length, raw = self._RECORD.unpack_from(self._mem, at + 8)
            if self._seq[seq_at] == seq:
                task_id = raw[:length].decode("ascii", "replace")
                return SlotView(running, deadline, task_id, done, seq)
        return None

    def write(self, index: int, running: bool, deadline: float, task_id: str,
              done: int) -> None:
        """Replace slot ``index`` in one seqlock write (by its one writer)."""
        at, seq_at = index * self._SIZE, index * self._SIZE // 8
        seq = self._seq[seq_at] | 1
        raw = task_id.encode("ascii", "replace")[:MAX_ID]
        self._seq[seq_at] = seq
        self._RECORD.pack_into(self._mem, at + 8, done, deadline, running, len(raw), raw)
        self._seq[seq_at] = seq + 1

    def reset(self, index: int) -> None:
        """Mark slot ``index`` idle, keeping its count (no child writes it now)."""
        self.write(index, False, 0.0, "", self._done(index))

    def _done(self, index: int) -> int:
        # No seqlock: only the slot's one writer (or reset(), when none) asks.
        return int(self._RECORD.unpack_from(self._mem, index * self._SIZE + 8)[0])


class _SharedSlot(SlotState):
    def __init__(self, shared: SharedSlots, index: int) -> None:
        self._shared, self._index = shared, index
        # This is the slot's one writer from now on (reset() ran before its
        # child started): its count is kept here, not read back per write.
        self._done = shared._done(index)

    def read(self) -> SlotView:
        return self._shared.read(self._index) or IDLE

    def start(self, task_id: str, deadline: float) -> None:
        self._shared.write(self._index, True, deadline, task_id, self._done)

    def end(self) -> None:
        self._done += 1
        self._shared.write(self._index, False, 0.0, "", self._done)

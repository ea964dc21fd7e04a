"""Task states, with Celery's names and meanings."""

from __future__ import annotations

PENDING = "PENDING"  # unknown, or waiting in a queue
STARTED = "STARTED"  # a worker has begun running it
RETRY = "RETRY"  # failed and scheduled to run again
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"

# Celery's names for how a run ended without a stored state of its own
# (``Ignore``, ``Reject``) and for a message a worker has received; never
# stored in a TaskResult row.
IGNORED = "IGNORED"
REJECTED = "REJECTED"
RECEIVED = "RECEIVED"

ALL_STATES = (PENDING, STARTED, RETRY, SUCCESS, FAILURE, REVOKED)
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
UNREADY_STATES = frozenset({PENDING, STARTED, RETRY})
EXCEPTION_STATES = frozenset({FAILURE, RETRY, REVOKED})
PROPAGATE_STATES = frozenset({FAILURE, REVOKED})
CHOICES = [(s, s.capitalize()) for s in ALL_STATES]

# Any other name is a custom state (``Task.update_state(state="PROGRESS")``).
# In FOLLOWS it is CUSTOM: it may follow what STARTED may follow, and be
# followed by what may follow STARTED, except STARTED itself (a late
# STARTED row must not hide the progress a task reported).
CUSTOM = "*"

# Which state may follow which within one attempt (one value of ``retries``).
# Every TaskResult change goes through TaskResultQuerySet, which asks
# ``may_follow``: no state goes backwards (a late STARTED never overwrites
# SUCCESS), and a finished row is reopened only by a later attempt of the
# same id (a retry) or by a new enqueue of the id (``enqueued``).
FOLLOWS: dict[str, frozenset[str]] = {
    PENDING: frozenset({PENDING, STARTED, CUSTOM, RETRY, SUCCESS, FAILURE, REVOKED}),
    STARTED: frozenset({STARTED, CUSTOM, RETRY, SUCCESS, FAILURE, REVOKED}),
    CUSTOM: frozenset({CUSTOM, RETRY, SUCCESS, FAILURE, REVOKED}),
    # Waiting for its next run: it may be revoked, or that run lost unstarted.
    RETRY: frozenset({FAILURE, REVOKED}),
    SUCCESS: frozenset(),
    FAILURE: frozenset(),
    REVOKED: frozenset({REVOKED}),
}


def kind(state: str) -> str:
    """``state`` itself if built in, else ``CUSTOM``."""
    return state if state in ALL_STATES else CUSTOM


def is_custom(state: str) -> bool:
    return state not in ALL_STATES


def settles(state: str) -> bool:
    """Whether a stored row in ``state`` ends its attempt (RETRY or ready):
    a custom state, like STARTED, leaves the run to settle if its executor dies."""
    return state == RETRY or state in READY_STATES


def may_follow(old: str, old_retries: int, new: str, new_retries: int) -> bool:
    """Whether a row in ``old`` (attempt ``old_retries``) may become ``new``
    (attempt ``new_retries``): a later attempt always may, an earlier never."""
    if new_retries != old_retries:
        return new_retries > old_retries
    return kind(new) in FOLLOWS[kind(old)]


def preceding(new: str) -> list[str]:
    """The states a row may leave for ``new`` within its attempt; ``CUSTOM``
    among them stands for every custom state (``models.status_in``)."""
    return [old for old, nexts in FOLLOWS.items() if kind(new) in nexts]


def may_follow_sql(old: str, new: str) -> str:
    """``may_follow`` as a SQL condition on two row aliases (``old`` the
    stored row, ``new`` the one arriving), for a conditional upsert. The
    states are literals from ``FOLLOWS``, never user input."""
    builtin = ", ".join(repr(s) for s in ALL_STATES)

    def one_of(alias: str, names: frozenset[str] | set[str]) -> str:
        known = [repr(n) for n in sorted(names) if n != CUSTOM]
        parts = [f"{alias}.status IN ({', '.join(known)})"] if known else []
        if CUSTOM in names:
            parts.append(f"{alias}.status NOT IN ({builtin})")
        return "(" + " OR ".join(parts) + ")"

    same = " OR ".join(
        f"({one_of(old, {before})} AND {one_of(new, after)})"
        for before, after in FOLLOWS.items() if after
    )
    return (f"({new}.retries > {old}.retries OR ({new}.retries = {old}.retries AND "
            f"({same})))")

"""Task states, with Celery's names and meanings."""

from __future__ import annotations

PENDING = "PENDING"  # unknown, or waiting in a queue
STARTED = "STARTED"  # a worker has begun running it
RETRY = "RETRY"  # failed and scheduled to run again
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"

ALL_STATES = (PENDING, STARTED, RETRY, SUCCESS, FAILURE, REVOKED)
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
UNREADY_STATES = frozenset({PENDING, STARTED, RETRY})
EXCEPTION_STATES = frozenset({FAILURE, RETRY, REVOKED})
CHOICES = [(s, s.capitalize()) for s in ALL_STATES]

# Which state may follow which within one attempt (one value of ``retries``).
# Every TaskResult change goes through TaskResultQuerySet, which asks
# ``may_follow``: no state goes backwards (a late STARTED never overwrites
# SUCCESS), and a finished row is reopened only by a later attempt of the
# same id (a retry) or by a new enqueue of the id (``enqueued``).
FOLLOWS: dict[str, frozenset[str]] = {
    PENDING: frozenset({PENDING, STARTED, RETRY, SUCCESS, FAILURE, REVOKED}),
    STARTED: frozenset({STARTED, RETRY, SUCCESS, FAILURE, REVOKED}),
    # Waiting for its next run: it may be revoked, or that run lost unstarted.
    RETRY: frozenset({FAILURE, REVOKED}),
    SUCCESS: frozenset(),
    FAILURE: frozenset(),
    REVOKED: frozenset({REVOKED}),
}


def may_follow(old: str, old_retries: int, new: str, new_retries: int) -> bool:
    """Whether a row in ``old`` (attempt ``old_retries``) may become ``new``
    (attempt ``new_retries``): a later attempt always may, an earlier never."""
    if new_retries != old_retries:
        return new_retries > old_retries
    return new in FOLLOWS[old]


def preceding(new: str) -> list[str]:
    """The states a row may leave for ``new`` within its attempt."""
    return [old for old, nexts in FOLLOWS.items() if new in nexts]


def may_follow_sql(old: str, new: str) -> str:
    """``may_follow`` as a SQL condition on two row aliases (``old`` the
    stored row, ``new`` the one arriving), for a conditional upsert. The
    states are literals from ``FOLLOWS``, never user input."""
    same = " OR ".join(
        f"({old}.status = '{before}' AND {new}.status IN ({', '.join(repr(a) for a in after)}))"
        for before, after in FOLLOWS.items() if after
    )
    return (f"({new}.retries > {old}.retries OR ({new}.retries = {old}.retries AND "
            f"({same})))")

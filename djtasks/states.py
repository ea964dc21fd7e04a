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

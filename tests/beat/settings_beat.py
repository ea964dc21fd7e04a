"""Settings of the beat runner subprocesses (tests/beat/test_race.py): one
schedule every DJTASKS_TEST_BEAT_EVERY seconds that records its tick in the
Redis hash DJTASKS_TEST_BEAT_COUNTER, and no housekeeping."""

import os

from tests.settings import *  # noqa: F403
from tests.settings import DJTASKS

DJTASKS = {
    **DJTASKS,
    "BEAT_SYNC_INTERVAL": 0.5,
    "BEAT_SCHEDULE": {
        "race": {"task": "tests.app.tasks.record_tick",
                 "schedule": float(os.environ.get("DJTASKS_TEST_BEAT_EVERY", "1")),
                 "args": [os.environ.get("DJTASKS_TEST_BEAT_COUNTER", "beat")],
                 # Every tick must run, even one whose runners all waited on a lock.
                 "missed": "all"},
        "djtasks.cleanup_results": None,
        "djtasks.trim_dead_letters": None,
        "djtasks.trim_workers": None,
    },
}

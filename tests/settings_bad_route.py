"""tests.settings with a ROUTES entry naming a queue-less, unknown task (a system check error)."""

from tests.settings import *  # noqa: F403

DJTASKS = {**DJTASKS, "ROUTES": {"nowhere.tasks.*": {"queue": "nowhere"}}}  # noqa: F405

"""The built-in clean-ups, run by beat as ordinary schedules
(``entries.HOUSEKEEPING``): expired results, old dead letters, lost workers."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from ..brokers import get_broker
from ..conf import get_settings
from ..task import shared_task

logger = logging.getLogger("djtasks.beat")

DAY = 24 * 3600.0


def delete_expired_results(expires: timedelta | None) -> int:
    """Delete finished ``TaskResult`` rows older than ``expires``; return how
    many (None: keep results for ever). Celery beat's ``backend_cleanup``."""
    from ..models import TaskResult

    if expires is None:
        return 0
    deleted, _ = TaskResult.objects.expired(expires).delete()
    return deleted


@shared_task(name="djtasks.cleanup_results")
def cleanup_results() -> int:
    """Delete results finished more than ``DJTASKS['RESULT_EXPIRES']`` ago."""
    deleted = delete_expired_results(get_settings().RESULT_EXPIRES)
    logger.info("deleted %d expired result(s)", deleted)
    return deleted


@shared_task(name="djtasks.trim_dead_letters")
def trim_dead_letters(older_than: float = 30 * DAY) -> int:
    """Forget dead letters older than ``older_than`` seconds (30 days); return how many."""
    broker = get_broker()
    cutoff = time.time() - older_than
    gone = [d.id for d in broker.dead_letters() if d.time < cutoff]
    return sum(broker.delete_dead_letter(letter) for letter in gone)


@shared_task(name="djtasks.trim_workers")
def trim_workers(older_than: float = DAY) -> int:
    """Forget worker records not seen for ``older_than`` seconds (a day): workers
    killed without a shutdown, shown as "lost" by ``manage.py djtasks workers``."""
    broker = get_broker()
    cutoff = time.time() - older_than
    lost = [name for name, info in broker.workers().items()
            if float(info.get("last_seen", 0)) < cutoff]
    for name in lost:
        broker.unregister_worker(name)
    return len(lost)

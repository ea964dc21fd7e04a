"""Wait for the broker before the worker starts, as a process manager expects."""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from ..brokers import Broker
from ..exceptions import BrokerUnavailable

logger = logging.getLogger("djtasks.worker")

BACKOFF_FIRST = 0.5  # seconds before the second attempt
BACKOFF_MAX = 10.0  # seconds between attempts, at most


def wait_for_broker(broker: Broker) -> bool:
    """Ping ``broker`` until it answers, waiting 0.5 s, then twice as long each
    time up to 10 s; True once it answers, False if SIGTERM or SIGINT came first.

    A broker that is down (``BrokerUnavailable``) is waited for, so a worker
    started before its broker, or with it under a process manager, does not
    crash-loop. Any other ``BrokerError`` (a wrong password) is raised at once.
    """
    stopped: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopped.append(signum)

    # Only the main thread may set handlers (call_command can run in another).
    own = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)
                if own}
    try:
        backoff = BACKOFF_FIRST
        while not stopped:
            try:
                broker.ping()
                return True
            except BrokerUnavailable as exc:
                logger.warning("waiting for the broker %s, again in %.1fs: %s",
                               broker.describe(), backoff, exc)
            deadline = time.monotonic() + backoff
            while not stopped and time.monotonic() < deadline:
                time.sleep(0.05)  # short naps: a signal ends the wait at once
            backoff = min(backoff * 2, BACKOFF_MAX)
        logger.warning("stopped (%s) while waiting for the broker",
                       signal.Signals(stopped[0]).name)
        return False
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

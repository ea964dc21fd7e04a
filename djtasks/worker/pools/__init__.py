"""Worker pools, chosen by ``runworker --pool``; one module per pool.

``POOLS`` maps each ``--pool`` name to its class; ``base.Pool`` is the
interface the supervisor uses. Adding a pool is writing one module.
"""

from __future__ import annotations

from .base import Kill, Pool, Stats
from .prefork import PreforkPool
from .solo import SoloPool
from .threads import ThreadsPool

__all__ = ["POOLS", "Kill", "Pool", "PreforkPool", "SoloPool", "Stats", "ThreadsPool"]

POOLS: dict[str, type[Pool]] = {p.name: p for p in (PreforkPool, ThreadsPool, SoloPool)}

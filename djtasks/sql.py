"""The cursor djtasks' plain-SQL statements run on: the database broker's
(publish, claim, start, ack) and the upserts of PENDING and result rows
(docs/brokers.md, "Prepared statements on PostgreSQL")."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from django.db import connections

# Runs of one statement on a connection before psycopg prepares it: psycopg's default.
PREPARE_THRESHOLD = 5


def cursor(alias: str) -> Any:
    """A Django cursor on connection ``alias``, with ``connection.cursor()``'s
    checks, query logging and error wrapping.

    On PostgreSQL with psycopg 3 it binds parameters on the server, so that
    psycopg prepares each statement run five times on a connection, as
    psycopg does by default: parsing and planning the broker's start, a
    statement of seven CTEs, cost more than running it. Django turns
    prepared statements off unless ``DATABASES[alias]["OPTIONS"]
    ["prepare_threshold"]`` is set, so that connection poolers work; djtasks
    prepares its own statements unless that option is set to ``None``,
    which a transaction-mode PgBouncer older than 1.21 needs. Django's own
    queries keep its client-side binding, which never prepares.
    """
    conn = connections[alias]
    if conn.vendor != "postgresql" or (server_binding := _server_binding_cursor()) is None:
        return conn.cursor()
    conn.close_if_health_check_failed()
    conn.ensure_connection()
    conn.validate_thread_sharing()
    raw = conn.connection
    if raw.prepare_threshold is None and _prepares(conn.settings_dict):
        raw.prepare_threshold = PREPARE_THRESHOLD
    with conn.wrap_database_errors:
        wrapped = server_binding(raw)
    return conn.make_debug_cursor(wrapped) if conn.queries_logged else conn.make_cursor(wrapped)


def pooler_hint(exc: BaseException) -> str:
    """What to add to the message of a database error that says a prepared
    statement does not exist (SQLSTATE 26000), as when a transaction-mode
    connection pooler runs it on another server connection; else ""."""
    if getattr(exc.__cause__, "sqlstate", None) != "26000":
        return ""
    return ("; a prepared statement was lost, as a connection pooler that does not track "
            "them loses it (a transaction-mode PgBouncer before 1.21): set "
            "DATABASES[alias]['OPTIONS']['prepare_threshold'] = None to turn djtasks' "
            "prepared statements off")


@functools.cache
def _server_binding_cursor() -> Any:
    """Django's server-binding psycopg 3 cursor class, or None (psycopg2).
    Asked only on PostgreSQL, whose backend is then importable."""
    from django.db.backends.postgresql import base

    return getattr(base, "ServerBindingCursor", None)


def _prepares(settings_dict: Mapping[str, Any]) -> bool:
    """Whether djtasks may turn prepared statements on for a connection whose
    ``prepare_threshold`` is None: not if the user set it so, nor when
    Django's own cursors bind on the server (``server_side_binding``), whose
    queries would then be prepared too."""
    options = settings_dict.get("OPTIONS") or {}
    return "prepare_threshold" not in options and options.get("server_side_binding") is not True

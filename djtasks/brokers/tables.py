"""The database broker's tables (``db://<alias>``); docs/brokers.md.

Imported by ``djtasks.models`` so Django and its migrations see them. Times
are Unix timestamps in seconds (floats), as everywhere in the broker layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import models


class QueuedMessage(models.Model):
    """One message waiting, scheduled or in flight.

    Ready: ``consumer`` is empty and ``due`` is null or past. Scheduled:
    ``due`` in the future. In flight: ``consumer`` names its holder. A row
    leaves the table when it is acked, dead-lettered or revoked, so the table
    holds only the work that is not done.
    """

    task_id = models.CharField(max_length=255)
    prefix = models.CharField(max_length=50)
    queue = models.CharField(max_length=200)
    priority = models.PositiveSmallIntegerField(default=0)
    due = models.FloatField(null=True, blank=True)
    consumer = models.CharField(max_length=255, blank=True, default="")
    deaths = models.PositiveIntegerField(default=0)
    body = models.BinaryField()

    class Meta:
        db_table = "djtasks_queue"
        indexes = [
            # The claim: ready messages of a queue, highest priority, oldest first.
            models.Index(fields=["prefix", "queue", "consumer", "-priority", "id"],
                         name="djtasks_queue_claim"),
            models.Index(fields=["prefix", "due"], name="djtasks_queue_due"),
            models.Index(fields=["prefix", "task_id"], name="djtasks_queue_task"),
            # What one consumer holds (start, ack, requeue, release, twins).
            models.Index(fields=["prefix", "consumer", "task_id"], name="djtasks_queue_held"),
        ]

    def __str__(self) -> str:
        return f"{self.task_id} on {self.queue}"


class BrokerConsumer(models.Model):
    """A consumer's lease and the task it started last (the running marker)."""

    prefix = models.CharField(max_length=50)
    name = models.CharField(max_length=255)
    lease_until = models.FloatField(null=True)
    running_task = models.CharField(max_length=255, blank=True, default="")
    running_message = models.BigIntegerField(null=True)  # QueuedMessage pk: not a retry twin
    redeliver = models.BooleanField(default=True)

    class Meta:
        db_table = "djtasks_consumer"
        constraints = [models.UniqueConstraint(fields=["prefix", "name"],
                                               name="djtasks_consumer_name")]

    def __str__(self) -> str:
        return self.name


class StartedTask(models.Model):
    """A task a consumer started whose rows it has not yet reported written."""

    prefix = models.CharField(max_length=50)
    consumer = models.CharField(max_length=255)
    task_id = models.CharField(max_length=255)

    class Meta:
        db_table = "djtasks_started"
        indexes = [models.Index(fields=["prefix", "consumer", "task_id"],
                                name="djtasks_started_consumer")]

    def __str__(self) -> str:
        return f"{self.task_id} started by {self.consumer}"


class StoredDeadLetter(models.Model):
    """A message the worker refused, with the reason."""

    prefix = models.CharField(max_length=50)
    letter_id = models.CharField(max_length=300)
    task_id = models.CharField(max_length=255)
    queue = models.CharField(max_length=200)
    body = models.BinaryField()
    reason = models.TextField()
    time = models.FloatField()

    class Meta:
        db_table = "djtasks_dead_letter"
        constraints = [models.UniqueConstraint(fields=["prefix", "letter_id"],
                                               name="djtasks_dead_letter_id")]

    def __str__(self) -> str:
        return f"dead letter {self.letter_id}"


class Revocation(models.Model):
    """A revoked task id, kept a day past ``score`` (revoke time or eta)."""

    prefix = models.CharField(max_length=50)
    task_id = models.CharField(max_length=255)
    score = models.FloatField()
    terminate = models.BooleanField(default=False)

    class Meta:
        db_table = "djtasks_revocation"
        constraints = [models.UniqueConstraint(fields=["prefix", "task_id"],
                                               name="djtasks_revocation_task")]

    def __str__(self) -> str:
        return f"revoked {self.task_id}"


class RateBucket(models.Model):
    """A task's rate-limit token bucket, shared by every worker."""

    prefix = models.CharField(max_length=50)
    name = models.CharField(max_length=255)
    tokens = models.FloatField()
    ts = models.FloatField()

    class Meta:
        db_table = "djtasks_rate_bucket"
        constraints = [models.UniqueConstraint(fields=["prefix", "name"],
                                               name="djtasks_rate_bucket_name")]

    def __str__(self) -> str:
        return f"rate bucket {self.name}"


class WorkerRecord(models.Model):
    """A worker's last heartbeat info (``manage.py djtasks workers``)."""

    prefix = models.CharField(max_length=50)
    name = models.CharField(max_length=255)
    info = models.JSONField()

    class Meta:
        db_table = "djtasks_worker"
        constraints = [models.UniqueConstraint(fields=["prefix", "name"],
                                               name="djtasks_worker_name")]

    def __str__(self) -> str:
        return self.name


class Duty(models.Model):
    """Which worker holds a duty (the outbox sweep) until when (``Broker.lead``)."""

    prefix = models.CharField(max_length=50)
    name = models.CharField(max_length=100)
    holder = models.CharField(max_length=255)
    until = models.FloatField()

    class Meta:
        db_table = "djtasks_duty"
        constraints = [models.UniqueConstraint(fields=["prefix", "name"],
                                               name="djtasks_duty_name")]

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder}"


class ChordState(models.Model):
    """How many members of a chord are done, and until when it is kept.
    Its row lock orders two members finishing at once (``chord_members_done``)."""

    prefix = models.CharField(max_length=50)
    chord_id = models.CharField(max_length=255)
    done = models.PositiveIntegerField(default=0)
    expires = models.FloatField()

    class Meta:
        db_table = "djtasks_chord"
        constraints = [models.UniqueConstraint(fields=["prefix", "chord_id"],
                                               name="djtasks_chord_id")]

    def __str__(self) -> str:
        return f"chord {self.chord_id}: {self.done} done"


class ChordMember(models.Model):
    """One chord member that is done: counted once, however often it runs."""

    prefix = models.CharField(max_length=50)
    chord_id = models.CharField(max_length=255)
    member_id = models.CharField(max_length=255)

    class Meta:
        db_table = "djtasks_chord_member"
        constraints = [models.UniqueConstraint(fields=["prefix", "chord_id", "member_id"],
                                               name="djtasks_chord_member_id")]

    def __str__(self) -> str:
        return f"{self.member_id} of chord {self.chord_id}"


# -- what the database broker's plain SQL names ------------------------------

QUEUE = QueuedMessage._meta.db_table
CONSUMER = BrokerConsumer._meta.db_table
STARTED = StartedTask._meta.db_table
REVOCATION = Revocation._meta.db_table
# Ready messages of a queue a consumer may claim (params: prefix, queue, now,
# prefix, consumer, count): not a twin of one it holds, highest priority,
# oldest first. On PostgreSQL it is MATERIALIZED, so its LIMIT holds: an
# IN (subquery) may be planned as a join that runs it more than once.
READY = (f"SELECT id FROM {QUEUE} WHERE prefix = %s AND queue = %s AND consumer = '' "
         f"AND (due IS NULL OR due <= %s) AND task_id NOT IN (SELECT task_id FROM "
         f"{QUEUE} WHERE prefix = %s AND consumer = %s) ORDER BY priority DESC, id LIMIT %s")

# The offered row %(row)s of task %(t)s, if consumer %(c)s may take it: still
# ready, as READY would find it, or already its own (a take whose reply was
# lost, tried again). PostgreSQL, named parameters.
OFFERED = (f"SELECT id FROM {QUEUE} WHERE id = %(row)s AND task_id = %(t)s AND prefix = %(p)s "
           f"AND (consumer = %(c)s OR (consumer = '' AND (due IS NULL OR due <= %(now)s) AND "
           f"task_id NOT IN (SELECT task_id FROM {QUEUE} WHERE prefix = %(p)s AND "
           f"consumer = %(c)s)))")


def marks(values: Sequence[Any]) -> str:
    """``%s, %s, ...``: one placeholder per value, for ``IN (...)``."""
    return ", ".join(["%s"] * len(values))

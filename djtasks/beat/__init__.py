"""Periodic tasks (beat): schedules, the runner, the database schedules (docs/periodic.md)."""

"""The ID-not-object rule beyond enqueue: system checks (and, later, call-site lint)."""

"""Task modules for the peers measured by benchmarks/peers.py (one module per peer).

Each module defines the same workload as benchmarks/benchapp/tasks.py: a no-op
whose body INCRs a Redis counter, and a latency probe that RPUSHes how long
the task waited between enqueue and start. They run in their own virtualenv
(see benchmarks/README.md), never in djtasks' own.
"""

#!/usr/bin/env bash
# Run the example site with a worker: http://127.0.0.1:8000 (admin: admin / admin).
# Sign-up mails land in example_project/var/mail/, reports in example_project/var/media/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PORT=${PORT:-8000}
$PY manage.py migrate --noinput -v0
$PY manage.py shell -v0 -c "
from django.contrib.auth.models import User
if not User.objects.filter(username='admin').exists():
    User.objects.create_superuser('admin', 'admin@example.com', 'admin')
"
# The worker gets a process group of its own (set -m), so the terminal's Ctrl-C
# reaches only this script and runserver; the trap then sends the worker one
# SIGTERM, a warm shutdown. Two signals (the terminal's and ours) would be cold.
set -m
$PY manage.py runworker --concurrency 2 --queues default,reports &
WORKER=$!
set +m
stop_worker() {
    kill -TERM "$WORKER" 2>/dev/null || true
    wait "$WORKER" 2>/dev/null || true
}
trap stop_worker EXIT
trap 'trap - EXIT; stop_worker; exit 0' INT TERM HUP
echo "example site: http://127.0.0.1:$PORT/  (admin: admin / admin)"
$PY manage.py runserver "127.0.0.1:$PORT" --noreload

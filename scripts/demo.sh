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
$PY manage.py runworker --concurrency 2 --queues default,reports &
WORKER=$!
trap 'kill -TERM $WORKER 2>/dev/null; wait $WORKER 2>/dev/null' EXIT INT TERM
echo "example site: http://127.0.0.1:$PORT/  (admin: admin / admin)"
$PY manage.py runserver "127.0.0.1:$PORT" --noreload

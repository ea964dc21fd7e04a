#!/bin/sh
# Run Django's own django.tasks tests (tests/tasks/ of Django's source) against
# djtasks.backends.DjtasksBackend, as tests/test_django_tasks_suite.py arranges.
#
#   scripts/django-tasks-tests.sh [PYTHON] [pytest arguments...]
#
# PYTHON is a Django 6+ interpreter (default .venv-django61/bin/python). Django's
# wheel has no tests, so the first run downloads the source of that Django
# version (pip download: needs the network) and keeps only tests/tasks/ under
# ${XDG_CACHE_HOME:-~/.cache}/djtasks/; later runs need no network. Needs the
# test suite's Redis and PostgreSQL (DJTASKS_TEST_DB, default postgres).
set -eu
cd "$(dirname "$0")/.."
PYTHON=${1:-.venv-django61/bin/python}
[ $# -gt 0 ] && shift
version=$("$PYTHON" -c 'import django; print(django.__version__)')
cache=${XDG_CACHE_HOME:-$HOME/.cache}/djtasks/django-$version-tests
if [ ! -d "$cache/tasks" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
        --no-binary :all: "Django==$version" -d "$tmp"
    tar -xzf "$tmp"/[dD]jango-"$version".tar.gz -C "$tmp" "django-$version/tests/tasks"
    mkdir -p "$cache"
    mv "$tmp/django-$version/tests/tasks" "$cache/tasks"
fi
DJANGO_TASKS_TESTS=$cache DJTASKS_TEST_DB=${DJTASKS_TEST_DB:-postgres} \
    exec "$PYTHON" -m pytest -p no:cacheprovider -rsx tests/test_django_tasks_suite.py "$@"

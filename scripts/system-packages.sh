#!/usr/bin/env bash
# The system packages the test extras build against: mysqlclient needs the
# MariaDB client headers and pkg-config. Installed with apt when missing.
set -euo pipefail
if pkg-config --exists libmariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "mysqlclient needs the MariaDB (or MySQL) client headers and pkg-config; install them" >&2
    exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "installing libmariadb-dev and pkg-config (for mysqlclient)"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq libmariadb-dev pkg-config >/dev/null

#!/usr/bin/env bash
# The system packages the test suite needs, installed with apt when missing:
# the MariaDB client headers and pkg-config (mysqlclient builds against
# them), and Debian's Chromium with its ChromeDriver (the admin's browser
# tests; a browser is never downloaded).
set -euo pipefail
missing=()
pkg-config --exists libmariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null \
    || missing+=(libmariadb-dev pkg-config)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
    echo "the tests need: ${missing[*]} (Debian package names); install them" >&2
    exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "installing ${missing[*]}"
# Another apt (unattended upgrades at boot, a second make) may hold its
# locks: wait for them (DPkg::Lock::Timeout), and try again if still taken.
apt() {
    for attempt in 1 2 3 4 5; do
        $SUDO apt-get -o DPkg::Lock::Timeout=120 "$@" && return 0
        echo "apt-get $1 failed (attempt $attempt of 5); trying again in 10 s" >&2
        sleep 10
    done
    return 1
}
apt update -qq
apt install -y -qq "${missing[@]}" >/dev/null

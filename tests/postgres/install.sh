#!/usr/bin/env bash
# Installs Debian's PostgreSQL server for the PostgreSQL tests when it is missing; `make test` runs
# it first. The tests start their own throw-away cluster (crates/tools/pgtest): nothing else is set up.
set -euo pipefail

if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install.sh: PostgreSQL is missing; install Debian's 'postgresql' package (as root: apt-get install postgresql)" >&2
    exit 1
fi
echo "install.sh: installing postgresql" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq postgresql >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
fi
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null

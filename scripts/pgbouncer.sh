#!/usr/bin/env bash
# Runs a private PgBouncer in transaction-pooling mode in the foreground (the tests start it
# through this script, one per test, and stop it by killing the process):
#
#   scripts/pgbouncer.sh DIR PORT POSTGRES_HOST POSTGRES_PORT
#
# DIR is created for its configuration, log and pid file; it listens on 127.0.0.1:PORT and
# forwards every database to POSTGRES_HOST:POSTGRES_PORT with trust authentication for the user
# `postgres` (the tests' Postgres). Two server connections per database and user, so that one
# client's consecutive transactions run on different server sessions, as behind a busy pooler.
# Installs Debian's `pgbouncer` package first when it is missing (as root; it stays installed).
set -euo pipefail
dir=$1 port=$2 pg_host=$3 pg_port=$4

if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "pgbouncer is not installed: apt-get install pgbouncer (as root)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # One install at a time (tests start in parallel).
    exec 9>/tmp/stmt-pgbouncer-install.lock
    flock 9
    if ! [ -x /usr/sbin/pgbouncer ]; then
        apt-get update -qq >&2
        apt-get install -y -qq pgbouncer >&2
    fi
    flock -u 9
fi

mkdir -p "$dir"
cat >"$dir/pgbouncer.ini" <<EOF
[databases]
* = host=$pg_host port=$pg_port

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = 2
max_client_conn = 200
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
echo '"postgres" ""' >"$dir/userlist.txt"
# PgBouncer refuses to run as root: it drops to the postgres user, which must own its files.
user_flag=()
if [ "$(id -u)" = 0 ]; then
    chown -R postgres "$dir"
    user_flag=(-u postgres)
fi
# -q: log to the log file only.
exec "$(command -v pgbouncer || echo /usr/sbin/pgbouncer)" -q "${user_flag[@]}" "$dir/pgbouncer.ini"

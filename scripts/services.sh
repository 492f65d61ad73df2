#!/usr/bin/env bash
# Makes Postgres and MariaDB/MySQL available and writes their URLs to .local/services.env.
#
# - Uses the configured servers where they answer (PG_ADMIN_URL / SOURCE_ADMIN_URL, by default
#   postgres@127.0.0.1:5432 and root@127.0.0.1:3306).
# - Otherwise starts private instances in .local/ (Postgres on 127.0.0.1:55432, MariaDB on
#   127.0.0.1:53306), installing the Debian packages first when they are missing and we are root.
# - Otherwise stops with a message naming exactly what to install.
set -euo pipefail

root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$root_dir/scripts/lib.sh"
local_dir="$root_dir/.local"
mkdir -p "$local_dir"
env_file="$local_dir/services.env"

say() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

pg_admin_url="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
source_admin_url="${SOURCE_ADMIN_URL:-mysql://root@127.0.0.1:3306}"

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    die "missing $*: install them with 'sudo apt-get install -y $*' (Debian/Ubuntu) and re-run"
  fi
  if ! command -v apt-get >/dev/null; then
    die "missing $* and apt-get is not available: install PostgreSQL and MariaDB server packages"
  fi
  say "installing Debian packages: $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends "$@" >/dev/null; } \
    || die "apt-get install $* failed"
}

# ---------- Postgres ----------
pg_answers() { command -v psql >/dev/null && psql "$1" -Atqc 'select 1' >/dev/null 2>&1; }

pg_bin_dir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return; }; done
  command -v initdb >/dev/null && dirname "$(command -v initdb)"
}

start_private_postgres() {
  local bin data port=55432
  bin="$(pg_bin_dir || true)"
  if [ -z "$bin" ]; then apt_install postgresql; bin="$(pg_bin_dir)"; fi
  data="$local_dir/pg"
  local run_as=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home "$data" postgres
    run_as=(runuser -u postgres --)
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    say "initialising a private Postgres in $data"
    mkdir -p "$data"; [ "$(id -u)" = 0 ] && chown postgres "$data"
    "${run_as[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
  fi
  if ! pg_answers "postgres://postgres@127.0.0.1:$port/postgres"; then
    say "starting the private Postgres on 127.0.0.1:$port"
    "${run_as[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
      -o "-p $port -k $data -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start >/dev/null
  fi
  pg_admin_url="postgres://postgres@127.0.0.1:$port/postgres"
}

if ! command -v psql >/dev/null; then apt_install postgresql-client; fi
if pg_answers "$pg_admin_url"; then
  say "Postgres answers at ${pg_admin_url%%\?*}"
else
  say "no Postgres at the configured URL; using a private instance"
  start_private_postgres
  pg_answers "$pg_admin_url" || die "the private Postgres did not start; see $local_dir/pg/server.log"
fi

# ---------- MariaDB / MySQL ----------
mysql_answers() {
  command -v mariadb >/dev/null || return 1
  local args; mapfile -t args < <(mysql_args "$1")
  mariadb "${args[@]}" -e 'select 1' >/dev/null 2>&1
}

start_private_mariadb() {
  local data="$local_dir/mariadb" port=53306
  command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server
  local mariadbd; mariadbd="$(command -v mariadbd || echo /usr/sbin/mariadbd)"
  local user_args=()
  [ "$(id -u)" = 0 ] && user_args=(--user=mysql)
  if [ ! -d "$data/mysql" ]; then
    say "initialising a private MariaDB in $data"
    mkdir -p "$data"; [ "$(id -u)" = 0 ] && chown mysql "$data"
    mariadb-install-db "${user_args[@]}" --datadir="$data" --auth-root-authentication-method=normal \
      --skip-test-db >"$local_dir/mariadb-install.log" 2>&1 \
      || die "mariadb-install-db failed; see $local_dir/mariadb-install.log"
  fi
  if ! mysql_answers "mysql://root@127.0.0.1:$port"; then
    say "starting the private MariaDB on 127.0.0.1:$port"
    nohup "$mariadbd" --no-defaults "${user_args[@]}" --datadir="$data" --port=$port --bind-address=127.0.0.1 \
      --socket="$data/mariadb.sock" --pid-file="$data/mariadb.pid" --log-error="$data/error.log" \
      --innodb-buffer-pool-size=256M >/dev/null 2>&1 &
    for _ in $(seq 1 60); do mysql_answers "mysql://root@127.0.0.1:$port" && break; sleep 0.5; done
  fi
  source_admin_url="mysql://root@127.0.0.1:$port"
}

if ! command -v mariadb >/dev/null; then apt_install mariadb-client; fi
if mysql_answers "$source_admin_url"; then
  say "MariaDB/MySQL answers at ${source_admin_url}"
else
  say "no MariaDB/MySQL at the configured URL; using a private instance"
  start_private_mariadb
  mysql_answers "$source_admin_url" || die "the private MariaDB did not start; see $local_dir/mariadb/error.log"
fi

# ---------- the service's own database and read-only user ----------
pg_base="${pg_admin_url%/*}"
if ! psql "$pg_admin_url" -Atqc "select 1 from pg_database where datname = 'statements'" | grep -q 1; then
  psql "$pg_admin_url" -qc 'CREATE DATABASE statements' >/dev/null
fi
mapfile -t margs < <(mysql_args "$source_admin_url")
{ echo "CREATE DATABASE IF NOT EXISTS statements_demo CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;"
  cat "$root_dir/scripts/readonly-user.sql"; } | mariadb "${margs[@]}"
src_hostport="${source_admin_url#*@}"

cat >"$env_file" <<EOF
# Written by scripts/services.sh: where this machine's Postgres and MariaDB answer.
export PG_ADMIN_URL='$pg_admin_url'
export SOURCE_ADMIN_URL='$source_admin_url'
export DATABASE_URL="\${DATABASE_URL:-$pg_base/statements}"
export SOURCE_DATABASE_URL="\${SOURCE_DATABASE_URL:-mysql://statements_ro:statements_ro@${src_hostport%%/*}/statements_demo}"
EOF
say "wrote $env_file"

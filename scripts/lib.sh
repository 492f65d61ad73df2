# shellcheck shell=bash
# Helpers shared by the scripts (sourced, not run).

# mysql://user[:pass]@host:port[/db] → mariadb CLI arguments, one per line.
mysql_args() {
  python3 - "$1" <<'PY'
import sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
args = ["-h", u.hostname or "127.0.0.1", "-P", str(u.port or 3306), "-u", urllib.parse.unquote(u.username or "root"), "--protocol=TCP"]
if u.password:
    args.append("-p" + urllib.parse.unquote(u.password))
print("\n".join(args))
PY
}

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Prepares a throwaway service for a test or benchmark run: loads the demo dataset into the
# source, makes a fresh Postgres database named $1, a temporary directory $work (files, logs),
# and exports the service's settings on ports that are free now.
prepare_live_service() {
  local margs port metrics_port
  mapfile -t margs < <(mysql_args "$SOURCE_ADMIN_URL")
  mariadb "${margs[@]}" --default-character-set=utf8mb4 < scripts/demo-data.sql
  psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null
  work=$(mktemp -d)
  port=$(free_port)
  metrics_port=$(free_port)
  export DATABASE_URL="${PG_ADMIN_URL%/*}/$1" LOCAL_STORAGE_DIR="$work/exports" SIGNING_SECRET="$(printf %s "$1" | sha256sum | cut -c1-64)"
  export API_BIND="127.0.0.1:$port" PUBLIC_BASE_URL="http://127.0.0.1:$port"
  export WORKER_METRICS_BIND="127.0.0.1:$metrics_port"
  export JOB_POLL_INTERVAL_MS=200 RATE_LIMIT_PER_MINUTE=1000000 RATE_LIMIT_BURST=100000
  export DASHBOARD_ADMIN_KEY_SIGN_IN=true
}

# Starts the API and a worker from directory $1 (target/debug or target/release), logging to
# $work; sets $api and $worker (the caller's EXIT trap stops them) and waits for the API.
# shellcheck disable=SC2034 # api and worker are the caller's
start_live_service() {
  "$1/statement-api" serve 2>"$work/api.log" &
  api=$!
  "$1/statement-worker" 2>"$work/worker.log" &
  worker=$!
  for _ in $(seq 1 100); do curl -sf "$PUBLIC_BASE_URL/health" >/dev/null && break; sleep 0.1; done
  curl -sf "$PUBLIC_BASE_URL/health" >/dev/null \
    || { tail -n 20 "$work/api.log" >&2; echo "the API did not start" >&2; return 1; }
}

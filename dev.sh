#!/usr/bin/env bash
# The quick start's two commands:
#   ./dev.sh serve   set up, find or start a Redis, migrate, create a demo admin, run uvicorn
#   ./dev.sh demo    a group ride of simulated athletes: against the server on :8000 if one answers,
#                    else set up like serve, start the server, ride, and keep serving
#   ./dev.sh test    set up, find or start a Redis, run the whole test suite (pytest args pass through)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
export PATH="$PWD/.venv/bin:$PATH"

ensure_venv() {
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
  fi
  local want have
  want=$(cat requirements/*.txt | sha256sum | cut -d' ' -f1)
  have=$(cat .venv/.requirements.sha256 2>/dev/null || true)
  if [ "$want" != "$have" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -r requirements/dev.txt
    echo "$want" > .venv/.requirements.sha256
  fi
}

# A development .env with a random SECRET_KEY (settings.py reads .env), so management commands
# run outside this script need no DEBUG=true; an existing SECRET_KEY is kept.
ensure_dev_env() {
  if ! grep -qs '^SECRET_KEY=' .env; then
    echo "SECRET_KEY=dev-$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(48))')" >> .env
    echo "Wrote a development SECRET_KEY to .env"
  fi
}

# Find a Redis, or start one that is stopped again when this script exits (it says which).
started_redis=$(mktemp)
stop_started_redis() {
  if [ -s "$started_redis" ]; then
    .venv/bin/python scripts/local_redis.py --stop "$(cat "$started_redis")" || true
  fi
  rm -f "$started_redis"
}
trap stop_started_redis EXIT

find_redis() {
  .venv/bin/python scripts/local_redis.py --started-file "$started_redis" "$@"
}

# Static files: collected (hashed, compressed) again whenever the dependencies or our own
# static files (the apps' static/ folders) change; servestatic serves them.
collect_static() {
  local want marker
  want=$({ cat .venv/.requirements.sha256
           find streams workouts monitoring streamsite -path '*/static/*' -type f -print0 | sort -z | xargs -0 -r sha256sum
         } | sha256sum | cut -d' ' -f1)
  marker="${STATIC_ROOT:-staticfiles}/.collected"
  if [ "$(cat "$marker" 2>/dev/null || true)" != "$want" ]; then
    echo "Collecting static files (the dependencies or our static files changed)…"
    .venv/bin/python manage.py collectstatic --no-input -v0
    mkdir -p "$(dirname "$marker")"
    echo "$want" > "$marker"
  fi
}

BASE_URL="http://127.0.0.1:${PORT:-8000}"

# serve's set-up: .env, Redis, database, static files, the demo admin.
serve_setup() {
  ensure_venv
  ensure_dev_env
  export DEBUG=${DEBUG:-true}
  REDIS_URL=$(find_redis)
  export REDIS_URL
  .venv/bin/python manage.py migrate --no-input -v0
  collect_static
  .venv/bin/python manage.py demo_setup --base-url "$BASE_URL"
}

# The server in the background ($server); serve_until_stopped waits for it.
server_start() {
  . scripts/processes.sh
  setup_processes  # WEB_CONCURRENCY=N: N processes (uvicorn reads it), metrics shared
  echo "Serving on $BASE_URL/ (Redis: $REDIS_URL)"
  .venv/bin/uvicorn --host 127.0.0.1 --port "${PORT:-8000}" --no-proxy-headers \
    --http streamsite.server.http:BoundedHttpToolsProtocol \
    --timeout-graceful-shutdown 10 streamsite.asgi:application &
  server=$!
}

# Not exec'd: this script outlives the server to stop the Redis it started. Ctrl-C reaches the
# server directly; a TERM sent to this script is passed on.
serve_until_stopped() {
  trap 'kill -TERM "$server" 2>/dev/null || true' TERM
  trap ':' INT
  status=0
  while kill -0 "$server" 2>/dev/null; do
    wait "$server" && status=0 || status=$?
  done
  exit "$status"
}

server_answers() {
  [ -x .venv/bin/python ] && .venv/bin/python -c \
    'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$BASE_URL/health/" 2>/dev/null
}

server_wait() {
  for _ in $(seq 1 150); do
    server_answers && return 0
    kill -0 "$server" 2>/dev/null || { echo "the server did not start" >&2; exit 1; }
    sleep 0.2
  done
  echo "the server did not answer on $BASE_URL/health/ within 30 s" >&2
  exit 1
}

case "${1:-}" in
  serve)
    serve_setup
    server_start
    serve_until_stopped
    ;;
  demo)
    shift
    if server_answers; then
      # The running server (./dev.sh serve) found its Redis the same way: the riders go there.
      ensure_venv
      ensure_dev_env
      REDIS_URL=$(find_redis)
      export REDIS_URL
      echo "A server answers on $BASE_URL/: the riders publish to $REDIS_URL"
      .venv/bin/python manage.py demo_ride --base-url "$BASE_URL" "$@"
    else
      serve_setup
      server_start
      server_wait
      .venv/bin/python manage.py demo_ride --base-url "$BASE_URL" "$@" || true
      echo "The server keeps serving on $BASE_URL/ (Ctrl-C stops it)."
      serve_until_stopped
    fi
    ;;
  test)
    ensure_venv
    shift
    # The tests own one database index (TEST_REDIS_DB, default 15) and flush only that.
    REDIS_URL=$(find_redis --db "${TEST_REDIS_DB:-15}")
    export REDIS_URL
    .venv/bin/python -m pytest "$@"
    ;;
  *)
    echo "usage: ./dev.sh serve | ./dev.sh demo [demo_ride args] | ./dev.sh test [pytest args]" >&2
    exit 2
    ;;
esac

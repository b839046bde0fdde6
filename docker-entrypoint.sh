#!/bin/sh
# Optionally apply migrations; set up WEB_CONCURRENCY's processes (scripts/processes.sh); then
# become the server process (signals reach it directly).
set -e
. "$(dirname "$0")/scripts/processes.sh"
setup_processes
if [ "${MIGRATE_ON_START:-false}" = "true" ]; then
  python manage.py migrate --no-input
fi
exec "$@"

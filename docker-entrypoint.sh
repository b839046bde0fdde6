#!/bin/sh
# Optionally apply migrations, then become the server process (signals reach it directly).
set -e
if [ "${MIGRATE_ON_START:-false}" = "true" ]; then
  python manage.py migrate --no-input
fi
exec "$@"

# Sourced by docker-entrypoint.sh and ./dev.sh serve (POSIX sh).
#
# WEB_CONCURRENCY=N runs N server processes: uvicorn reads the variable itself (its --workers
# default). With more than one, prometheus_client's multi-process mode needs a directory shared
# by the processes and empty when they start: PROMETHEUS_MULTIPROC_DIR is created (or, when
# set, emptied of its *.db files) here, before any process imports prometheus_client.
setup_processes() {
  n="${WEB_CONCURRENCY:-1}"
  case "$n" in
    '' | *[!0-9]*) n_ok=false ;;
    *) if [ "$n" -ge 1 ]; then n_ok=true; else n_ok=false; fi ;;
  esac
  if [ "$n_ok" = false ]; then
    echo "WEB_CONCURRENCY='$n' must be a positive integer (server processes)" >&2
    exit 2
  fi
  if [ "$n" -gt 1 ]; then
    if [ -z "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
      PROMETHEUS_MULTIPROC_DIR=$(mktemp -d "${TMPDIR:-/tmp}/streamsite-prometheus.XXXXXX")
      export PROMETHEUS_MULTIPROC_DIR
    else
      mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
      rm -f "$PROMETHEUS_MULTIPROC_DIR"/*.db
    fi
  fi
  # WebSocket frames: no larger than a REST body. uvicorn's --ws-max-size (its
  # UVICORN_WS_MAX_SIZE; default 16 MiB) follows STREAMS_MAX_BODY unless set: bigger frames
  # are closed with 1009 before they are buffered; the consumer names the limit below it.
  UVICORN_WS_MAX_SIZE="${UVICORN_WS_MAX_SIZE:-${STREAMS_MAX_BODY:-1048576}}"
  export UVICORN_WS_MAX_SIZE
}

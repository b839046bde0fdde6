#!/usr/bin/env bash
# The duel, one command: installs nginx + Nchan (Debian packages, unpacked under .run/duel-nginx)
# and Socket.IO (npm, under .run/duel-node) when missing, then runs every workload against
# streamsite, Nchan and Socket.IO and prints the table. Arguments go to bench/duel/duel.py:
#   bench/duel/run.sh --quick          # ~3 minutes: small sizes, one round
#   bench/duel/run.sh                  # the issue's sizes (about 15 minutes per round)
#   bench/duel/run.sh --servers streamsite,nchan --workloads burst,paced
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python bench/duel/duel.py "$@"

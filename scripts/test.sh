#!/usr/bin/env bash
# Run the test suite: starts a throwaway PostgreSQL server on loopback for the store tests when one
# can be started (scripts/pg.sh), then pytest. Extra arguments go to pytest (default: -m 'not slow').
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${ROBUSTLAB_TEST_PG_URL:-}" ] && [ -f scripts/pg.sh ]; then
  url=$(bash scripts/pg.sh start 2>/tmp/robustlab-pg.log) && export ROBUSTLAB_TEST_PG_URL="$url"
fi
.venv/bin/ruff check src tests benchmarks
lint=$?
if [ $# -eq 0 ]; then set -- -m "not slow"; fi  # slow tests: `make test-slow` (CI runs both)
.venv/bin/python -m pytest -q "$@"
rc=$?
[ -f scripts/pg.sh ] && bash scripts/pg.sh stop >/dev/null 2>&1
[ $rc -eq 0 ] && rc=$lint
exit $rc

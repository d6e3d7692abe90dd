#!/usr/bin/env bash
# The whole check, as CI runs it: set-up, lint, types, then every test tier.
# Exits non-zero on any failure, including a tier in which no test ran. The docker tier
# runs on the local engine, which scripts/docker-setup.sh installs and starts.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/setup.sh)
BIN=$(dirname "$PY")
export PATH="$BIN:$PATH"

# The Docker engine and the local images (the docker tier); dockerd is stopped at the end
# if this run started it.
DOCKERD=$(bash scripts/docker-setup.sh)
stop_dockerd() {
  [ -n "$DOCKERD" ] || return 0
  kill -TERM "$DOCKERD" 2>/dev/null || return 0
  for _ in $(seq 1 150); do kill -0 "$DOCKERD" 2>/dev/null || return 0; sleep 0.2; done
}
trap stop_dockerd EXIT

echo "== ruff"; "$BIN/ruff" check raftkube tests chaos bench
echo "== mypy (strict on raftkube/ and chaos/)"; "$BIN/mypy"
echo "== layer contracts (DESIGN.md)"; "$BIN/lint-imports"

tier() {  # tier NAME PYTEST-ARGS...: run one tier; "no tests ran" (exit 5) is a failure
  local name=$1; shift
  echo "== tests: $name"
  set +e
  "$PY" -m pytest "$@"
  local rc=$?
  set -e
  if [ $rc -eq 5 ]; then echo "tier $name: no tests ran" >&2; exit 1; fi
  if [ $rc -ne 0 ]; then echo "tier $name: failed (exit $rc)" >&2; exit $rc; fi
}
# The unit tier's tests share nothing (free ports, their own tmp dirs and network
# namespaces), so two workers run them: about half the tier is real waiting, which the
# other worker fills. The tiers with real clusters run one test at a time: their
# timings are what they prove, and two clusters at once would halve each one's cores.
# Each tier names its slowest tests, to keep the suite within its 20 minutes.
tier unit -m unit -n 2 --durations=10 tests
tier cluster -m cluster --durations=25 tests
tier docker -m docker --durations=15 tests
tier chaos -m chaos --durations=5 chaos
echo "== all checks passed"

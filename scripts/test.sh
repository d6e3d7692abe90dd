#!/usr/bin/env bash
# The whole check, as CI runs it: set-up, lint, types, then every test tier.
# Exits non-zero on any failure, including a tier in which no test ran.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/setup.sh)
BIN=$(dirname "$PY")
export PATH="$BIN:$PATH"

echo "== ruff"; "$BIN/ruff" check raftkube tests chaos bench
echo "== mypy (strict on raftkube/)"; "$BIN/mypy"
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
tier unit -m unit tests
tier cluster -m cluster tests
tier chaos -m chaos chaos
echo "== all checks passed"

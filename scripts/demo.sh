#!/usr/bin/env bash
# The demo: a local HA cluster of three masters; write, kill the leader with SIGKILL,
# and show that the data is still there and a new leader was elected.
# KEEP=1 leaves the cluster running afterwards (stop it with `rk down --state-dir .state/demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/setup.sh)
export PATH="$(dirname "$PY"):$PATH"
STATE=${STATE:-.state/demo}
export RK_CONFIG="$PWD/$STATE/config.yaml"
rk down --state-dir "$STATE" >/dev/null 2>&1 || true
rm -rf "$STATE"  # the demo's own directory: start from nothing each time
[ "${KEEP:-0}" = 1 ] || trap 'rk down --state-dir "$STATE" >/dev/null' EXIT
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step rk up --masters 3 --agents 0 --state-dir "$STATE"
step rk members
for app in front back cache; do step rk kv put "/demo/apps/$app" "replicas=3"; done
step rk kv get /demo/apps/ --prefix
leader=$(rk members | awk '/ leader/ {print $1}')
printf '\n\033[1m# SIGKILL the leader, %s (pid %s)\033[0m\n' "$leader" "$(cat "$STATE/pids/$leader.pid")"
kill -9 "$(cat "$STATE/pids/$leader.pid")"
python - <<'PY'
import subprocess, time
start = time.monotonic()
while subprocess.run(["rk", "kv", "put", "/demo/after-failover", "ok"],
                     capture_output=True).returncode != 0:
    time.sleep(0.05)
print(f"first write acknowledged {time.monotonic() - start:.2f}s after the kill")
PY
step rk members
step rk kv get /demo/ --prefix
step rk up --state-dir "$STATE"
step rk members

printf '\n\033[1m# Kubernetes manifests, applied once and served by every master\033[0m\n'
step rk apply -f examples/
step rk apply -f examples/   # unchanged: nothing is written
python - "$STATE" <<'PY'
import sys, yaml
state = sys.argv[1]
cfg = yaml.safe_load(open(f"{state}/config.yaml"))
for i, server in enumerate(cfg["servers"], 1):
    with open(f"{state}/only-m{i}.yaml", "w") as f:
        yaml.safe_dump({"servers": [server], "token": cfg["token"]}, f)
PY
for i in 1 2 3; do
  printf '\n\033[1m# from m%s\033[0m\n' "$i"
  RK_CONFIG="$PWD/$STATE/only-m$i.yaml" rk get deployments
  RK_CONFIG="$PWD/$STATE/only-m$i.yaml" rk get services
done
step rk get configmap web-config -o yaml

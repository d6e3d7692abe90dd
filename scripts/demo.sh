#!/usr/bin/env bash
# The demo (`make demo`): a local HA cluster of 3 masters and 2 agents on the local
# Docker engine, a 3-replica web app (examples/hello-web.yaml) answering from different
# pods, the leader master killed with SIGKILL while a loop keeps asking the app (the
# longest gap and any failed request are reported), the new leader, a rolling update
# and its undo. Every wait is bounded; the script exits non-zero as soon as anything it
# shows fails, and removes the cluster (processes, containers) at the end unless KEEP=1
# (then: `rk down --state-dir .state/demo`). STATE=DIR puts the cluster elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/setup.sh)
PATH="$(dirname "$PY"):$PATH"
export PATH
bash scripts/docker-setup.sh >/dev/null  # the engine (started if it is not) and local images
STATE=$(mkdir -p "${STATE:-.state/demo}" && cd "${STATE:-.state/demo}" && pwd)
export RK_CONFIG="$STATE/config.yaml"
TOOLS=(python scripts/demo_tools.py)
POLLER=""

cleanup() {
  local rc=$?
  [ -z "$POLLER" ] || kill "$POLLER" 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then
    echo "KEEP=1: the cluster runs on; RK_CONFIG=$RK_CONFIG; stop it with: rk down --state-dir $STATE"
  else
    rk down --state-dir "$STATE" >/dev/null || { echo "demo: rk down failed" >&2; rc=1; }
  fi
  [ "$rc" = 0 ] && echo "demo: all shown steps passed" || echo "demo: FAILED (exit $rc)" >&2
  exit "$rc"
}
if [ -t 1 ]; then B=$'\033[1m' N=$'\033[0m'; else B="" N=""; fi  # bold on a terminal
step() { printf '\n%s$ %s%s\n' "$B" "$*" "$N"; "$@"; }
say() { printf '\n%s# %s%s\n' "$B" "$*" "$N"; }
die() { echo "demo: $*" >&2; exit 1; }
image_is() {  # image_is IMAGE: the Deployment's pod template runs IMAGE
  local found
  found=$(rk get deployment hello-web -o json \
    | python -c 'import json,sys; print(json.load(sys.stdin)["spec"]["template"]["spec"]["containers"][0]["image"])')
  echo "deployment hello-web runs image $found"
  [ "$found" = "$1" ] || die "expected image $1, found $found"
}

rk down --state-dir "$STATE" >/dev/null 2>&1 || true
rm -rf "$STATE"  # the demo's own directory: start from nothing each time
mkdir -p "$STATE"
trap cleanup EXIT

say "a local HA cluster: 3 masters (Raft) and 2 agents running pods on Docker"
step rk up --masters 3 --agents 2 --runtime docker --state-dir "$STATE"
step rk get nodes -o wide

say "a 3-replica web app and a NodePort Service, applied; --wait shows the rollout"
step timeout 180 rk apply -f examples/hello-web.yaml --wait
found=$("${TOOLS[@]}" app-urls) || die "could not read the Service's NodePort"
mapfile -t URLS <<<"$found"
[ "${#URLS[@]}" -ge 1 ] || die "no node address for the app"

say "every node answers on the NodePort, balanced over the pods (each replies its name)"
"${TOOLS[@]}" ask 30 "${URLS[@]}" >/dev/null || die "the app does not answer"
replies=()
for i in 1 2 3 4 5 6; do
  url=${URLS[$(( i % ${#URLS[@]} ))]}
  printf '$ curl %s\n' "$url"
  reply=$(if command -v curl >/dev/null; then curl -fsS -m 3 "$url"
          else python -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode().strip())' "$url"; fi) \
    || die "request $i to $url failed"
  echo "$reply"
  replies+=("$reply")
done
pods=$(printf '%s\n' "${replies[@]}" | sort -u)
count=$(printf '%s\n' "$pods" | wc -l)
echo "replies from $count different pods: $(paste -sd' ' <<<"$pods")"
[ "$count" -ge 2 ] || die "every reply came from one pod"

say "which master leads"
step rk cluster status
found=$("${TOOLS[@]}" leader "$STATE") || die "no leader"
read -r leader pid term <<<"$found"
[ "$pid" != - ] || die "the leader $leader has no running process"

say "SIGKILL the leader, $leader (pid $pid, term $term), while a loop asks the app every 0.1 s"
rm -f "$STATE/poll.stop" "$STATE/poll.json"
"${TOOLS[@]}" poll "$STATE/poll.json" "$STATE/poll.stop" "${URLS[@]}" &
POLLER=$!
sleep 1
kill -9 "$pid"
found=$("${TOOLS[@]}" new-leader "$STATE" "$leader" 30) || die "no new leader within 30 s"
read -r newleader newterm <<<"$found"
echo "new leader: $newleader (term $newterm), elected after $leader was killed"
step rk cluster status
step rk get pods -o wide  # served by the masters left: the API answers throughout
sleep 2
touch "$STATE/poll.stop"
wait "$POLLER" || true
POLLER=""
"${TOOLS[@]}" report "$STATE/poll.json" || die "the app missed requests while the leader died"

say "rk up again: it restarts what is not running ($leader), with its data"
step rk up --state-dir "$STATE"

say "a rolling update, one pod at a time (maxUnavailable 0)"
step rk set image deployment/hello-web web=busybox:latest
step timeout 180 rk rollout status deployment/hello-web --timeout 150s
image_is busybox:latest
step rk get pods -o wide

say "and back: rollout undo"
step rk rollout undo deployment/hello-web
step timeout 180 rk rollout status deployment/hello-web --timeout 150s
image_is busybox:1.36
"${TOOLS[@]}" ask 30 "${URLS[@]}" | sed 's/^/the app answers from /' || die "the app does not answer"

if command -v kubectl >/dev/null 2>&1; then
  say "kubectl, unchanged, over HTTPS with the kubeconfig rk up wrote"
  step env KUBECONFIG="$STATE/kubeconfig" kubectl get nodes,deployments,pods -o wide
fi

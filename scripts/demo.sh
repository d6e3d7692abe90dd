#!/usr/bin/env bash
# The demo: a local HA cluster of three masters and one node on the local Docker engine;
# write, kill the leader with SIGKILL, and show that the data is still there and a new
# leader was elected; then a pod whose two containers talk on localhost.
# KEEP=1 leaves the cluster running afterwards (stop it with `rk down --state-dir .state/demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/setup.sh)
export PATH="$(dirname "$PY"):$PATH"
bash scripts/docker-setup.sh >/dev/null  # the engine and the local images
STATE=${STATE:-.state/demo}
export RK_CONFIG="$PWD/$STATE/config.yaml"
rk down --state-dir "$STATE" >/dev/null 2>&1 || true
rm -rf "$STATE"  # the demo's own directory: start from nothing each time
[ "${KEEP:-0}" = 1 ] || trap 'rk down --state-dir "$STATE" >/dev/null' EXIT
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step rk up --masters 3 --agents 1 --state-dir "$STATE"
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
        yaml.safe_dump({"servers": [server], "token": cfg["token"], "ca": cfg.get("ca")}, f)
PY
for i in 1 2 3; do
  printf '\n\033[1m# from m%s\033[0m\n' "$i"
  RK_CONFIG="$PWD/$STATE/only-m$i.yaml" rk get deployments
  RK_CONFIG="$PWD/$STATE/only-m$i.yaml" rk get services
done
step rk get configmap web-config -o yaml
if command -v kubectl >/dev/null 2>&1; then
  printf '\n\033[1m# kubectl, over HTTPS with the kubeconfig rk up wrote\033[0m\n'
  step env KUBECONFIG="$PWD/$STATE/kubeconfig" kubectl get nodes,deployments -o wide
fi

printf '\n\033[1m# A pod on Docker: an httpd, and a client that asks it on localhost\033[0m\n'
cat > "$STATE/hello.yaml" <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: hello}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - {name: httpd, image: "busybox:1.36", command: [httpd, -f, -p, "8080", -h, /etc]}
    - name: client
      image: "busybox:1.36"
      command: [sh, -c, "until timeout 5 wget -qO- localhost:8080/hostname; do sleep 1; done; exec sleep 3600"]
EOF
step rk apply -f "$STATE/hello.yaml"
python - <<'PY'
import json, subprocess, time
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    out = subprocess.run(["rk", "get", "pod", "hello", "-o", "json"], capture_output=True)
    conds = json.loads(out.stdout or "{}").get("status", {}).get("conditions", [])
    if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
        break
    time.sleep(0.5)
PY
step rk get pods -o wide
step docker ps --filter label=io.raftkube.pod.name=hello --format 'table {{.Names}}\t{{.Status}}'
client=$(docker ps -q --filter label=io.raftkube.pod.name=hello \
  --filter label=io.raftkube.container.name=client)
sleep 2
printf '\n\033[1m# what the client heard from localhost:8080: %s\033[0m\n' \
  "$(docker logs "$client" 2>&1 | head -1)"
ip=$(rk get pod hello -o json | python -c 'import json,sys; print(json.load(sys.stdin)["status"]["podIP"])')
printf '\n\033[1m# and the host, at the pod IP %s:\033[0m\n' "$ip"
python -c "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().strip())" "http://$ip:8080/hostname"

#!/usr/bin/env bash
# Provisions one raftkube VM of the Vagrantfile: `deploy/provision.sh master|agent`.
# Idempotent: run again (`vagrant provision`), it installs what changed and restarts a
# daemon only when its unit or its files changed.
#
#   - installs docker.io (agents; with the local images of scripts/docker-setup.sh) and
#     python3-venv, and raftkube from the synced folder into a venv;
#   - the cluster's secrets are made ONCE, by the first master, in the shared folder
#     ($RK_SHARED): the admin token, the Raft secret, a token per worker (node-tokens),
#     and the PKI (`rk certs`: the CA, and a serving certificate per master naming its
#     private address). Every other VM waits for `$RK_SHARED/ready` and copies what it
#     needs into $RK_ETC. The folder must be shared both ways (vboxsf, NFS, 9p, virtiofs;
#     not rsync). It holds the CA key: a development cluster's trust, not production's;
#   - systemd units raftkube-master.service / raftkube-agent.service (enabled, started,
#     Restart=on-failure) whose ExecStart binds the private address ($RK_ADDRESS), never
#     the NAT one; the agent's runtime and any extra flags come from the EnvironmentFile
#     $RK_ETC/{master,agent}.env;
#   - on masters, ~/.raftkube/config.yaml and ~/.kube/config for $RK_USER, and `rk` in
#     $RK_BIN_DIR, so `vagrant ssh m1 -c 'rk get nodes'` works.
#
# Everything is an environment variable, so a test can run it outside a VM
# (tests/cluster/test_provision_netns.py):
#   RK_NAME              this VM's name (default: hostname -s): m1.. or w1..
#   RK_ADDRESS           its private address (required)
#   RK_MASTERS_ADDRESSES the masters' addresses, comma-separated, m1's first (required)
#   RK_WORKERS           the workers' names, comma-separated (node tokens; default w1,w2)
#   RK_SRC=/vagrant  RK_SHARED=$RK_SRC/.raftkube-cluster  RK_PREFIX=/opt/raftkube
#   RK_VENV=$RK_PREFIX/venv  RK_ETC=/etc/raftkube  RK_DATA=/var/lib/raftkube
#   RK_SYSTEMD_DIR=/etc/systemd/system  RK_BIN_DIR=/usr/local/bin
#   RK_USER=vagrant  RK_USER_HOME (default: that user's home)
#   RK_API_PORT=6443  RK_RAFT_PORT=2380
#   RK_AGENT_RUNTIME=docker (written to agent.env; `simulated` runs no containers)
#   RK_SKIP_APT=1        install no Debian packages (and no Docker images)
#   RK_PIP=0             no pip install: RK_VENV must hold raftkube already (a test
#                        reuses its own venv: no network needed)
#   RK_PIP_OPTS          extra `pip install` options (e.g. --no-index --find-links DIR)
#   RK_SYSTEMD=auto|0    0: only write the units, never call systemctl (auto: call it
#                        when systemd runs, /run/systemd/system)
#   RK_WAIT=600          seconds a VM waits for the first master's secrets
#   RK_JOIN=1            this master replaces a destroyed one: it joins the running
#                        cluster (--initial-cluster-state existing; `rk member add` first)
set -euo pipefail

say() { echo "provision: $*" >&2; }
die() { say "error: $*"; exit 1; }

ROLE=${1:-}
case "$ROLE" in
  master | agent) ;;
  *) die "usage: provision.sh master|agent (got '${ROLE}')" ;;
esac

RK_NAME=${RK_NAME:-$(hostname -s)}
RK_ADDRESS=${RK_ADDRESS:-}
RK_MASTERS_ADDRESSES=${RK_MASTERS_ADDRESSES:-}
RK_WORKERS=${RK_WORKERS-w1,w2}  # empty: no workers
RK_SRC=${RK_SRC:-/vagrant}
RK_SHARED=${RK_SHARED:-$RK_SRC/.raftkube-cluster}
RK_PREFIX=${RK_PREFIX:-/opt/raftkube}
RK_VENV=${RK_VENV:-$RK_PREFIX/venv}
RK_ETC=${RK_ETC:-/etc/raftkube}
RK_DATA=${RK_DATA:-/var/lib/raftkube}
RK_SYSTEMD_DIR=${RK_SYSTEMD_DIR:-/etc/systemd/system}
RK_BIN_DIR=${RK_BIN_DIR:-/usr/local/bin}
RK_USER=${RK_USER:-vagrant}
RK_API_PORT=${RK_API_PORT:-6443}
RK_RAFT_PORT=${RK_RAFT_PORT:-2380}
RK_AGENT_RUNTIME=${RK_AGENT_RUNTIME:-docker}
RK_SKIP_APT=${RK_SKIP_APT:-0}
RK_PIP=${RK_PIP:-1}
RK_PIP_OPTS=${RK_PIP_OPTS:-}
RK_SYSTEMD=${RK_SYSTEMD:-auto}
RK_WAIT=${RK_WAIT:-600}
RK_JOIN=${RK_JOIN:-0}

[ -n "$RK_ADDRESS" ] || die "RK_ADDRESS: this VM's private address is required"
[ -n "$RK_MASTERS_ADDRESSES" ] || die "RK_MASTERS_ADDRESSES: the masters' addresses are required"
case "$RK_AGENT_RUNTIME" in
  docker | simulated) ;;
  *) die "RK_AGENT_RUNTIME: docker or simulated, got '${RK_AGENT_RUNTIME}'" ;;
esac
[ "$RK_ADDRESS" != 10.0.2.15 ] || die "RK_ADDRESS: 10.0.2.15 is Vagrant's NAT address; give the private one"
IFS=, read -r -a MASTERS <<<"$RK_MASTERS_ADDRESSES"
IFS=, read -r -a WORKERS <<<"$RK_WORKERS"
if [ "$ROLE" = master ]; then
  found=""
  for i in "${!MASTERS[@]}"; do
    [ "${MASTERS[$i]}" = "$RK_ADDRESS" ] && found=$i
  done
  [ -n "$found" ] || die "RK_ADDRESS: $RK_ADDRESS is not in RK_MASTERS_ADDRESSES ($RK_MASTERS_ADDRESSES)"
  [ "$RK_NAME" = "m$((found + 1))" ] || die "RK_NAME: master $RK_ADDRESS is m$((found + 1)), not $RK_NAME"
fi
if [ -z "${RK_USER_HOME:-}" ]; then
  RK_USER_HOME=$(getent passwd "$RK_USER" | cut -d: -f6) || die "RK_USER: no user $RK_USER"
fi

# ---- packages ------------------------------------------------------------------------
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "$@" >/dev/null \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq "$@" >/dev/null; } \
    || die "apt-get install $* failed"
}
if [ "$RK_SKIP_APT" != 1 ]; then
  pkgs=(python3-venv)
  [ "$ROLE" = agent ] && [ "$RK_AGENT_RUNTIME" = docker ] && pkgs+=(docker.io)
  missing=()
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then say "installing ${missing[*]}"; apt_install "${missing[@]}"; fi
  if [ "$ROLE" = agent ] && [ "$RK_AGENT_RUNTIME" = docker ]; then
    # The pods' sandbox image raftkube/pause:1 and busybox, made locally (no registry).
    bash "$RK_SRC/scripts/docker-setup.sh" >/dev/null
  fi
fi

# ---- raftkube in a venv --------------------------------------------------------------
if [ "$RK_PIP" != 0 ]; then
  [ -x "$RK_VENV/bin/python" ] || python3 -m venv "$RK_VENV"
  # From a private copy: pip builds in the source tree (build/, *.egg-info), and VMs
  # provisioned in parallel (libvirt) would build in the same shared folder at once.
  src=$(mktemp -d)
  tar -C "$RK_SRC" --exclude=./.venv --exclude=./.git --exclude=./.raftkube-cluster \
    --exclude=./build --exclude=./.vagrant --exclude='*.egg-info' -cf - . | tar -C "$src" -xf -
  say "pip install raftkube (from $RK_SRC) into $RK_VENV"
  # shellcheck disable=SC2086  # RK_PIP_OPTS is a list of options
  "$RK_VENV/bin/python" -m pip install --quiet $RK_PIP_OPTS "$src" || { rm -rf "$src"; die "pip install failed"; }
  rm -rf "$src"
fi
RK="$RK_VENV/bin/rk"
PY="$RK_VENV/bin/python"
[ -x "$RK" ] || die "RK_VENV: $RK is missing (RK_PIP=0 needs a venv with raftkube)"
mkdir -p "$RK_BIN_DIR"
ln -sfn "$RK" "$RK_BIN_DIR/rk"

# ---- the cluster's secrets: made once by m1, shared -----------------------------------
token() { "$PY" -c 'import secrets; print(secrets.token_urlsafe(32))'; }
put() {  # put FILE MODE: stdin into FILE atomically
  local tmp
  tmp=$(mktemp "$1.XXXXXX")
  cat >"$tmp"
  chmod "$2" "$tmp"
  mv -f "$tmp" "$1"
}
if [ "$ROLE" = master ] && [ "$RK_NAME" = m1 ]; then
  mkdir -p "$RK_SHARED/pki"
  chmod 700 "$RK_SHARED" "$RK_SHARED/pki" 2>/dev/null || true
  [ -s "$RK_SHARED/token" ] || token | put "$RK_SHARED/token" 600
  [ -s "$RK_SHARED/secret" ] || token | put "$RK_SHARED/secret" 600
  touch "$RK_SHARED/node-tokens"
  lines=$(cat "$RK_SHARED/node-tokens")
  for w in "${WORKERS[@]}"; do
    [ -n "$w" ] || continue
    grep -q ",$w\$" <<<"$lines" || lines+=$'\n'"$(token),$w"
  done
  { grep -v '^$' <<<"$lines" || true; } | put "$RK_SHARED/node-tokens" 600
  for i in "${!MASTERS[@]}"; do
    # Issued again only when it does not cover the address (rk certs keeps it otherwise).
    "$RK" certs --dir "$RK_SHARED/pki" --name "m$((i + 1))" --san "${MASTERS[$i]}" \
      --san "m$((i + 1))" >&2
  done
  date -u +%FT%TZ | put "$RK_SHARED/ready" 644
else
  waited=0
  until [ -f "$RK_SHARED/ready" ]; do
    [ "$waited" -lt "$RK_WAIT" ] || die "RK_SHARED: no $RK_SHARED/ready after ${RK_WAIT}s: provision m1 first, and share the folder both ways (RK_SYNC_TYPE in the Vagrantfile; rsync is one-way)"
    [ "$waited" -gt 0 ] || say "waiting for m1's secrets in $RK_SHARED"
    sleep 2
    waited=$((waited + 2))
  done
fi

# ---- this VM's files ---------------------------------------------------------------------
changed=0
install_file() {  # install_file MODE DEST < content: replaced (and noted) only if different
  local tmp
  tmp=$(mktemp "$2.XXXXXX")
  cat >"$tmp"
  if cmp -s "$tmp" "$2"; then rm -f "$tmp"; return 0; fi
  chmod "$1" "$tmp"
  mv -f "$tmp" "$2"
  changed=1
}
mkdir -p "$RK_ETC" "$RK_DATA" "$RK_SYSTEMD_DIR"
chmod 700 "$RK_ETC"
install_file 644 "$RK_ETC/ca.crt" <"$RK_SHARED/pki/ca.crt"
servers=()
for a in "${MASTERS[@]}"; do servers+=(--server "https://$a:$RK_API_PORT"); done

if [ "$ROLE" = master ]; then
  unit=raftkube-master
  install_file 600 "$RK_ETC/token" <"$RK_SHARED/token"
  install_file 600 "$RK_ETC/secret" <"$RK_SHARED/secret"
  install_file 600 "$RK_ETC/node-tokens" <"$RK_SHARED/node-tokens"
  install_file 644 "$RK_ETC/tls.crt" <"$RK_SHARED/pki/$RK_NAME.crt"
  install_file 600 "$RK_ETC/tls.key" <"$RK_SHARED/pki/$RK_NAME.key"
  if [ "$RK_JOIN" = 1 ]; then
    # A replacement of a destroyed master (`rk member add` first): it starts empty and
    # joins; with data, rk master ignores the flag, so it can stay.
    printf '%s\n' '# Extra rk master flags; this master joined a running cluster.' \
      'RK_MASTER_ARGS=--initial-cluster-state existing' | install_file 644 "$RK_ETC/master.env"
  elif [ ! -f "$RK_ETC/master.env" ]; then
    printf '%s\n' '# Extra rk master flags, e.g. RK_MASTER_ARGS=--node-monitor-grace-period 20' \
      'RK_MASTER_ARGS=' | install_file 644 "$RK_ETC/master.env"
  fi
  peers=""
  for a in "${MASTERS[@]}"; do
    [ "$a" = "$RK_ADDRESS" ] || peers+=" --peer $a:$RK_RAFT_PORT"
  done
  exec_start="$RK master --name $RK_NAME --api $RK_ADDRESS:$RK_API_PORT --raft $RK_ADDRESS:$RK_RAFT_PORT$peers --data-dir $RK_DATA/master --token-file $RK_ETC/token --secret-file $RK_ETC/secret --node-token-file $RK_ETC/node-tokens --tls-cert-file $RK_ETC/tls.crt --tls-private-key-file $RK_ETC/tls.key \$RK_MASTER_ARGS"
  # 3: the member refuses its data dir (raftkube/cli/master.py EXIT_DATA_DIR); restarting
  # cannot help, a human must look.
  no_restart=3
  env_file="$RK_ETC/master.env"
else
  unit=raftkube-agent
  line=$(grep ",$RK_NAME\$" "$RK_SHARED/node-tokens") \
    || die "RK_NAME: no node token for $RK_NAME in $RK_SHARED/node-tokens (provision the masters again with this worker counted in RK_WORKERS: they read node tokens when they start)"
  printf '%s\n' "$line" | install_file 600 "$RK_ETC/node-token"
  index=${RK_NAME//[!0-9]/}
  [ -n "$index" ] || die "RK_NAME: an agent's name ends in its number (w1, w2, ...), got $RK_NAME"
  printf '%s\n' \
    '# The container runtime (docker or simulated) and extra rk agent flags.' \
    "RK_AGENT_RUNTIME=$RK_AGENT_RUNTIME" \
    "RK_AGENT_ARGS=${RK_AGENT_ARGS:-}" | install_file 644 "$RK_ETC/agent.env"
  exec_start="$RK agent --name $RK_NAME --address $RK_ADDRESS ${servers[*]} --token-file $RK_ETC/node-token --ca-file $RK_ETC/ca.crt --pod-cidr 10.244.$index.0/24 --root-dir $RK_DATA/agent --runtime \${RK_AGENT_RUNTIME} \$RK_AGENT_ARGS"
  no_restart=""
  env_file="$RK_ETC/agent.env"
fi

{
  printf '%s\n' "[Unit]" "Description=raftkube $ROLE $RK_NAME ($RK_ADDRESS)" \
    "Documentation=file://$RK_SRC/README.md" \
    "Wants=network-online.target" "After=network-online.target"
  [ "$ROLE" = agent ] && [ "$RK_AGENT_RUNTIME" = docker ] && printf '%s\n' "After=docker.service" "Wants=docker.service"
  printf '%s\n' "" "[Service]" "EnvironmentFile=-$env_file" "ExecStart=$exec_start" \
    "Restart=on-failure" "RestartSec=2" "LimitNOFILE=65536"
  [ -z "$no_restart" ] || echo "RestartPreventExitStatus=$no_restart"
  printf '%s\n' "" "[Install]" "WantedBy=multi-user.target"
} | install_file 644 "$RK_SYSTEMD_DIR/$unit.service"

# ---- rk and kubectl for the user -----------------------------------------------------------
if [ "$ROLE" = master ]; then
  mkdir -p "$RK_USER_HOME/.raftkube" "$RK_USER_HOME/.kube"
  {
    echo "servers:"
    for a in "${MASTERS[@]}"; do echo "- https://$a:$RK_API_PORT"; done
    echo "token: $(cat "$RK_ETC/token")"
    echo "ca: |"
    sed 's/^/  /' "$RK_ETC/ca.crt"
  } | put "$RK_USER_HOME/.raftkube/config.yaml" 600
  RK_CONFIG="$RK_USER_HOME/.raftkube/config.yaml" "$RK" config kubeconfig \
    | put "$RK_USER_HOME/.kube/config" 600
  chown -R "$RK_USER:" "$RK_USER_HOME/.raftkube" "$RK_USER_HOME/.kube"
fi

# ---- systemd ----------------------------------------------------------------------------------
if [ "$RK_SYSTEMD" != 0 ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable --quiet "$unit.service"
  if [ "$changed" = 1 ]; then
    systemctl restart "$unit.service"
  else
    systemctl start "$unit.service"
  fi
  say "$unit.service running: $exec_start"
else
  say "wrote $RK_SYSTEMD_DIR/$unit.service (systemd not used: RK_SYSTEMD=$RK_SYSTEMD)"
fi

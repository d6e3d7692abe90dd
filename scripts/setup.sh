#!/usr/bin/env bash
# Installs what raftkube needs on a fresh machine, idempotently: a virtualenv in .venv
# with the package (editable) and its dev tools, and Debian's fuse3 (the power-cut tests
# run the masters' data on a FUSE filesystem, chaos/faultfs.py). Prints the python to use.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v fusermount3 >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq fuse3 >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq fuse3 >/dev/null 2>&1; } \
      || echo "setup: could not install fuse3; the FaultFS tests will fail" >&2
  else
    echo "setup: fuse3 is missing (apt-get install fuse3); the FaultFS tests will fail" >&2
  fi
fi
# kubectl drives the masters in the cluster tier (tests/cluster/test_kubectl_cluster.py):
# the one on the machine if there is one, else Debian's kubernetes-client.
if ! command -v kubectl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq kubernetes-client >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq kubernetes-client >/dev/null 2>&1; } \
      || echo "setup: could not install kubernetes-client; the kubectl tests will fail" >&2
  else
    echo "setup: kubectl is missing (apt-get install kubernetes-client); the kubectl tests will fail" >&2
  fi
fi
# The Vagrant path is checked without VMs (tests/unit/test_deploy_files.py): Debian's
# vagrant validates the Vagrantfile, shellcheck checks deploy/*.sh and scripts/*.sh.
for tool in vagrant shellcheck; do
  command -v "$tool" >/dev/null 2>&1 && continue
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "$tool" >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$tool" >/dev/null 2>&1; } \
      || echo "setup: could not install $tool; the deploy tests will fail" >&2
  else
    echo "setup: $tool is missing (apt-get install $tool); the deploy tests will fail" >&2
  fi
done
PY=${PYTHON:-python3}
# Debian's python3 makes no virtualenv without python3-venv (ensurepip).
if [ ! -x .venv/bin/python ] && ! "$PY" -c 'import ensurepip' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq python3-venv >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq python3-venv >/dev/null 2>&1; } \
      || echo "setup: could not install python3-venv" >&2
  else
    echo "setup: $PY cannot make a virtualenv (apt-get install python3-venv)" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv >&2
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip >&2
  .venv/bin/python -m pip install --quiet -e '.[dev]' >&2
  rm -f .venv/.installed-*
  touch "$stamp"
fi
echo "$PWD/.venv/bin/python"

#!/usr/bin/env bash
# The Docker engine and the local images that `rk agent --runtime docker` and the docker
# test tier need, idempotently:
#   - Debian's docker.io (and busybox-static, the images' one binary) if missing;
#   - dockerd started in the background when /var/run/docker.sock does not answer, its
#     log in $RK_DOCKERD_LOG (/var/log/raftkube-dockerd.log);
#   - images made with `docker import` (this machine reaches no registry) from a root
#     filesystem holding busybox and a symlink per applet: busybox:latest, busybox:1.36,
#     busybox:1.35, busybox:stable, raftkube/busybox:latest (the examples), and
#     raftkube/pause:1, the pods' sandbox, whose command sleeps until SIGTERM and then
#     exits 0. Images that exist are kept (all are made again if one is missing).
# Prints the pid of the dockerd it started on stdout (nothing if one was running already),
# so that a caller (scripts/test.sh) can stop it afterwards; everything else goes to stderr.
set -euo pipefail
LOG=${RK_DOCKERD_LOG:-/var/log/raftkube-dockerd.log}
PAUSE_IMAGE=raftkube/pause:1
BUSYBOX_TAGS="busybox:latest busybox:1.36 busybox:1.35 busybox:stable raftkube/busybox:latest"
say() { echo "docker-setup: $*" >&2; }

apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    say "missing: $*; install them (Debian: apt-get install $*)"; exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "$@" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$@" >/dev/null 2>&1; } \
    || { say "apt-get install $* failed"; exit 1; }
}

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker >/dev/null 2>&1 || need+=(docker.io)
# The images need the static busybox: Debian's `busybox` package (also /bin/busybox) is
# linked against a libc that the imported root filesystem does not have.
if command -v dpkg >/dev/null 2>&1; then
  dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
else
  [ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || need+=(busybox-static)
fi
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  apt_install "${need[@]}"
fi

answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

started=""
work=""
# On a failure after dockerd was started here, it is stopped again: the caller learns no
# pid to stop, so nothing would.
cleanup() {
  local rc=$?
  [ -z "$work" ] || rm -rf "$work"
  if [ "$rc" -ne 0 ] && [ -n "$started" ]; then kill -TERM "$started" 2>/dev/null || true; fi
}
trap cleanup EXIT
if ! answers; then
  say "starting dockerd (log: $LOG)"
  mkdir -p "$(dirname "$LOG")"
  # Its own session, so that it outlives this script and a Ctrl-C of the caller.
  setsid dockerd >>"$LOG" 2>&1 < /dev/null &
  started=$!
  for _ in $(seq 1 600); do
    answers && break
    if ! kill -0 "$started" 2>/dev/null; then
      say "dockerd exited; its log ends:"; tail -n 20 "$LOG" >&2; exit 1
    fi
    sleep 0.1
  done
  answers || { say "dockerd did not answer within 60 s; see $LOG"; exit 1; }
fi

have_images() {
  local tag
  for tag in $BUSYBOX_TAGS $PAUSE_IMAGE; do
    docker image inspect "$tag" >/dev/null 2>&1 || return 1
  done
}

if ! have_images; then
  say "building $BUSYBOX_TAGS $PAUSE_IMAGE from busybox-static"
  BUSYBOX=$(command -v busybox)
  work=$(mktemp -d)
  root=$work/rootfs
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,home,tmp,proc,sys,dev,var/www,var/run}
  chmod 1777 "$root/tmp"
  cp "$BUSYBOX" "$root/bin/busybox"
  for applet in $("$BUSYBOX" --list-full); do
    [ "$applet" = bin/busybox ] || ln -sf /bin/busybox "$root/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' \
    > "$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
  # The sandbox: PID 1 exits at SIGTERM (a PID 1 without a handler ignores it).
  cat > "$root/pause" <<'EOF'
#!/bin/sh
trap 'exit 0' TERM INT
while :; do sleep 86400 & wait $!; done
EOF
  chmod 755 "$root/pause"
  tar -C "$root" -c . | docker import --change 'CMD ["sh"]' - busybox:latest >/dev/null
  for tag in $BUSYBOX_TAGS; do
    [ "$tag" = busybox:latest ] || docker tag busybox:latest "$tag"
  done
  tar -C "$root" -c . | docker import --change 'CMD ["/pause"]' - "$PAUSE_IMAGE" >/dev/null
fi
[ -z "$started" ] || echo "$started"

#!/usr/bin/env bash
# Sets up a Docker-compatible container engine on a Debian machine without a Docker daemon:
# rootful podman with runc, a python base image built with debootstrap when none can be pulled,
# and the Docker API on a unix socket for docker-py and kfp.local.DockerRunner.
#
#   sudo .ci/local-engine.sh            # idempotent; prints the DOCKER_HOST to export
#   sudo .ci/local-engine.sh stop       # stops the API service it started
#
# Registry, mirror and certificates come from this machine's own configuration: the Debian
# mirror from its apt sources, extra CA certificates from /usr/local/share/ca-certificates.
set -euo pipefail

SOCKET=${VIDEOCLF_ENGINE_SOCKET:-/run/videoclf-engine/podman.sock}
PID_FILE=$(dirname "$SOCKET")/service.pid
PYTHON_IMAGE=docker.io/library/python:3.11-slim   # what the Dockerfiles' default BASE_IMAGE names
DEBIAN_IMAGE=localhost/debian:bookworm-slim
SUITE=bookworm
CONF=/etc/containers/containers.conf.d/videoclf.conf

log() { echo "local-engine: $*" >&2; }

if [[ ${1:-} == stop ]]; then
  if [[ -f $PID_FILE ]]; then kill "$(cat "$PID_FILE")" 2>/dev/null || true; rm -f "$PID_FILE"; fi
  log "API service stopped"
  exit 0
fi
[[ $(id -u) == 0 ]] || { log "run as root: rootful podman is the engine that works here"; exit 1; }

install_packages() {
  command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null && return
  log "installing podman, runc and debootstrap"
  local packages=(podman runc debootstrap uidmap slirp4netns fuse-overlayfs)
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${packages[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q "${packages[@]}" >/dev/null; }
}

# The engine's settings, from this machine's own limits and cgroup layout: a container's ulimits
# cannot exceed the hard limits here, and crun does not support hybrid cgroups.
configure_engine() {
  mkdir -p "$(dirname "$CONF")"
  local cgroup_manager=systemd nofile nproc
  local pid_max
  pid_max=$(cat /proc/sys/kernel/pid_max)
  nofile=$(ulimit -Hn); [[ $nofile == unlimited ]] && nofile=1048576
  nproc=$(ulimit -Hu); [[ $nproc == unlimited ]] && nproc=$pid_max
  nproc=$(( nproc < pid_max ? nproc : pid_max ))  # podman caps its own processes at pid_max
  [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs && -d /run/systemd/system ]] || cgroup_manager=cgroupfs
  cat >"$CONF.tmp" <<EOF
# Written by .ci/local-engine.sh
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "$cgroup_manager"
events_logger = "file"
EOF
  mv "$CONF.tmp" "$CONF"
}

# The Debian mirror that apt here already uses, from deb822 .sources or one-line .list files.
debian_mirror() {
  local mirror
  mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [[ -n $mirror ]] || mirror=$(awk '$1 == "deb" && $0 ~ / '"$SUITE"' / && $0 !~ /security/ {
      for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
  [[ -n $mirror ]] || { log "no Debian mirror found in /etc/apt/sources.list*"; exit 1; }
  echo "$mirror"
}

build_debian_image() {
  local rootfs mirror
  rootfs=$(mktemp -d /var/tmp/videoclf-rootfs.XXXXXX)
  mirror=$(debian_mirror)
  log "building $DEBIAN_IMAGE with debootstrap from $mirror (about a minute)"
  debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  printf 'deb %s %s main\n' "$mirror" "$SUITE" "$mirror" "$SUITE-updates" >"$rootfs"/etc/apt/sources.list
  mkdir -p "$rootfs"/usr/local/share/ca-certificates
  cp /usr/local/share/ca-certificates/*.crt "$rootfs"/usr/local/share/ca-certificates/ 2>/dev/null || true
  tar --numeric-owner -C "$rootfs" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' - "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$rootfs"
}

# Debian's Python in a virtual environment first on PATH, as python:3.11-slim has it first.
# pip reads the system CA bundle, which holds this machine's extra certificates.
build_python_image() {
  local context
  context=$(mktemp -d)
  log "building $PYTHON_IMAGE from $DEBIAN_IMAGE"
  podman build -q -t "$PYTHON_IMAGE" -f - "$context" >/dev/null <<EOF
FROM $DEBIAN_IMAGE
ENV PATH=/usr/local/python/bin:\$PATH PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* && python3 -m venv /usr/local/python \
    && pip install --quiet --no-cache-dir --upgrade pip
EOF
  rmdir "$context"
}

base_image() {
  podman image exists "$PYTHON_IMAGE" && return
  if timeout 60 podman pull -q "$PYTHON_IMAGE" >/dev/null 2>&1; then return; fi
  log "$PYTHON_IMAGE cannot be pulled"
  podman image exists "$DEBIAN_IMAGE" || build_debian_image
  build_python_image
}

start_service() {
  if [[ -f $PID_FILE ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null && [[ -S $SOCKET ]]; then return; fi
  mkdir -p "$(dirname "$SOCKET")"
  rm -f "$SOCKET"
  nohup podman system service --time=0 "unix://$SOCKET" >"$(dirname "$SOCKET")/service.log" 2>&1 &
  echo $! >"$PID_FILE"
  for _ in $(seq 50); do [[ -S $SOCKET ]] && return; sleep 0.2; done
  log "the API service did not start: see $(dirname "$SOCKET")/service.log"; exit 1
}

install_packages
configure_engine
base_image
podman run --rm "$PYTHON_IMAGE" python3 -c pass \
  || { log "podman cannot run $PYTHON_IMAGE: see the settings in $CONF"; exit 1; }
start_service
log "ready: podman $(podman version --format '{{.Client.Version}}'), API on $SOCKET"
echo "export DOCKER_HOST=unix://$SOCKET"

#!/usr/bin/env bash
# A Docker engine for kind, on a machine that may have none: when `docker info` fails,
# install Debian's docker.io (and what the kind scripts need beside it) and start dockerd
# in the background. These VMs have no systemd, so the package's own start is refused
# (policy-rc.d) and dockerd is started by hand; its log is $STATE/dockerd.log.
#
# Why a runtime wrapper: this VM's capability bounding set lacks CAP_SYS_RESOURCE. Docker
# 20.10 hands a --privileged container every capability it knows, and runc then fails with
# "unable to apply caps: operation not permitted" (kind's nodes are all --privileged). So,
# only when the bounding set is short of a capability, dockerd's default runtime is a small
# wrapper that removes the missing ones from the OCI spec before it execs runc. Nothing else
# is changed: a machine with a full bounding set gets plain runc.
#
# Exit status 0 and one line on stdout ("docker <server version> <storage> cgroup v<n>")
# when an engine answers; 1 with the reason on stderr when none can be had (the caller, e.g.
# tests/kind, reports it as its skip reason).
set -euo pipefail
STATE="${KUBENOVA_CACHE:-$HOME/.cache/kubenova}/docker"
log() { echo "docker-engine: $*" >&2; }

answers() { timeout 20 docker info >/dev/null 2>&1; }
report() { docker info --format 'docker {{.ServerVersion}} {{.Driver}} cgroup v{{.CgroupVersion}}'; }

if command -v docker >/dev/null && answers; then report; exit 0; fi

if [[ "$(id -u)" != 0 ]]; then
  log "no Docker engine answers and this is not root: cannot install or start one"
  exit 1
fi

packages=()
command -v dockerd >/dev/null || [[ -x /usr/sbin/dockerd ]] || packages+=(docker.io)
command -v debootstrap >/dev/null || packages+=(debootstrap)
command -v jq >/dev/null || packages+=(jq)
[[ -x /bin/busybox ]] || packages+=(busybox-static)
if ((${#packages[@]})); then
  log "installing ${packages[*]} (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq "${packages[@]}" >/dev/null; }; then
    log "apt-get install ${packages[*]} failed"
    exit 1
  fi
fi

# Capabilities 0..40 (CAP_LAST_CAP of the kernels docker 20.10 knows) by bit number.
CAPS=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
  LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER
  SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE
  SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP
  MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF
  CHECKPOINT_RESTORE)
bounding=$((16#$(awk '/^CapBnd:/ {print $2}' /proc/self/status)))
missing=()
for bit in "${!CAPS[@]}"; do
  (( (bounding >> bit) & 1 )) || missing+=("CAP_${CAPS[bit]}")
done

mkdir -p "$STATE" /etc/docker
if ((${#missing[@]})); then
  log "the capability bounding set lacks ${missing[*]}: dockerd runs runc through $STATE/runc-wrapper"
  cat >"$STATE/runc-wrapper" <<EOF
#!/bin/sh
# Written by kubenova's hack/docker-engine.sh: removes capabilities this machine's bounding
# set lacks (${missing[*]}) from the OCI bundle or exec process spec, then runs runc.
DROP='$(printf '%s\n' "${missing[@]}" | jq -R . | jq -cs .)'
EOF
  cat >>"$STATE/runc-wrapper" <<'EOF'
spec=""; previous=""
for arg in "$@"; do
  case "$previous" in --bundle|-b) spec="$arg/config.json" ;; --process|-p) spec="$arg" ;; esac
  case "$arg" in --bundle=*) spec="${arg#--bundle=}/config.json" ;; --process=*) spec="${arg#--process=}" ;; esac
  previous="$arg"
done
if [ -n "$spec" ] && [ -f "$spec" ]; then
  jq --argjson drop "$DROP" '
    def strip: with_entries(.value |= (if type == "array" then map(select(. as $c | $drop | index($c) | not)) else . end));
    if has("process") then (if .process.capabilities then .process.capabilities |= strip else . end)
    else (if .capabilities then .capabilities |= strip else . end) end' "$spec" >"$spec.kubenova" \
    && mv "$spec.kubenova" "$spec" || rm -f "$spec.kubenova"
fi
exec /usr/sbin/runc "$@"
EOF
  chmod 0755 "$STATE/runc-wrapper"
  printf '{"runtimes": {"kubenova-runc": {"path": "%s"}}, "default-runtime": "kubenova-runc"}\n' \
    "$STATE/runc-wrapper" >/etc/docker/daemon.json
fi

log "starting dockerd (log: $STATE/dockerd.log)"
dockerd="$(command -v dockerd || echo /usr/sbin/dockerd)"
nohup "$dockerd" >>"$STATE/dockerd.log" 2>&1 &
echo $! >"$STATE/dockerd.pid"
for _ in $(seq 60); do
  if answers; then report; exit 0; fi
  kill -0 "$(cat "$STATE/dockerd.pid")" 2>/dev/null || break
  sleep 1
done
log "dockerd did not answer; the end of its log:"
tail -n 20 "$STATE/dockerd.log" >&2
exit 1

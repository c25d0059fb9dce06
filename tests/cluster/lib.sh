# Shared paths for tests/cluster/{up,down,build}. Sourced, not run.
CLUSTER_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$CLUSTER_SCRIPTS/versions.env"
CACHE=${IMAGEJOB_CACHE:-$HOME/.cache/imagejob-operator}
BIN=$CACHE/bin
STATE=$CACHE/cluster
LOGS=$STATE/logs
ETCD_PORT=${IMAGEJOB_ETCD_PORT:-23790}
ETCD_PEER_PORT=${IMAGEJOB_ETCD_PEER_PORT:-23800}
APISERVER_PORT=${IMAGEJOB_APISERVER_PORT:-16443}
KUBECONFIG_PATH=$STATE/admin.kubeconfig

log() { printf '[cluster] %s\n' "$*" >&2; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Stops etcd and kube-apiserver and drops etcd's data (callers hold the lock).
stop_cluster() {
  local name f pid
  for name in kube-apiserver etcd; do
    f=$STATE/$name.pid
    if pid_alive "$f"; then
      pid=$(cat "$f")
      # Either may already have exited: that must not trip `set -e`.
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
  rm -rf "$STATE/etcd-data"
}

# Serialises up/down: parallel test binaries and developers share one cluster.
lock_cluster() {
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  flock 9
}

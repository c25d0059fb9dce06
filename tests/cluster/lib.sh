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

# Shared paths for tests/cluster/{up,down,build,image}. Sourced, not run.
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

# The node (`up --node`). Everything a second cluster on the same machine
# would clash with derives from one index, by default a hash of the cache
# directory: Pods get 198.18.N.0/24, Services 198.19.N.0/24 (both inside
# 198.18.0.0/15, reserved for network tests and never routed outside).
NET_INDEX=${IMAGEJOB_NET_INDEX:-$(($(printf %s "$CACHE" | cksum | cut -d' ' -f1) % 250 + 2))}
POD_CIDR=198.18.$NET_INDEX.0/24
SERVICE_CIDR=198.19.$NET_INDEX.0/24
KUBERNETES_SERVICE_IP=198.19.$NET_INDEX.1
NODE_IP=198.18.$NET_INDEX.1 # the bridge's address: kubelet and Pods reach the host here
NODE_NAME=imagejob-node
BRIDGE=ijbr$NET_INDEX
FW_CHAIN=IMAGEJOB-FWD-$NET_INDEX
CGROUP=imagejob-$NET_INDEX             # kubelet's cgroupRoot: every Pod process is below it
RUNTIME_CGROUP=imagejob-$NET_INDEX-rt  # containerd and its shims
NODE_STATE=$STATE/node                 # kubelet, CNI and containerd state; removed by down
CONTAINERD_ROOT=$CACHE/containerd      # imported images; kept like the tools
CONTAINERD_SOCK=$NODE_STATE/containerd.sock
SANDBOX_IMAGE=imagejob.local/pause:$PAUSE_VERSION
# The node's OCI registry (Debian's docker-registry, Distribution 2.8): plain
# HTTP on the node address only; its blobs are kept like the images.
REGISTRY_PORT=${IMAGEJOB_REGISTRY_PORT:-5000}
REGISTRY=$NODE_IP:$REGISTRY_PORT
REGISTRY_ROOT=$CACHE/registry
NODE_PARTS="kube-proxy kubelet kube-scheduler kube-controller-manager apiserver-forward containerd registry"

log() { printf '[cluster] %s\n' "$*" >&2; }

# A zombie (killed, not yet reaped by whoever adopted it) is not alive. With
# a name ($2), neither is a process of another name: its pid was reused.
pid_alive() {
  local pid
  [ -f "$1" ] && pid=$(cat "$1") && kill -0 "$pid" 2>/dev/null &&
    ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null &&
    { [ -z "${2:-}" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]; }
}

# SIGTERM, up to 10 s, then SIGKILL; removes the pid file. With a name ($2),
# only a process of that name is stopped.
stop_pid_file() {
  local f=$1 pid
  if pid_alive "$f" "${2:-}"; then
    pid=$(cat "$f")
    # It may already have exited: that must not trip `set -e`.
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
    # Gone (or a zombie) before anyone binds its ports again.
    for _ in $(seq 1 20); do pid_alive "$f" || break; sleep 0.25; done
  fi
  rm -f "$f"
}

any_alive() {
  local p
  for p in "$@"; do kill -0 "$p" 2>/dev/null && return 0; done
  return 1
}

# The same for several pid files at once (they stop in parallel).
stop_pid_files() {
  local f pids=()
  for f in "$@"; do pid_alive "$f" && pids+=("$(cat "$f")"); done
  if [ ${#pids[@]} -gt 0 ]; then
    kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 1 40); do any_alive "${pids[@]}" || break; sleep 0.25; done
    kill -9 "${pids[@]}" 2>/dev/null || true
  fi
  rm -f "$@"
}

# Stops etcd and kube-apiserver and drops etcd's data (callers hold the lock).
stop_cluster() {
  local name
  for name in kube-apiserver etcd; do stop_pid_file "$STATE/$name.pid" "$name"; done
  rm -rf "$STATE/etcd-data"
}

# The mounted cgroup hierarchies (v1: one per controller; the v2 one too).
cgroup_hierarchies() { awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/mounts; }

# Pids in a cgroup and all cgroups below it, in every hierarchy.
cgroup_pids() {
  local h
  for h in $(cgroup_hierarchies); do
    [ -d "$h/$1" ] && find "$h/$1" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}

# Stops the node: its processes by pid file, then every process left in its
# cgroups (Pods, shims), its mounts, network and cgroups. Safe to repeat.
stop_node() {
  local name pid m
  [ -d "$NODE_STATE" ] || [ -d "/sys/fs/cgroup/pids/$CGROUP" ] || ip link show "$BRIDGE" >/dev/null 2>&1 || return 0
  stop_pid_files $(for name in $NODE_PARTS; do echo "$STATE/$name.pid"; done)
  for _ in 1 2 3; do
    pid=$(cgroup_pids "$CGROUP"; cgroup_pids "$RUNTIME_CGROUP")
    [ -z "$pid" ] && break
    # shellcheck disable=SC2086
    kill -9 $pid 2>/dev/null
    sleep 0.5
  done
  # Pod volumes, container root filesystems, shm and netns mounts: deepest first.
  for m in $(awk -v d="$NODE_STATE/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount -l "$m" 2>/dev/null
  done
  for m in $(awk -v d="$CONTAINERD_ROOT/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount -l "$m" 2>/dev/null
  done
  remove_pod_netns
  ip link delete "$BRIDGE" 2>/dev/null
  iptables -D FORWARD -j "$FW_CHAIN" 2>/dev/null
  iptables -F "$FW_CHAIN" 2>/dev/null && iptables -X "$FW_CHAIN" 2>/dev/null
  flush_kube_proxy_rules
  if [ -f "$STATE/ip_forward.before" ]; then
    cat "$STATE/ip_forward.before" >/proc/sys/net/ipv4/ip_forward
    rm -f "$STATE/ip_forward.before"
  fi
  for m in $(cgroup_hierarchies); do
    for name in "$CGROUP" "$RUNTIME_CGROUP"; do
      [ -d "$m/$name" ] && find "$m/$name" -depth -type d -exec rmdir {} + 2>/dev/null
    done
  done
  rm -rf "$NODE_STATE"
}

# Network namespaces the CNI made for our Pods: the bridge's veth peers tell
# which ones (each netns holds an address from our Pod range).
remove_pod_netns() {
  local ns
  [ -d /run/netns ] || return 0
  for ns in /run/netns/cni-*; do
    [ -e "$ns" ] || continue
    if ip -n "$(basename "$ns")" -4 addr show 2>/dev/null | grep -q "inet 198\.18\.$NET_INDEX\."; then
      umount -l "$ns" 2>/dev/null
      rm -f "$ns"
    fi
  done
}

# kube-proxy's own cleanup mode removes the chains and rules it created;
# kubelet's (its localnet firewall and canaries) are removed here. Both
# names are fixed by Kubernetes: one node per machine at a time.
flush_kube_proxy_rules() {
  local ipt t c
  if [ -x "$BIN/kube-proxy" ] && [ -f "$NODE_STATE/kube-proxy.yaml" ]; then
    "$BIN/kube-proxy" --config "$NODE_STATE/kube-proxy.yaml" --cleanup >>"$LOGS/kube-proxy-cleanup.log" 2>&1 || true
  fi
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    $ipt -D INPUT -j KUBE-FIREWALL 2>/dev/null
    $ipt -D OUTPUT -j KUBE-FIREWALL 2>/dev/null
    for t in filter nat mangle; do
      for c in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
        $ipt -t "$t" -F "$c" 2>/dev/null && $ipt -t "$t" -X "$c" 2>/dev/null
      done
    done
  done
}

# Serialises up/down: parallel test binaries and developers share one cluster.
lock_cluster() {
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  flock 9
}

# One real node for `tests/cluster/up --node`. Sourced by up (after lib.sh,
# holding the lock, with the control plane ready); not run on its own.
#
# containerd (Debian's) with root, state and socket under the cache, runc,
# the CNI bridge + host-local plugins, kubelet, kube-proxy (iptables),
# kube-controller-manager, kube-scheduler and an OCI registry on the node
# address (docker-registry; containerd pulls from it over plain HTTP, told by
# certs.d/<host:port>/hosts.toml). Each is started here and
# stopped by pid in lib.sh's stop_node. Pods live on $BRIDGE in $POD_CIDR with
# no default route and no masquerading; a FORWARD rule drops anything between
# the bridge and another interface, so nothing leaves the machine.

NODE_PACKAGES="containerd runc containernetworking-plugins iptables conntrack socat docker-registry"
CNI_BIN=/usr/lib/cni

# Debian packages the node needs; apt only when one is missing.
ensure_node_packages() {
  local p missing=()
  for p in $NODE_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing ${missing[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

node_kubectl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

# The bridge (its address is the node IP and the Pods' gateway), a route that
# keeps Service IPs on it, forwarding only within it.
node_network() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$NODE_IP/24" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
  ip route replace "$SERVICE_CIDR" dev "$BRIDGE" src "$NODE_IP"
  # A Pod reaching a Service backed by a Pod on the same bridge: iptables
  # must see bridged traffic, and the host routes bridge to bridge.
  echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
  [ -f "$STATE/ip_forward.before" ] || cat /proc/sys/net/ipv4/ip_forward >"$STATE/ip_forward.before"
  echo 1 >/proc/sys/net/ipv4/ip_forward
  iptables -N "$FW_CHAIN" 2>/dev/null || iptables -F "$FW_CHAIN"
  iptables -A "$FW_CHAIN" -i "$BRIDGE" ! -o "$BRIDGE" -j DROP
  iptables -A "$FW_CHAIN" -o "$BRIDGE" ! -i "$BRIDGE" -j DROP
  iptables -C FORWARD -j "$FW_CHAIN" 2>/dev/null || iptables -I FORWARD 1 -j "$FW_CHAIN"
}

# cgroups for kubelet's Pods ($CGROUP) and for containerd and its shims
# ($RUNTIME_CGROUP), so down finds every process they started.
node_cgroups() {
  local h name
  for h in $(cgroup_hierarchies); do
    for name in "$CGROUP" "$RUNTIME_CGROUP"; do
      mkdir -p "$h/$name"
      if [ -f "$h/cpuset.cpus" ]; then
        cat "$h/cpuset.cpus" >"$h/$name/cpuset.cpus"
        cat "$h/cpuset.mems" >"$h/$name/cpuset.mems"
      fi
    done
  done
}

# Writes stdin to FILE only when it differs: kube-proxy exits when its
# configuration file changes, and `up --node` runs again on a running node.
put() {
  local tmp
  tmp=$(mktemp "$1.XXXX")
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}

node_configs() {
  local d=$NODE_STATE
  mkdir -p "$d/cni/net.d" "$d/kubelet" "$CONTAINERD_ROOT"
  put "$d/containerd.toml" <<EOF
version = 2
root = "$CONTAINERD_ROOT/root"
state = "$d/containerd"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$CONTAINERD_ROOT/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$SANDBOX_IMAGE"
  # The VM refuses to lower oom_score_adj; without this runc fails every sandbox.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  # hosts.toml per registry: the node's own registry over plain HTTP.
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$d/certs.d"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$d/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
EOF
  mkdir -p "$d/certs.d/$REGISTRY"
  put "$d/certs.d/$REGISTRY/hosts.toml" <<EOF
server = "http://$REGISTRY"
[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve"]
EOF
  put "$d/registry.yml" <<EOF
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $REGISTRY_ROOT}
  delete: {enabled: true}
http:
  addr: $REGISTRY
  headers: {X-Content-Type-Options: [nosniff]}
EOF
  put "$d/cni/net.d/10-imagejob.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "imagejob-$NET_INDEX",
  "plugins": [{
    "type": "bridge",
    "bridge": "$BRIDGE",
    "isGateway": true,
    "isDefaultGateway": false,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "dataDir": "$d/cni/ipam",
      "ranges": [[{"subnet": "$POD_CIDR", "rangeStart": "198.18.$NET_INDEX.10", "gateway": "$NODE_IP"}]],
      "routes": [{"dst": "198.18.0.0/15"}]
    }
  }, {
    "type": "portmap",
    "capabilities": {"portMappings": true}
  }]
}
EOF
  put "$d/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 with no systemd running: cgroupfs, and v1 explicitly allowed.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
cgroupRoot: /$CGROUP
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: $NODE_IP
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $STATE/pki/ca.crt}
authorization: {mode: AlwaysAllow}
# Only locally imported images exist: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Absolute floors: a shared dev disk that is nearly full must not evict test Pods.
evictionHard: {memory.available: 100Mi, nodefs.available: 256Mi, imagefs.available: 256Mi, nodefs.inodesFree: 1%}
serializeImagePulls: false
EOF
  put "$d/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $KUBECONFIG_PATH}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: $NODE_IP:10256
metricsBindAddress: $NODE_IP:10249
nodePortAddresses: ["$NODE_IP/32"]
# Leave the host's conntrack sysctls alone.
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false}
EOF
}

# Starts one node part in the background, its pid in $STATE/NAME.pid.
start_part() {
  local name=$1
  shift
  setsid "$@" </dev/null >"$LOGS/$name.log" 2>&1 9>&- &
  echo $! >"$STATE/$name.pid"
}

wait_for() {
  local what=$1 pidname=$2 i
  shift 2
  for i in $(seq 1 240); do
    "$@" >/dev/null 2>&1 && return 0
    pid_alive "$STATE/$pidname.pid" || node_fail "$pidname exited while waiting for $what"
    sleep 0.25
  done
  node_fail "timed out waiting for $what"
}

node_fail() {
  log "$1; logs: $LOGS"
  tail -n 20 "$LOGS"/{containerd,kubelet,kube-proxy,kube-controller-manager,kube-scheduler}.log >&2 2>/dev/null || true
  exit 1
}

ctr_k8s() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# The sandbox image: the static pause binary as a one-layer OCI image.
import_pause() {
  ctr_k8s images ls -q | grep -qxF "$SANDBOX_IMAGE" && return
  local root
  root=$(mktemp -d)
  install -D -m 0755 "$BIN/pause" "$root/pause"
  . "$CLUSTER_SCRIPTS/oci.sh"
  oci_archive "$root" "$NODE_STATE/pause.tar" "$SANDBOX_IMAGE" \
    '{"Entrypoint": ["/pause"], "User": "65535:65535"}'
  rm -rf "$root"
  ctr_k8s images import "$NODE_STATE/pause.tar" >&2
}

start_containerd() {
  # A containerd started with an older configuration (before the registry)
  # restarts; its shims and containers keep running.
  if pid_alive "$STATE/containerd.pid"; then
    cmp -s "$NODE_STATE/containerd.toml" "$NODE_STATE/containerd.toml.running" && return
    log "containerd's configuration changed: restarting it"
    stop_pid_file "$STATE/containerd.pid"
  fi
  rm -f "$CONTAINERD_SOCK"
  cp "$NODE_STATE/containerd.toml" "$NODE_STATE/containerd.toml.running"
  # Joins its own cgroup first: the shims it starts stay there.
  start_part containerd bash -c 'echo $$ >"$1/cgroup.procs" && exec containerd --config "$2"' \
    containerd "/sys/fs/cgroup/pids/$RUNTIME_CGROUP" "$NODE_STATE/containerd.toml"
  wait_for "containerd's socket" containerd ctr --address "$CONTAINERD_SOCK" version
}

registry_up() { curl -fsS --max-time 2 "http://$REGISTRY/v2/" >/dev/null; }

# The registry `release --push` pushes to and the node pulls from.
start_registry() {
  pid_alive "$STATE/registry.pid" && return
  mkdir -p "$REGISTRY_ROOT"
  start_part registry docker-registry serve "$NODE_STATE/registry.yml"
  wait_for "the registry at $REGISTRY" registry registry_up
}

start_node() {
  local start_node_at
  start_node_at=$(date +%s)
  ensure_node_packages
  mkdir -p "$NODE_STATE"
  node_network
  node_cgroups
  node_configs
  start_containerd
  start_registry
  # Every time: kubelet's image GC under disk pressure can remove it.
  import_pause
  local p=$STATE/pki
  # Pods reach the API server at the kubernetes Service, whose endpoint is
  # the node IP (loopback is not a valid endpoint); this forwards it to the
  # API server's loopback port.
  pid_alive "$STATE/apiserver-forward.pid" ||
    start_part apiserver-forward socat "TCP-LISTEN:$APISERVER_PORT,bind=$NODE_IP,reuseaddr,fork" \
      "TCP:127.0.0.1:$APISERVER_PORT"
  pid_alive "$STATE/kube-controller-manager.pid" ||
    start_part kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$KUBECONFIG_PATH" \
      --secure-port 0 --leader-elect=false --root-ca-file "$p/ca.crt" \
      --service-account-private-key-file "$p/sa.key" --use-service-account-credentials=false \
      --cluster-signing-cert-file "$p/ca.crt" --cluster-signing-key-file "$p/ca.key" \
      --controllers '*,-nodeipam,-cloud-node-lifecycle'
  pid_alive "$STATE/kube-scheduler.pid" ||
    start_part kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$KUBECONFIG_PATH" \
      --secure-port 0 --leader-elect=false
  pid_alive "$STATE/kubelet.pid" ||
    start_part kubelet "$BIN/kubelet" --config "$NODE_STATE/kubelet.yaml" --kubeconfig "$KUBECONFIG_PATH" \
      --root-dir "$NODE_STATE/kubelet" --cert-dir "$NODE_STATE/kubelet/pki" \
      --hostname-override "$NODE_NAME" --node-ip "$NODE_IP"
  pid_alive "$STATE/kube-proxy.pid" ||
    start_part kube-proxy "$BIN/kube-proxy" --config "$NODE_STATE/kube-proxy.yaml"
  wait_for "node $NODE_NAME Ready" kubelet \
    bash -c '[ "$("$1" --kubeconfig "$2" get node "$3" -o jsonpath="{.status.conditions[?(@.type==\"Ready\")].status}")" = True ]' \
    _ "$BIN/kubectl" "$KUBECONFIG_PATH" "$NODE_NAME"
  # Pods in a new namespace need its default ServiceAccount and root CA.
  wait_for "the default ServiceAccount" kube-controller-manager node_kubectl get serviceaccount default -n default
  log "node $NODE_NAME ready in $(($(date +%s) - start_node_at))s (Pods $POD_CIDR, Services $SERVICE_CIDR, registry $REGISTRY)"
}

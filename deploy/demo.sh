#!/usr/bin/env bash
# The whole operator on one machine, in one command: a Kubernetes API server
# (yours, if KUBECONFIG points at a reachable one, else the local etcd +
# kube-apiserver of tests/cluster/up), ims-sim with its built-in scenario,
# the operator running locally, and the ImageJobs of deploy/examples/ until
# each has Succeeded or Failed.
#
#   deploy/demo.sh                  run, watch, summarise, stop what it started
#   deploy/demo.sh --no-wait        set everything up and leave it running
#   deploy/demo.sh --keep-running   watch to the end, leave it running
#                                   (same as DEMO_KEEP_RUNNING=1)
#
# Environment: KUBECONFIG (a cluster to use), KUBECTL (a kubectl binary),
# DEMO_TIMEOUT (seconds to wait for the jobs, default 180).
# The local cluster is left running; stop it with tests/cluster/down.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
ns=imagejob-demo
keep=${DEMO_KEEP_RUNNING:-0}
wait_jobs=1
timeout=${DEMO_TIMEOUT:-180}
for arg in "$@"; do
  case $arg in
    --no-wait) wait_jobs=0; keep=1 ;;
    --keep-running) keep=1 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

start=$(date +%s)
if [ -t 2 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
say() { printf '%s[demo %3ss]%s %s\n' "$bold" "$(( $(date +%s) - start ))" "$plain" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

cache=${IMAGEJOB_CACHE:-$HOME/.cache/imagejob-operator}
work=$(mktemp -d "${TMPDIR:-/tmp}/imagejob-demo.XXXXXX")
pids=()
cleanup() {
  local rc=$?
  if [ "$keep" = 1 ]; then
    return
  fi
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ $rc -eq 0 ]; then rm -rf "$work"; fi
  if [ ${#pids[@]} -gt 0 ]; then say "stopped the operator and ims-sim"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- kubectl: $KUBECTL, else one on PATH, else the one tests/cluster/build made.
if [ -n "${KUBECTL:-}" ]; then
  kubectl=$KUBECTL
elif command -v kubectl >/dev/null; then
  kubectl=$(command -v kubectl)
else
  kubectl=$cache/bin/kubectl
fi
k() { "$kubectl" "$@"; }

# --- cluster: only an explicitly chosen KUBECONFIG is used, never a default
# context that might be production.
if [ -n "${KUBECONFIG:-}" ] && command -v "$kubectl" >/dev/null && k get --raw=/readyz --request-timeout=5s >/dev/null 2>&1; then
  say "using the cluster of KUBECONFIG=$KUBECONFIG"
  local_cluster=0
else
  if [ -n "${KUBECONFIG:-}" ]; then
    say "KUBECONFIG=$KUBECONFIG is not reachable with $kubectl; using the local cluster instead"
  fi
  say "starting the local etcd + kube-apiserver (tests/cluster/up; the first run builds them from source)"
  KUBECONFIG=$(bash tests/cluster/up | tail -n 1)
  export KUBECONFIG
  local_cluster=1
  command -v "$kubectl" >/dev/null || kubectl=$cache/bin/kubectl
fi
k version --request-timeout=10s >/dev/null 2>&1 || die "kubectl ($kubectl) cannot reach the cluster"

# --- binaries: a debug build. `cargo test` builds the same profile, so this
# usually reuses its artifacts; a release build (thin LTO) takes minutes on a
# small machine and gains nothing here, where the operator waits on HTTP.
say "building imagejob-operator and ims-sim (cargo build --bins)"
cargo build --bins --quiet
bin=${CARGO_TARGET_DIR:-$root/target}/debug
if [ ! -x "$bin/imagejob-operator" ] || [ ! -x "$bin/ims-sim" ]; then die "binaries not found in $bin"; fi

# --- ims-sim with its built-in scenario, on a free loopback port.
say "starting ims-sim (built-in scenario: src/sim/default-scenario.yaml)"
setsid "$bin/ims-sim" --listen 127.0.0.1:0 </dev/null >"$work/ims-sim.out" 2>"$work/ims-sim.log" &
pids+=($!)
sim_url=
for _ in $(seq 1 100); do
  sim_url=$(sed -n 's/^ims-sim listening on //p' "$work/ims-sim.out" 2>/dev/null)
  [ -n "$sim_url" ] && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/ims-sim.log" >&2; die "ims-sim exited"; }
  sleep 0.1
done
[ -n "$sim_url" ] || die "ims-sim did not start; log: $work/ims-sim.log"
say "ims-sim serves IMS and IAM at $sim_url"

# --- the CRD, then a namespace with the example Secrets and ImageJobs.
k apply --server-side --force-conflicts --field-manager=imagejob-demo -f crds/imagejob.yaml >/dev/null
k wait --for=condition=Established crd/imagejobs.ims.otc.io --timeout=60s >/dev/null
say "CRD imagejobs.ims.otc.io is Established"
k create namespace "$ns" --dry-run=client -o yaml | k apply -f - >/dev/null
# ImageJobs of an earlier run are finished and would not be polled again.
k delete imagejobs --all -n "$ns" --wait=true >/dev/null

# --- the operator, scoped to the demo namespace so that it never reads
# Secrets or ImageJobs elsewhere on a shared cluster.
say "starting the operator (watching namespace $ns, polling every 2s)"
setsid "$bin/imagejob-operator" run \
  --ims-endpoint "$sim_url" --iam-endpoint "$sim_url" \
  --poll-interval 2s --http-addr 127.0.0.1:0 \
  --watch-namespace "$ns" --log-format json \
  </dev/null >"$work/operator.log" 2>&1 &
pids+=($!)
metrics_addr=
for _ in $(seq 1 100); do
  metrics_addr=$(grep -o '"addr":"127\.0\.0\.1:[0-9]*' "$work/operator.log" 2>/dev/null | head -n 1 | cut -d'"' -f4 || true)
  [ -n "$metrics_addr" ] && break
  kill -0 "${pids[1]}" 2>/dev/null || { cat "$work/operator.log" >&2; die "the operator exited"; }
  sleep 0.1
done
[ -n "$metrics_addr" ] && say "operator metrics: http://$metrics_addr/metrics"

say "applying deploy/examples/ to namespace $ns"
k apply -n "$ns" -f deploy/examples/ | sed 's/^/    /' >&2

if [ "$wait_jobs" = 0 ]; then
  say "left running (--no-wait): ims-sim pid ${pids[0]}, operator pid ${pids[1]}; logs in $work"
  say "watch:  KUBECONFIG=$KUBECONFIG $kubectl get imagejobs -n $ns -w"
  say "stop:   kill ${pids[*]}"
  [ "$local_cluster" = 1 ] && say "the local cluster keeps running; stop it with: bash tests/cluster/down"
  exit 0
fi

# --- watch until every ImageJob has finished; print the table when it changes.
say "watching kubectl get imagejobs -n $ns (every 2s, until all are Succeeded or Failed)"
last=
deadline=$(( $(date +%s) + timeout ))
while :; do
  table=$(k get imagejobs -n "$ns" 2>&1 || true)
  # Print only when something but the AGE column changed.
  shown=$(printf '%s\n' "$table" | awk '{$NF=""; print}')
  if [ "$shown" != "$last" ]; then
    say "kubectl get imagejobs -n $ns"
    printf '%s\n' "$table" | sed 's/^/    /' >&2
    last=$shown
  fi
  phases=$(k get imagejobs -n "$ns" -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' 2>/dev/null || true)
  total=$(printf '%s\n' "$phases" | grep -c . || true)
  done_=$(printf '%s\n' "$phases" | grep -cE '^(Succeeded|Failed)$' || true)
  if [ "$total" -gt 0 ] && [ "$total" = "$done_" ]; then
    break
  fi
  if ! kill -0 "${pids[1]}" 2>/dev/null; then
    tail -n 40 "$work/operator.log" >&2
    die "the operator exited (log above; files in $work)"
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    tail -n 40 "$work/operator.log" >&2
    die "not all ImageJobs finished within ${timeout}s (operator log above; files in $work)"
  fi
  sleep 2
done

# --- summary.
say "all ImageJobs finished"
# The OVA import hands its images on through its output ConfigMap.
handed=$(k get configmap appliance-image -n "$ns" -o jsonpath='imageId={.data.imageId} dataImageIds={.data.dataImageIds}' 2>/dev/null || true)
[ -n "$handed" ] && say "ConfigMap appliance-image (from the OVA import): $handed"
k get imagejobs -n "$ns" -o custom-columns='NAME:.metadata.name,PHASE:.status.phase,IMS:.status.jobStatus,TYPE:.status.jobType,IMAGE:.status.imageId,READY:.status.conditions[?(@.type=="Ready")].status,MESSAGE:.status.conditions[?(@.type=="Ready")].message' \
  | sed 's/^/    /' >&2
say "Events:"
k get events.events.k8s.io -n "$ns" --sort-by=.metadata.creationTimestamp \
  -o custom-columns='OBJECT:.regarding.name,TYPE:.type,REASON:.reason,NOTE:.note' 2>/dev/null | sed 's/^/    /' >&2 || true
if [ -n "$metrics_addr" ] && command -v curl >/dev/null; then
  requests=$(curl -fsS "http://$metrics_addr/metrics" | awk '/^imagejob_ims_requests_total/ {s += $NF} END {print s + 0}')
  patches=$(curl -fsS "http://$metrics_addr/metrics" | awk '/^imagejob_status_patches_total/ {s += $NF} END {print s + 0}')
  say "the operator sent $requests IMS requests and wrote $patches status patches"
fi
say "done in $(( $(date +%s) - start ))s. Look around:"
say "  export KUBECONFIG=$KUBECONFIG"
say "  $kubectl get imagejobs -n $ns -o wide; $kubectl describe imagejob broken-server-image -n $ns"
if [ "$keep" = 1 ]; then
  say "left running (DEMO_KEEP_RUNNING=1): stop with: kill ${pids[*]}"
fi
if [ "$local_cluster" = 1 ]; then
  say "the local cluster keeps running; stop it with: bash tests/cluster/down"
fi

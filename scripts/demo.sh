#!/usr/bin/env bash
# Builds Hawser and runs its main job on loopback: a hub, a registered cluster
# and its agent, with kubectl going through the hub. With no cluster at hand the
# "external cluster" is the repository's kube-apiserver test double; set
# DEMO_KUBECONFIG to a kubeconfig to put a real cluster behind the agent.
# Ports: DEMO_FRONT_PORT (default 16443), DEMO_TUNNEL_PORT (default 18443).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=${DEMO_DIR:-$root/.hawser/demo}
front_port=${DEMO_FRONT_PORT:-16443}
tunnel_port=${DEMO_TUNNEL_PORT:-18443}
command -v kubectl >/dev/null || { echo "kubectl is needed on PATH" >&2; exit 1; }

cargo build -p hawser --bin hawser -p hawser-tests --bin apiserver-double
bin=$root/target/debug
rm -rf "$work" && mkdir -p "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_for_line() { # file, pattern
  for _ in $(seq 1 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}

if [ -z "${DEMO_KUBECONFIG:-}" ]; then
  echo "== starting the stand-in API server (kube-apiserver test double)"
  "$bin/apiserver-double" --dir "$work/apiserver" >"$work/apiserver.out" 2>"$work/apiserver.log" &
  pids+=($!)
  wait_for_line "$work/apiserver.out" '"url"'
  apiserver="server = \"$(sed -n 's/.*"url":"\([^"]*\)".*/\1/p' "$work/apiserver.out")\"
ca_file = \"$work/apiserver/ca.crt\"
token_file = \"$work/apiserver/token\""
else
  apiserver="kubeconfig = \"$DEMO_KUBECONFIG\""
fi

echo "== starting the hub"
# Demo only: no plugin chain, so no credential stage checks callers, and the hub and
# the agent refuse to start without allow_unauthenticated (they log a warning). The
# secured setup (JWT credential and impersonation stages) is in the README.
cat >"$work/hub.toml" <<TOML
allow_unauthenticated = true
state_dir = "state"
[tunnel]
listen = "127.0.0.1:$tunnel_port"
advertise = "127.0.0.1:$tunnel_port"
[front]
listen = "127.0.0.1:$front_port"
server_names = ["127.0.0.1", "localhost"]
[admin]
listen = "127.0.0.1:0"
TOML
"$bin/hawser" hub --config "$work/hub.toml" >"$work/hub.out" 2>"$work/hub.log" &
pids+=($!)
wait_for_line "$work/hub.out" '"front"'

echo "== registering cluster 'demo'"
"$bin/hawser" cluster register demo --region local --zone local-a --config "$work/hub.toml" --out "$work/bundle"

echo "== starting the agent (2 tunnels)"
# The bundle's agent.toml is for running in a pod; point it at this machine's API server.
{ echo 'allow_unauthenticated = true'
  sed -e '/^\[apiserver\]/,$d' -e 's/^connections = 1/connections = 2/' "$work/bundle/agent.toml"
} >"$work/agent.toml"
printf '[apiserver]\n%s\n' "$apiserver" >>"$work/agent.toml"
cp "$work/bundle/"{ca.crt,agent.crt,agent.key} "$work/"
"$bin/hawser" agent --config "$work/agent.toml" >"$work/agent.out" 2>"$work/agent.log" &
pids+=($!)
wait_for_line "$work/agent.log" 'tunnel up'

ca=$(base64 -w0 <"$work/state/ca.crt")
cat >"$work/kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: demo
  cluster:
    server: https://127.0.0.1:$front_port/clusters/demo
    certificate-authority-data: $ca
users:
- name: demo-user
  user:
    token: demo-user-token
contexts:
- name: demo
  context: {cluster: demo, user: demo-user, namespace: default}
current-context: demo
YAML

kc=(kubectl --kubeconfig "$work/kubeconfig" --cache-dir "$work/kube-cache")
# The agent's TLS handshake finishing is not the hub admitting it: wait until the
# hub routes a request to the cluster.
for _ in $(seq 1 100); do "${kc[@]}" get --raw /version >/dev/null 2>&1 && break; sleep 0.1; done

echo "== kubectl get pods, through the hub and the tunnel"
"${kc[@]}" get pods
echo
echo "Hawser is running. Try, in another shell:"
echo "  kubectl --kubeconfig $work/kubeconfig get pods -w"
echo "  kubectl --kubeconfig $work/kubeconfig exec -i web-0 -- cat"
echo "Logs: $work/{hub,agent}.log. Ctrl-C stops everything."
echo "Demo mode: allow_unauthenticated, no credential check. For issued credentials and"
echo "impersonation see the README (Security model; Credentials)."
if [ -n "${DEMO_EXIT:-}" ]; then exit 0; fi
wait

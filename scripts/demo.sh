#!/usr/bin/env bash
# Builds Hawser and its plugins and runs its main job on loopback: a hub, a
# registered cluster and its agent, and kubectl going through the hub with a
# credential the hub issued. The hub's WebAssembly credential stage checks it, the
# agent's checks it again and its impersonation stage makes the API server act as
# that user. With no cluster at hand the "external cluster" is the repository's
# kube-apiserver test double; set DEMO_KUBECONFIG to a kubeconfig to put a real
# cluster behind the agent (then give group `devs` RBAC rights to read pods).
# Ports: DEMO_FRONT_PORT (default 16443), DEMO_TUNNEL_PORT (default 18443).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=${DEMO_DIR:-$root/.hawser/demo}
front_port=${DEMO_FRONT_PORT:-16443}
tunnel_port=${DEMO_TUNNEL_PORT:-18443}
command -v kubectl >/dev/null || { echo "kubectl is needed on PATH" >&2; exit 1; }

cargo build -p hawser --bin hawser -p hawser-tests --bin apiserver-double
scripts/build-plugins.sh -q
target=${CARGO_TARGET_DIR:-$root/target}
bin=$target/debug
wasm=$target/wasm32-wasip2/release
rm -rf "$work" && mkdir -p "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_for_line() { # file, pattern, pid of the process writing it, its log
  for _ in $(seq 1 200); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || break
    sleep 0.1
  done
  echo "no '$2' in $1; the process's log ($4):" >&2; cat "$4" >&2; return 1
}

if [ -z "${DEMO_KUBECONFIG:-}" ]; then
  echo "== starting the stand-in API server (kube-apiserver test double)"
  "$bin/apiserver-double" --dir "$work/apiserver" >"$work/apiserver.out" 2>"$work/apiserver.log" &
  pids+=($!)
  wait_for_line "$work/apiserver.out" '"url"' $! "$work/apiserver.log"
  apiserver="server = \"$(sed -n 's/.*"url":"\([^"]*\)".*/\1/p' "$work/apiserver.out")\"
ca_file = \"$work/apiserver/ca.crt\"
token_file = \"$work/apiserver/token\""
else
  apiserver="kubeconfig = \"$DEMO_KUBECONFIG\""
fi

echo "== the hub's credential keys and plugin chain"
cat >"$work/hub.toml" <<TOML
plugins = "plugins-hub.toml"
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
# Creates the issuer key pair in state_dir and writes its public half: the hub's JWT
# credential stage verifies with public keys only (the agent's chain, in the bundle,
# carries them too).
"$bin/hawser" credential export-keys -c "$work/hub.toml" --out-dir "$work/keys" >/dev/null
keys=$(awk -F' = ' '/^kid/ {gsub(/"/, "", $2); kid = $2} /^public_key/ {print "\"" kid "\" = " $2}' \
  "$work/keys/credential-keys.toml")
jwt_stage() {
  printf '[[stage]]\nname = "jwt"\nkind = "credential"\nplugin = "%s"\ninstances = "reuse"\n' \
    "$wasm/hawser_plugin_jwt_credential.wasm"
  printf '[stage.config]\nissuer = "hawser-hub"\n[stage.config.keys]\n%s\n' "$keys"
}
{ echo 'role = "hub"'; jwt_stage; } >"$work/plugins-hub.toml"

echo "== starting the hub"
"$bin/hawser" hub --config "$work/hub.toml" >"$work/hub.out" 2>"$work/hub.log" &
pids+=($!)
wait_for_line "$work/hub.out" '"front"' $! "$work/hub.log"

echo "== registering cluster 'demo'"
"$bin/hawser" cluster register demo --region local --zone local-a --config "$work/hub.toml" --out "$work/bundle"

echo "== starting the agent (2 tunnels)"
# The bundle is for running in a pod: point its agent.toml at this machine's API
# server, and its plugin chain (JWT credential stage bound to this cluster, then
# impersonation) at the plugin files built here instead of the pod's mount.
sed "s#/opt/hawser/plugins#$wasm#" "$work/bundle/plugins-agent.toml" >"$work/plugins-agent.toml"
sed -e '/^\[apiserver\]/,$d' -e 's/^connections = 1/connections = 2/' \
  "$work/bundle/agent.toml" >"$work/agent.toml"
printf '[apiserver]\n%s\n' "$apiserver" >>"$work/agent.toml"
cp "$work/bundle/"{ca.crt,agent.crt,agent.key} "$work/"
"$bin/hawser" agent --config "$work/agent.toml" >"$work/agent.out" 2>"$work/agent.log" &
pids+=($!)
wait_for_line "$work/agent.log" 'tunnel up' $! "$work/agent.log"

echo "== issuing credentials: alice (group devs) and bob (group guests)"
issue() { # user group
  local out
  out=$("$bin/hawser" credential issue -c "$work/hub.toml" --user "$1" --group "$2" \
    --cluster demo --ttl 8h --kubeconfig "$work/$1.kubeconfig" \
    --hub-url "https://127.0.0.1:$front_port" 2>&1) || { echo "$out" >&2; exit 1; }
  grep -v '^wrote ' <<<"$out" || true
}
issue alice devs
issue bob guests

kc=(kubectl --kubeconfig "$work/alice.kubeconfig" --cache-dir "$work/kube-cache")
# The agent's TLS handshake finishing is not the hub admitting it: wait until the
# hub routes a request to the cluster.
for _ in $(seq 1 100); do "${kc[@]}" get --raw /version >/dev/null 2>&1 && break; sleep 0.1; done

echo "== kubectl get pods as alice, through the hub and the tunnel"
"${kc[@]}" get pods
echo
expect_refusal() { # what it should say, command...
  local want=$1 out; shift
  if out=$("$@" 2>&1 </dev/null); then
    echo "expected a refusal, got: $out" >&2; exit 1
  fi
  grep -v memcache.go <<<"$out" || true
  grep -q "$want" <<<"$out" || { echo "expected '$want' in the refusal" >&2; exit 1; }
}
echo "== as bob: the API server itself authorizes the impersonated user (403)"
expect_refusal Forbidden kubectl --kubeconfig "$work/bob.kubeconfig" --cache-dir "$work/kube-cache" get pods
echo
echo "== with a token the hub did not issue: its credential stage refuses (401)"
expect_refusal "provide credentials" kubectl --kubeconfig /dev/null \
  --server "https://127.0.0.1:$front_port/clusters/demo" \
  --certificate-authority "$work/state/ca.crt" --token not-a-hawser-token get pods
echo
echo "Hawser is running. Try, in another shell:"
echo "  kubectl --kubeconfig $work/alice.kubeconfig get pods -w"
echo "  kubectl --kubeconfig $work/alice.kubeconfig exec -i web-0 -- cat"
echo "Logs: $work/{hub,agent}.log; chains: $work/plugins-{hub,agent}.toml (edit one,"
echo "or send SIGHUP, and it is swapped without dropping a request). Ctrl-C stops everything."
if [ -n "${DEMO_EXIT:-}" ]; then exit 0; fi
wait

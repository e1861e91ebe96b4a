#!/usr/bin/env bash
# Container smoke test of the default docker-compose stack, where a Docker engine runs:
#
#   deploy/container-smoke.sh                  # VERSIONS=3 TIMEOUT_S=900 by default
#   WITH_LIBOQS=1 deploy/container-smoke.sh    # the image with liboqs (cloned from GitHub)
#   MONITORING=0 deploy/container-smoke.sh     # without Prometheus and Grafana (no pulls)
#
# 1. builds the image (deploy/Dockerfile; with WITH_LIBOQS=1 also liboqs, whose build step
#    checks that liboqs derives the same ML-DSA keys as pyca/cryptography);
# 2. brings the whole stack up in a project of its own (fresh volumes): testbed-init plans the
#    keys, genesis files and configs, then 4 CTBC and 4 CMBC daemons, miners, 4 server nodes,
#    8 clients, and (MONITORING=1, the default) Prometheus and Grafana;
# 3. waits until every CTBC replica reports VERSIONS committed model versions;
# 4. checks that all CTBC replicas hold the same block at the lowest of their heights (and the
#    same genesis), and with MONITORING=1 that Prometheus scrapes every process (all targets up)
#    and that it has the nodes' model versions, i.e. the series the Grafana dashboard reads;
# 5. tears everything down, volumes included, on every exit (trap), also after a failure, after
#    printing the containers' states and log tails.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSIONS=${VERSIONS:-3}
TIMEOUT_S=${TIMEOUT_S:-900}
export WITH_LIBOQS=${WITH_LIBOQS:-0}
MONITORING=${MONITORING:-1}
export DUALCHAIN_IMAGE=${DUALCHAIN_IMAGE:-dualchain:smoke}
export PROMETHEUS_PORT=${PROMETHEUS_PORT:-19090}
export GRAFANA_PORT=${GRAFANA_PORT:-13000}
PROJECT=${PROJECT:-dualchain-smoke-$$}

if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
else
    echo "container-smoke: no compose implementation (docker compose or docker-compose)" >&2
    exit 2
fi
if ! docker info >/dev/null 2>&1; then
    echo "container-smoke: no Docker engine answers (docker info failed)" >&2
    exit 2
fi
PROFILE=()
if [ "$MONITORING" = 1 ]; then PROFILE=(--profile monitoring); fi
compose() { "${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.yml "${PROFILE[@]}" "$@"; }

cleanup() {
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "container-smoke: FAILED ($rc); states and log tails:" >&2
        compose ps -a >&2 || true
        compose logs --no-color --tail 40 >&2 || true
    fi
    compose down -v --remove-orphans --timeout 20 >/dev/null 2>&1 || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

replicas=$(compose config --services | grep -E '^ctbc-[0-9]+$' | sed 's/$/:7000/' | tr '\n' ' ')
[ -n "$replicas" ] || { echo "container-smoke: no CTBC services" >&2; exit 1; }

echo "== building the image ($DUALCHAIN_IMAGE, WITH_LIBOQS=$WITH_LIBOQS)"
compose build
echo "== starting the stack (project $PROJECT)"
compose up -d
check() { compose exec -T ctbc-0 python - "$@" < deploy/smoke_check.py; }

echo "== waiting for $VERSIONS committed model versions on every CTBC replica"
# shellcheck disable=SC2086  # one argument per replica
check versions "$VERSIONS" "$TIMEOUT_S" $replicas
echo "== checking that the CTBC replicas agree"
# shellcheck disable=SC2086
check agree $replicas

if [ "$MONITORING" != 1 ]; then echo "container-smoke: OK (without Prometheus and Grafana)"; exit 0; fi
echo "== checking Prometheus (every process scraped, model versions recorded)"
python3 - "$PROMETHEUS_PORT" "$(compose config --services | grep -cE '^(ctbc|cmbc|miner|node|client)-')" <<'EOF'
import json, sys, time, urllib.parse, urllib.request

port, expected = sys.argv[1], int(sys.argv[2])
base = f"http://127.0.0.1:{port}/api/v1"

def get(path):
    with urllib.request.urlopen(base + path, timeout=10) as reply:
        return json.load(reply)["data"]

deadline = time.monotonic() + 120
while True:
    targets = get("/targets")["activeTargets"]
    up = [t for t in targets if t["health"] == "up"]
    versions = get("/query?" + urllib.parse.urlencode({"query": "dualchain_node_model_version"}))
    if len(up) == expected and versions["result"]:
        break
    if time.monotonic() > deadline:
        sys.exit(f"Prometheus: {len(up)} of {expected} targets up, "
                 f"{len(versions['result'])} model version series")
    time.sleep(5)
print(f"  {len(up)} targets up; model versions "
      + ", ".join(f"{r['metric']['process']}={r['value'][1]}" for r in versions["result"]))
EOF

echo "container-smoke: OK"

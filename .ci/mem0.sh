#!/usr/bin/env bash
# The official Mem0 Python client against a live Nexus: one venv per client generation
# (0.1.x, 1.0.x, 2.x; dependencies pinned in tests/mem0/requirements-<version>.txt), two projects
# (tenants), and tests/mem0/clients.py run under each venv. Fails when any generation fails.
# Expects target/debug/nexus (built by `cargo test`).
#
#   bash .ci/mem0.sh install             only make the venvs (`.ci/run` does it while it builds)
#   bash .ci/mem0.sh                     one node, embedded stores
#   bash .ci/mem0.sh cluster [VECTORS]   two nodes on one Postgres: a fresh database on the test
#                                        server that NEXUS_TEST_POSTGRES_URL and NEXUS_TEST_PG_BIN
#                                        name (as `.ci/cluster-servers.sh start` exports them),
#                                        dropped on exit. Vectors shared in it (`pgvector`, the
#                                        default) or one copy per node (`usearch`); the text and
#                                        graph stores are per node. `full`: the full cluster stack,
#                                        every derived store shared (OpenSearch text, Qdrant vectors,
#                                        a Bolt graph server of its own; NEXUS_TEST_OPENSEARCH_URL,
#                                        NEXUS_TEST_QDRANT_URL, NEXUS_TEST_QDRANT_API_KEY). Every add
#                                        goes through node A, every other call through node B.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-single}"
vectors="${2:-pgvector}"
case "$mode:${2:-}" in
    install: | single: | cluster: | cluster:pgvector | cluster:usearch | cluster:full) ;;
    *) echo "usage: $0 [install | single | cluster [pgvector | usearch | full]]"; exit 2 ;;
esac

versions=(0.1.118 1.0.11 2.2.1)

for version in "${versions[@]}"; do
    venv="target/mem0-venvs/$version"
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import mem0" 2>/dev/null; then
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check -r "tests/mem0/requirements-$version.txt"
    fi
    installed="$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("mem0ai"))')"
    [ "$installed" = "$version" ] || { echo "venv $venv holds mem0ai $installed, not $version"; exit 1; }
done
if [ "$mode" = install ]; then exit 0; fi

work="$(mktemp -d)"
pids=()
database=""
psql_admin() {
    PGCONNECT_TIMEOUT=10 "$NEXUS_TEST_PG_BIN/psql" "$NEXUS_TEST_POSTGRES_URL" -X -q -A -t -v ON_ERROR_STOP=1 "$@"
}
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -d "$work/graph" ]; then bash .ci/cluster-servers.sh stop "$work/graph" || true; fi
    if [ -n "$database" ]; then
        psql_admin -c "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" ||
            echo "mem0 clients: could not drop the test database $database"
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

master="ci-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
config="$work/nexus.toml"
: >"$config"
node_env=()
if [ "$mode" = cluster ]; then
    if [ -z "${NEXUS_TEST_POSTGRES_URL:-}" ] || [ ! -x "${NEXUS_TEST_PG_BIN:-}/psql" ]; then
        echo "mem0 clients (cluster): set NEXUS_TEST_POSTGRES_URL and NEXUS_TEST_PG_BIN (eval the output of" \
            "\`bash .ci/cluster-servers.sh start DIR\`)"
        exit 1
    fi
    database="nx_mem0_$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    psql_admin -c "CREATE DATABASE \"$database\""
    # The server's URL with the new database as its path (any query string kept).
    base="${NEXUS_TEST_POSTGRES_URL%%\?*}"
    query="${NEXUS_TEST_POSTGRES_URL#"$base"}"
    node_env+=("NEXUS_MEM0_POSTGRES_URL=${base%/*}/$database$query" NEXUS__CLUSTER__POLL_INTERVAL_MS=200)
    # Records, jobs and keys on Postgres, vectors there too or per node; the text and graph
    # stores per node (each node follows the shared change log).
    cat >"$config" <<EOF
[store.records]
backend = "postgres"
url_env = "NEXUS_MEM0_POSTGRES_URL"
pool_size = 8

[store.vectors]
backend = "$vectors"
EOF
    if [ "$vectors" = full ]; then
        graph_env="$(bash .ci/cluster-servers.sh graph "$work/graph")"
        eval "$graph_env"
        node_env+=("NEXUS_MEM0_QDRANT_API_KEY=$NEXUS_TEST_QDRANT_API_KEY")
        cat >"$config" <<EOF
[store.records]
backend = "postgres"
url_env = "NEXUS_MEM0_POSTGRES_URL"
pool_size = 8

[store.vectors]
backend = "qdrant"
url = "$NEXUS_TEST_QDRANT_URL"
api_key_env = "NEXUS_MEM0_QDRANT_API_KEY"
collection_prefix = "${database//_/-}"

[store.text]
backend = "elasticsearch"
url = "$NEXUS_TEST_OPENSEARCH_URL"
index_prefix = "${database//_/-}"

[store.graph]
backend = "neo4j"
url = "$NEXUS_TEST_BOLT_URL"
EOF
    fi
fi

# Starts a node named $1 with its own data directory; its address is in $work/$1.url.
# Keys on (a master key); rate limits off; no LLM configured, so infer=true uses the
# deterministic extractor. No network is needed at run time.
start_node() {
    local name="$1"
    env "${node_env[@]}" NEXUS__CLUSTER__NODE_ID="$name" \
        NEXUS__AUTH__MASTER_KEY="$master" NEXUS__LIMITS__PER_KEY_PER_SECOND=0 \
        NEXUS__LIMITS__PER_ADDRESS_PER_SECOND=0 NEXUS__LIMITS__AUTH_FAILURES_PER_MINUTE=0 \
        NEXUS_CONFIG="$config" RUST_LOG=warn \
        target/debug/nexus --data-dir "$work/$name" serve --listen 127.0.0.1:0 \
        >"$work/$name.stdout" 2>"$work/$name.stderr" &
    pids+=($!)
    local pid=$! url=""
    for _ in $(seq 1 600); do
        url="$(sed -n 's/^nexus: listening on //p' "$work/$name.stdout")"
        [ -n "$url" ] && break
        kill -0 "$pid" 2>/dev/null || { cat "$work/$name.stderr"; echo "nexus ($name) did not start"; exit 1; }
        sleep 0.1
    done
    [ -n "$url" ] || { echo "nexus ($name) did not announce its address"; exit 1; }
    echo "$url" >"$work/$name.url"
}

if [ "$mode" = cluster ]; then
    start_node node-a
    start_node node-b
    url="$(cat "$work/node-b.url")"
    write_url="$(cat "$work/node-a.url")"
    echo "== cluster ($vectors): node A $write_url (adds), node B $url (everything else), database $database"
else
    start_node nexus
    url="$(cat "$work/nexus.url")"
    write_url="$url"
fi

# The management API, as the operator (through node A in a cluster): an organisation, two
# projects, keys.
api() {
    local method="$1" path="$2" body="${3:-}"
    curl -sS --fail-with-body -X "$method" "$write_url$path" -H "Authorization: Bearer $master" \
        -H "Content-Type: application/json" ${body:+--data "$body"}
}
key_of() { python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])'; }
api POST /api/v1/orgs '{"id": "mem0-ci", "name": "Mem0 CI"}' >/dev/null
api POST /api/v1/projects '{"id": "mem0-a", "org_id": "mem0-ci"}' >/dev/null
api POST /api/v1/projects '{"id": "mem0-b", "org_id": "mem0-ci"}' >/dev/null
key_a="$(api POST /api/v1/keys '{"name": "mem0 a", "project": "mem0-a", "scopes": ["read", "write"]}' | key_of)"
key_b="$(api POST /api/v1/keys '{"name": "mem0 b", "project": "mem0-b", "scopes": ["read", "write"]}' | key_of)"
key_read="$(api POST /api/v1/keys '{"name": "mem0 reader", "project": "mem0-a", "scopes": ["read"]}' | key_of)"

status=0
failed=()
nodes_up() {
    local pid
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || return 1; done
}
for version in "${versions[@]}"; do
    nodes_up || { echo "mem0 clients ($mode): a node is gone"; status=1; failed+=("a node"); break; }
    echo "== mem0ai $version${database:+ (cluster)}"
    mem0_dir="$work/mem0-home-$version"
    mkdir -p "$mem0_dir"
    if ! PYTHONDONTWRITEBYTECODE=1 MEM0_TELEMETRY=false MEM0_DIR="$mem0_dir" HOME="$mem0_dir" \
        NEXUS_URL="$url" NEXUS_WRITE_URL="$write_url" NEXUS_KEY="$key_a" NEXUS_PROJECT=mem0-a NEXUS_ORG=mem0-ci \
        NEXUS_OTHER_KEY="$key_b" NEXUS_OTHER_PROJECT=mem0-b NEXUS_READ_KEY="$key_read" \
        timeout 600 "target/mem0-venvs/$version/bin/python" tests/mem0/clients.py; then
        status=1
        failed+=("$version")
    fi
done

if [ "$mode" = cluster ] && nodes_up; then
    # Afterwards, each node's derived stores hold exactly what the shared record store holds.
    for name in node-a node-b; do
        node_url="$(cat "$work/$name.url")"
        report=""
        for _ in $(seq 1 100); do
            report="$(curl -sS "$node_url/api/v1/admin/check" -H "Authorization: Bearer $master" || true)"
            python3 -c 'import json, sys; sys.exit(0 if json.loads(sys.argv[1]).get("ok") is True else 1)' \
                "$report" 2>/dev/null && { report=ok; break; }
            sleep 0.1
        done
        if [ "$report" != ok ]; then
            echo "$name: the consistency check failed: $report"
            status=1
            failed+=("$name (consistency)")
        fi
    done
fi

nodes_up || { echo "mem0 clients ($mode): a node stopped during the run"; status=1; }
for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${pids[@]}"; do
    wait "$pid" || { echo "nexus (pid $pid) did not stop cleanly"; status=1; }
done
pids=()
for stderr in "$work"/*.stderr; do
    if grep -q "panicked" "$stderr"; then
        cat "$stderr"
        echo "nexus panicked during the run ($(basename "$stderr" .stderr))"
        status=1
    fi
done
if [ "$status" -ne 0 ]; then
    echo "mem0 clients ($mode): FAILED for ${failed[*]:-the server}"
else
    echo "mem0 clients ($mode): every generation passed (${versions[*]})"
fi
exit "$status"

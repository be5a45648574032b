#!/usr/bin/env bash
# The official MCP Python SDK (`mcp` on PyPI, pinned with its dependencies in
# tests/mcp/requirements.txt) against a live Nexus: a venv, a server with keys on and two
# projects, and tests/mcp/client.py over Streamable HTTP (/mcp) and stdio (`nexus mcp`, relayed to
# the server and in process on a data directory of its own). Fails when any check fails.
# Expects target/debug/nexus (built by `cargo test`). No network at run time.
set -euo pipefail
cd "$(dirname "$0")/.."

version=2.3.0
venv="target/mcp-venvs/$version"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import mcp" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/mcp/requirements.txt
fi
installed="$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("mcp"))')"
[ "$installed" = "$version" ] || { echo "venv $venv holds mcp $installed, not $version"; exit 1; }

work="$(mktemp -d)"
server=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

master="ci-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
config="$work/nexus.toml"
: >"$config"
bin="$(pwd)/target/debug/nexus"

# Keys on (a master key); rate limits off; no LLM configured, so `ask` answers extractively.
NEXUS__AUTH__MASTER_KEY="$master" NEXUS__LIMITS__PER_KEY_PER_SECOND=0 \
    NEXUS__LIMITS__PER_ADDRESS_PER_SECOND=0 NEXUS__LIMITS__AUTH_FAILURES_PER_MINUTE=0 \
    NEXUS_CONFIG="$config" RUST_LOG=warn \
    "$bin" --data-dir "$work/data" serve --listen 127.0.0.1:0 >"$work/stdout" 2>"$work/stderr" &
server=$!
url=""
for _ in $(seq 1 600); do
    url="$(sed -n 's/^nexus: listening on //p' "$work/stdout")"
    [ -n "$url" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$work/stderr"; echo "nexus did not start"; exit 1; }
    sleep 0.1
done
[ -n "$url" ] || { echo "nexus did not announce its address"; exit 1; }

api() {
    curl -sS --fail-with-body -X "$1" "$url$2" -H "Authorization: Bearer $master" \
        -H "Content-Type: application/json" --data "$3"
}
key_of() { python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])'; }
api POST /api/v1/projects '{"id": "mcp-a"}' >/dev/null
api POST /api/v1/projects '{"id": "mcp-b"}' >/dev/null
key_a="$(api POST /api/v1/keys '{"name": "mcp a", "project": "mcp-a", "scopes": ["read", "write"]}' | key_of)"
key_read="$(api POST /api/v1/keys '{"name": "mcp reader", "project": "mcp-a", "scopes": ["read"]}' | key_of)"
key_b="$(api POST /api/v1/keys '{"name": "mcp b", "project": "mcp-b", "scopes": ["read", "write"]}' | key_of)"

status=0
started=$(date +%s)
PYTHONDONTWRITEBYTECODE=1 NEXUS_URL="$url" NEXUS_BIN="$bin" NEXUS_DATA_DIR="$work/data" \
    NEXUS_FREE_DATA_DIR="$work/free" NEXUS_CONFIG="$config" NEXUS_KEY="$key_a" NEXUS_READ_KEY="$key_read" \
    NEXUS_OTHER_KEY="$key_b" timeout 600 "$venv/bin/python" tests/mcp/client.py || status=1
echo "mcp client: $(($(date +%s) - started)) s"

kill -0 "$server" 2>/dev/null || { echo "mcp: the server stopped during the run"; status=1; }
kill -TERM "$server" 2>/dev/null || true
wait "$server" || { echo "nexus (pid $server) did not stop cleanly"; status=1; }
server=""
if grep -q "panicked" "$work/stderr"; then
    cat "$work/stderr"
    echo "nexus panicked during the run"
    status=1
fi
if [ "$status" -ne 0 ]; then
    echo "mcp (Python SDK $version): FAILED"
else
    echo "mcp (Python SDK $version): every check passed"
fi
exit "$status"

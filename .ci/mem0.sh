#!/usr/bin/env bash
# The official Mem0 Python client against a live Nexus: one venv per client generation
# (0.1.x, 1.0.x, 2.x; dependencies pinned in tests/mem0/requirements-<version>.txt), one server
# with two projects (tenants), and tests/mem0/clients.py run under each venv. Fails when any
# generation fails. Expects target/debug/nexus (built by `cargo test`).
set -euo pipefail
cd "$(dirname "$0")/.."

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

work="$(mktemp -d)"
: >"$work/empty.toml"
master="ci-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# Keys on (a master key); rate limits off; no LLM configured, so infer=true uses the deterministic
# extractor. No network is needed at run time.
NEXUS__AUTH__MASTER_KEY="$master" NEXUS__LIMITS__PER_KEY_PER_SECOND=0 NEXUS__LIMITS__PER_ADDRESS_PER_SECOND=0 \
    NEXUS__LIMITS__AUTH_FAILURES_PER_MINUTE=0 \
    NEXUS_CONFIG="$work/empty.toml" RUST_LOG=warn \
    target/debug/nexus --data-dir "$work/data" serve --listen 127.0.0.1:0 >"$work/stdout" 2>"$work/stderr" &
server=$!
stop_server() { kill "$server" 2>/dev/null || true; }
trap 'stop_server; rm -rf "$work"' EXIT

url=""
for _ in $(seq 1 600); do
    url="$(sed -n 's/^nexus: listening on //p' "$work/stdout")"
    [ -n "$url" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$work/stderr"; echo "nexus did not start"; exit 1; }
    sleep 0.1
done
[ -n "$url" ] || { echo "nexus did not announce its address"; exit 1; }

# The management API, as the operator: an organisation, two projects, keys.
api() {
    local method="$1" path="$2" body="${3:-}"
    curl -sS --fail-with-body -X "$method" "$url$path" -H "Authorization: Bearer $master" \
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
for version in "${versions[@]}"; do
    echo "== mem0ai $version"
    mem0_dir="$work/mem0-home-$version"
    mkdir -p "$mem0_dir"
    if ! PYTHONDONTWRITEBYTECODE=1 MEM0_TELEMETRY=false MEM0_DIR="$mem0_dir" HOME="$mem0_dir" \
        NEXUS_URL="$url" NEXUS_KEY="$key_a" NEXUS_PROJECT=mem0-a NEXUS_ORG=mem0-ci \
        NEXUS_OTHER_KEY="$key_b" NEXUS_OTHER_PROJECT=mem0-b NEXUS_READ_KEY="$key_read" \
        timeout 600 "target/mem0-venvs/$version/bin/python" tests/mem0/clients.py; then
        status=1
        failed+=("$version")
    fi
done

kill -TERM "$server"
wait "$server" || { echo "nexus did not stop cleanly"; status=1; }
trap 'rm -rf "$work"' EXIT
if grep -q "panicked" "$work/stderr"; then
    cat "$work/stderr"
    echo "nexus panicked during the run"
    status=1
fi
if [ "$status" -ne 0 ]; then
    echo "mem0 clients: FAILED for ${failed[*]:-the server}"
else
    echo "mem0 clients: every generation passed (${versions[*]})"
fi
exit "$status"

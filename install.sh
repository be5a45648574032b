#!/bin/sh
# Installs, upgrades and removes Nexus. `./install.sh --help` says how.
#
# An upgrade (running this again with another build) stops Nexus, copies the data directory and
# the previous binary into a backup folder, installs the new binary, starts it and waits for
# /ready; when it does not become ready, the previous binary and the data copy are put back and
# started again.
set -eu

usage() {
    cat <<'EOF'
Usage: ./install.sh [OPTIONS]

Installs nexus: the binary built from this checkout (cargo build --release), or --binary PATH.
Run it again with a new build to upgrade in place: backup, restart, and roll back when the new
binary does not become ready.

Options:
  --prefix DIR          install the binary as DIR/bin/nexus (default /usr/local)
  --binary PATH         install this binary instead of building one
  --service             run nexus as a systemd service: the nexus user, /var/lib/nexus (0750),
                        /etc/nexus/nexus.toml (0640; kept when present), the unit, enabled and
                        started; waits for /ready and prints the URL
  --data-dir DIR        without --service: the data directory to back up before an upgrade and to
                        check the new binary on (default: check it on a scratch directory)
  --backup-dir DIR      where upgrade backups go (default /var/backups/nexus with --service,
                        else DATA_DIR.backups, else PREFIX/lib/nexus/backups)
  --ready-timeout SECS  how long a new binary may take to become ready (default 120)
  --uninstall           remove the binary and the unit; keep data and configuration
  --purge               with --uninstall: also remove /var/lib/nexus (or --data-dir), /etc/nexus,
                        the backups and the nexus user
  --dry-run             print every step without doing it
  -h, --help            show this help

Environment:
  DESTDIR               lay the files out under this root only (binary, unit, configuration,
                        state directory): no user, no systemctl, no backup, no start
EOF
}

# Fixed locations of the service (the unit names the same ones).
STATE_DIR=/var/lib/nexus
CONF_DIR=/etc/nexus
CONF_FILE=$CONF_DIR/nexus.toml
UNIT_DIR=/etc/systemd/system
UNIT_FILE=$UNIT_DIR/nexus.service
SERVICE_BACKUPS=/var/backups/nexus
SERVICE_USER=nexus

SRC_DIR=$(cd "$(dirname "$0")" && pwd)
PREFIX=/usr/local
BINARY=
SERVICE=0
DATA_DIR=
BACKUP_ROOT=
READY_TIMEOUT=120
UNINSTALL=0
PURGE=0
DRY_RUN=0
DESTDIR=${DESTDIR:-}

say() { printf 'install.sh: %s\n' "$*"; }
die() {
    printf 'install.sh: error: %s\n' "$*" >&2
    exit 1
}

# Every step that changes the system goes through run, so --dry-run shows it.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        printf '+ %s\n' "$*"
    else
        "$@"
    fi
}

need_value() {
    if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value; see --help"; fi
}

while [ $# -gt 0 ]; do
    case $1 in
        --prefix) need_value "$@"; PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#*=}; shift ;;
        --binary) need_value "$@"; BINARY=$2; shift 2 ;;
        --binary=*) BINARY=${1#*=}; shift ;;
        --data-dir) need_value "$@"; DATA_DIR=$2; shift 2 ;;
        --data-dir=*) DATA_DIR=${1#*=}; shift ;;
        --backup-dir) need_value "$@"; BACKUP_ROOT=$2; shift 2 ;;
        --backup-dir=*) BACKUP_ROOT=${1#*=}; shift ;;
        --ready-timeout) need_value "$@"; READY_TIMEOUT=$2; shift 2 ;;
        --ready-timeout=*) READY_TIMEOUT=${1#*=}; shift ;;
        --service) SERVICE=1; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        --purge) PURGE=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option $1; see --help" ;;
    esac
done

case $READY_TIMEOUT in
    '' | *[!0-9]*) die "--ready-timeout takes whole seconds, not '$READY_TIMEOUT'" ;;
esac
[ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || die "--purge goes with --uninstall"
case $PREFIX in /*) ;; *) die "--prefix must be an absolute path, not '$PREFIX'" ;; esac
if [ "$SERVICE" = 1 ]; then
    [ -z "$DATA_DIR" ] || [ "$DATA_DIR" = "$STATE_DIR" ] ||
        die "the service keeps its data in $STATE_DIR; --data-dir is for installs without --service"
    DATA_DIR=$STATE_DIR
fi
BIN_DIR=$PREFIX/bin
TARGET=$DESTDIR$BIN_DIR/nexus

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nexus-install.XXXXXX")
SERVER_PID=
UNIT_CHANGED=0
URL=
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill -KILL "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

systemd_running() { [ -d /run/systemd/system ]; }

nap() { sleep 0.2 2>/dev/null || sleep 1; }

# True when URL answers 2xx.
http_ok() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -o /dev/null --max-time 5 "$1" 2>/dev/null
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O /dev/null -T 5 "$1" 2>/dev/null
    else
        die "checking readiness needs curl or wget; install one of them"
    fi
}

# Seconds since an arbitrary start, for deadlines.
now() { date +%s; }

# Waits until URL/ready answers 200, for at most READY_TIMEOUT seconds.
wait_ready() {
    deadline=$(($(now) + READY_TIMEOUT))
    while ! http_ok "$1/ready"; do
        [ "$(now)" -lt "$deadline" ] || return 1
        nap
    done
}

# Starts BIN on DATA (a loopback port of its own), waits for /ready, stops it. True when it became ready.
# This is how an upgrade without a service manager decides whether the new binary works.
check_binary() {
    bin=$1 data=$2
    if [ "$DRY_RUN" = 1 ]; then
        printf '+ %s --data-dir %s serve --listen 127.0.0.1:0   (until /ready answers, then SIGTERM)\n' "$bin" "$data"
        return 0
    fi
    : >"$WORK/out"
    "$bin" --data-dir "$data" serve --listen 127.0.0.1:0 >"$WORK/out" 2>"$WORK/err" </dev/null &
    SERVER_PID=$!
    deadline=$(($(now) + READY_TIMEOUT))
    url='' ready=1 exited=
    while :; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            status=0
            wait "$SERVER_PID" || status=$?
            ready=0 exited=$status SERVER_PID=
            break
        fi
        [ -n "$url" ] || url=$(sed -n 's|^nexus: listening on \(http://.*\)$|\1|p' "$WORK/out")
        if [ -n "$url" ] && http_ok "$url/ready"; then break; fi
        if [ "$(now)" -ge "$deadline" ]; then ready=0 && break; fi
        nap
    done
    [ -z "$SERVER_PID" ] || stop_pid "$SERVER_PID"
    SERVER_PID=
    if [ "$ready" = 0 ]; then
        if [ -n "$exited" ]; then
            say "$bin exited with status $exited before it became ready on $data"
        else
            say "$bin did not become ready on $data within ${READY_TIMEOUT}s"
        fi
        if [ -s "$WORK/err" ]; then
            say "its last log lines:"
            tail -n 5 "$WORK/err" >&2
        fi
        return 1
    fi
}

# SIGTERM, then SIGKILL after a minute.
stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    deadline=$(($(now) + 60))
    while kill -0 "$1" 2>/dev/null && [ "$(now)" -lt "$deadline" ]; do nap; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# The URL the service answers on, from its configuration (read by whichever binary runs).
service_url() {
    listen=
    for bin in "$@"; do
        listen=$("$bin" --config "$CONF_FILE" config 2>/dev/null | sed -n 's/^listen = "\(.*\)"$/\1/p') || true
        [ -z "$listen" ] || break
    done
    [ -n "$listen" ] || listen=127.0.0.1:7700
    case $listen in
        0.0.0.0:*) listen=127.0.0.1:${listen#0.0.0.0:} ;;
        \[::\]:*) listen="[::1]:${listen#\[::\]:}" ;;
    esac
    printf 'http://%s' "$listen"
}

# Refuses to touch a data directory that a running nexus holds (the lock is flock(2)).
ensure_data_dir_free() {
    lock=$1/nexus.lock
    [ -e "$lock" ] || return 0
    if command -v flock >/dev/null 2>&1; then
        flock -n "$lock" true && return 0
        pid=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' "$lock" 2>/dev/null) || true
        die "$1 is in use by a running nexus (pid ${pid:-unknown}); stop it, then run install.sh again"
    fi
}

# Installs FILE as DEST atomically: a running binary is replaced, not overwritten.
put_binary() {
    run install -m 0755 "$1" "$2.new"
    run mv -f "$2.new" "$2"
}

build_binary() {
    if [ -n "$BINARY" ]; then
        if [ ! -f "$BINARY" ] || [ ! -x "$BINARY" ]; then die "--binary $BINARY is not an executable file"; fi
        return
    fi
    [ -f "$SRC_DIR/Cargo.toml" ] || die "no checkout at $SRC_DIR to build from; pass --binary PATH"
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found: install Rust (https://rustup.rs), or pass --binary PATH to a built nexus"
    say "building the release binary (a few minutes the first time)"
    (cd "$SRC_DIR" && run cargo build --release --locked)
    BINARY=$SRC_DIR/target/release/nexus
}

ensure_user() {
    if id "$SERVICE_USER" >/dev/null 2>&1; then return; fi
    nologin=$(command -v nologin || echo /bin/false)
    if command -v useradd >/dev/null 2>&1; then
        run useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home --shell "$nologin" "$SERVICE_USER"
    elif command -v adduser >/dev/null 2>&1; then
        run adduser --system --group --home "$STATE_DIR" --no-create-home "$SERVICE_USER"
    else
        die "neither useradd nor adduser is available to create the $SERVICE_USER user"
    fi
}

# The unit, the configuration and the state directory. With DESTDIR: files and modes only.
lay_out_service() {
    if [ ! -f "$SRC_DIR/packaging/systemd/nexus.service" ] || [ ! -f "$SRC_DIR/packaging/nexus.toml" ]; then
        die "packaging/ is missing next to install.sh; run it from a Nexus checkout"
    fi
    owner='' group=
    if [ -z "$DESTDIR" ]; then
        ensure_user
        owner="-o $SERVICE_USER -g $SERVICE_USER" group="-o root -g $SERVICE_USER"
    fi
    # shellcheck disable=SC2086 # owner and group are option lists, empty with DESTDIR
    run install -d -m 0750 $owner "$DESTDIR$STATE_DIR"
    run install -d -m 0755 "$DESTDIR$CONF_DIR" "$DESTDIR$UNIT_DIR"
    if [ -e "$DESTDIR$CONF_FILE" ]; then
        say "kept $DESTDIR$CONF_FILE (the shipped default is $SRC_DIR/packaging/nexus.toml)"
    else
        # shellcheck disable=SC2086
        run install -m 0640 $group "$SRC_DIR/packaging/nexus.toml" "$DESTDIR$CONF_FILE"
    fi
    sed "s|^ExecStart=/usr/bin/nexus |ExecStart=$BIN_DIR/nexus |" "$SRC_DIR/packaging/systemd/nexus.service" \
        >"$WORK/nexus.service"
    if ! cmp -s "$WORK/nexus.service" "$DESTDIR$UNIT_FILE"; then
        run install -m 0644 "$WORK/nexus.service" "$DESTDIR$UNIT_FILE"
        UNIT_CHANGED=1
    fi
    if [ -z "$DESTDIR" ]; then
        [ -x /bin/kill ] || say "warning: /bin/kill is missing, so 'systemctl reload nexus' fails; install procps"
        [ "$UNIT_CHANGED" = 0 ] || run systemctl daemon-reload
        run systemctl enable --quiet nexus.service
    fi
}

# Starts the installed binary (the service, or a check run) and waits for /ready.
start_and_check() {
    if [ "$SERVICE" = 1 ]; then
        # Type=notify: start returns once nexus said READY=1, or fails.
        run systemctl start nexus.service || return 1
        [ "$DRY_RUN" = 1 ] || wait_ready "$URL"
    elif [ -n "$DATA_DIR" ]; then
        check_binary "$TARGET" "$DATA_DIR"
    else
        mkdir -p "$WORK/scratch"
        check_binary "$TARGET" "$WORK/scratch"
    fi
}

# Files a root-run nexus command created in a data directory go back to the directory's owner.
give_back() {
    [ "$DRY_RUN" = 0 ] && [ "$(id -u)" = 0 ] && [ -d "$1" ] || return 0
    owner=$(stat -c %U:%G "$1")
    [ "$owner" = root:root ] || chown -R "$owner" "$1"
}

stop_nexus() {
    if [ "$SERVICE" = 1 ] && systemctl is-active --quiet nexus.service; then
        run systemctl stop nexus.service
    fi
    [ -z "$DATA_DIR" ] || ensure_data_dir_free "$DATA_DIR"
}

# Puts the previous binary and the data copy back, and starts them. Always exits.
roll_back() {
    say "the new nexus did not become ready; rolling back"
    [ "$SERVICE" = 0 ] || run systemctl stop nexus.service || true
    if [ -z "$BACKUP" ] || [ ! -f "$BACKUP/nexus" ]; then
        die "there is no previous nexus to roll back to; $TARGET stays installed. Run 'nexus doctor'$(
            [ "$SERVICE" = 0 ] || printf ' and journalctl -u nexus'), fix what it reports, and run install.sh again"
    fi
    put_binary "$BACKUP/nexus" "$TARGET"
    if [ -n "$ARCHIVE" ]; then
        # The previous nexus restores its own archive (checked in full first); the data directory
        # the new build left is kept in the backup folder.
        run "$TARGET" --data-dir "$DATA_DIR" restore --replace "$ARCHIVE" >/dev/null ||
            die "upgrade failed and the backup $ARCHIVE did not restore; the data directory is unchanged"
        for failed in "${DATA_DIR%/}".previous-*; do
            [ -e "$failed" ] && run mv "$failed" "$BACKUP/data.failed"
        done
        give_back "$DATA_DIR"
    elif [ -d "$BACKUP/data" ]; then
        run mv "$DATA_DIR" "$BACKUP/data.failed"
        run cp -Rp "$BACKUP/data" "$DATA_DIR"
    fi
    if start_and_check; then
        die "upgrade failed: rolled back to $( ("$TARGET" version) 2>/dev/null), which is ready again. Backup and the new build's data directory: $BACKUP$(
            [ "$SERVICE" = 0 ] || printf '; the failed start is in journalctl -u nexus')"
    fi
    die "upgrade failed, and the previous nexus does not become ready either; the backup is $BACKUP"
}

install_binary() {
    [ "$DRY_RUN" = 1 ] || [ -w "$(dirname "$TARGET")" ] || [ ! -e "$(dirname "$TARGET")" ] ||
        die "cannot write $(dirname "$TARGET"): run as root (sudo), or choose --prefix \$HOME/.local"
    run mkdir -p "$(dirname "$TARGET")"
    new_version=$( ("$BINARY" version) 2>/dev/null || echo "an unknown version")
    [ "$SERVICE" = 0 ] || URL=$(service_url "$BINARY" "$TARGET")
    if [ -f "$TARGET" ] && cmp -s "$BINARY" "$TARGET"; then
        say "$TARGET is already this build ($new_version)"
        if [ "$SERVICE" = 1 ]; then
            # A changed unit applies only at a restart.
            [ "$UNIT_CHANGED" = 0 ] || run systemctl restart nexus.service
            start_and_check || die "nexus does not become ready; run 'nexus doctor' and journalctl -u nexus"
        fi
        return
    fi
    BACKUP='' ARCHIVE=''
    if [ -f "$TARGET" ] || [ -f "$DATA_DIR/FORMAT" ]; then
        old_version=$( ("$TARGET" version) 2>/dev/null || echo "none")
        say "upgrading: $old_version -> $new_version"
        stop_nexus
        root=$BACKUP_ROOT
        if [ -z "$root" ]; then
            if [ "$SERVICE" = 1 ]; then root=$SERVICE_BACKUPS
            elif [ -n "$DATA_DIR" ]; then root=${DATA_DIR%/}.backups
            else root=$PREFIX/lib/nexus/backups
            fi
        fi
        BACKUP=$root/$(date +%Y%m%d-%H%M%S)-$$
        run mkdir -p "$BACKUP"
        run chmod 0700 "$BACKUP"
        [ ! -f "$TARGET" ] || run cp -p "$TARGET" "$BACKUP/nexus"
        if [ -f "$DATA_DIR/FORMAT" ] && [ -f "$TARGET" ] && "$TARGET" backup --help >/dev/null 2>&1; then
            # A verified archive taken by the installed nexus, which also restores it on rollback.
            if [ "$DRY_RUN" = 1 ]; then
                ARCHIVE="$BACKUP/nexus-backup.tar.zst"
                printf '+ %s --data-dir %s backup --to %s\n' "$TARGET" "$DATA_DIR" "$BACKUP"
            else
                printed=$("$TARGET" --data-dir "$DATA_DIR" backup --to "$BACKUP") ||
                    die "the backup before the upgrade failed; nothing was changed. Run '$TARGET backup' to see why"
                ARCHIVE=$(printf '%s\n' "$printed" | tail -n 1)
                give_back "$DATA_DIR"
                "$TARGET" backup verify "$ARCHIVE" >/dev/null ||
                    die "the backup before the upgrade ($ARCHIVE) does not verify; nothing was changed"
            fi
        elif [ -d "$DATA_DIR" ]; then
            run cp -Rp "$DATA_DIR" "$BACKUP/data"
        fi
        say "backup: $BACKUP"
    fi
    put_binary "$BINARY" "$TARGET"
    start_and_check || roll_back
    say "installed $new_version at $TARGET"
}

# Removes the binary, and the service's files when there is a service (or DESTDIR holds its files).
uninstall() {
    if [ -n "$DESTDIR" ] && { [ -e "$DESTDIR$UNIT_FILE" ] || [ -e "$DESTDIR$STATE_DIR" ] || [ -e "$DESTDIR$CONF_DIR" ]; }; then
        SERVICE=1
    fi
    run rm -f "$TARGET"
    removed=$TARGET kept='' again='' purge_list=''
    if [ "$SERVICE" = 1 ]; then
        if [ -z "$DESTDIR" ] && [ -f "$UNIT_FILE" ] && systemd_running; then
            run systemctl disable --now --quiet nexus.service
        fi
        run rm -f "$DESTDIR$UNIT_FILE"
        if [ -z "$DESTDIR" ] && systemd_running; then run systemctl daemon-reload; fi
        removed="$removed and $DESTDIR$UNIT_FILE"
        kept="$DESTDIR$STATE_DIR and $DESTDIR$CONF_DIR" again="--uninstall --purge --service"
        purge_list="$DESTDIR$STATE_DIR $DESTDIR$CONF_DIR $DESTDIR$SERVICE_BACKUPS"
    elif [ -n "$DATA_DIR" ]; then
        kept=$DATA_DIR again="--uninstall --purge --data-dir $DATA_DIR"
        purge_list="$DATA_DIR ${DATA_DIR%/}.backups"
    fi
    say "removed $removed"
    if [ "$PURGE" = 1 ]; then
        # shellcheck disable=SC2086 # a list of paths without spaces, built above
        [ -z "$purge_list" ] || run rm -rf $purge_list
        if [ "$SERVICE" = 1 ] && [ -z "$DESTDIR" ] && id "$SERVICE_USER" >/dev/null 2>&1; then
            if command -v userdel >/dev/null 2>&1; then run userdel "$SERVICE_USER"; else run deluser "$SERVICE_USER"; fi
            purge_list="$purge_list and the $SERVICE_USER user"
        fi
        say "purged ${purge_list:-nothing else: add --service for the service files and user, or --data-dir DIR}"
    elif [ -n "$kept" ]; then
        say "kept $kept; install.sh $again removes them"
    fi
}

print_access() {
    say "nexus is ready at $URL/ (configuration $CONF_FILE, data $STATE_DIR)"
    # The master key file, once the server generates one.
    if [ -f "$STATE_DIR/master.key" ]; then
        say "master key: $STATE_DIR/master.key (readable by root and $SERVICE_USER)"
    else
        say "no master key in $STATE_DIR: this build serves loopback clients without a key"
    fi
    say "logs: journalctl -u nexus; checks: nexus doctor; metrics: $URL/metrics"
}

if [ "$SERVICE" = 0 ] && [ -z "$DESTDIR" ] && [ -f "$UNIT_FILE" ] && grep -q "^ExecStart=$BIN_DIR/nexus " "$UNIT_FILE"; then
    say "$UNIT_FILE runs $BIN_DIR/nexus: treating this as the service's install"
    SERVICE=1 DATA_DIR=$STATE_DIR
fi
if [ "$DRY_RUN" = 0 ] && [ -z "$DESTDIR" ] && [ "$SERVICE" = 1 ] && [ "$(id -u)" != 0 ]; then
    die "the service's files belong to root: run it with sudo"
fi

if [ "$UNINSTALL" = 1 ]; then
    uninstall
    exit 0
fi

if [ "$SERVICE" = 1 ] && [ -z "$DESTDIR" ] && [ "$DRY_RUN" = 0 ] && ! systemd_running; then
    die "systemd is not running here (no /run/systemd/system): set DESTDIR to lay the files out only, or install without --service and run 'nexus serve' under your own supervisor"
fi
build_binary
if [ -n "$DESTDIR" ]; then
    run install -d -m 0755 "$(dirname "$TARGET")"
    run install -m 0755 "$BINARY" "$TARGET"
    [ "$SERVICE" = 0 ] || lay_out_service
    say "laid out under $DESTDIR (no user, no systemctl)"
    exit 0
fi
[ "$SERVICE" = 0 ] || lay_out_service
install_binary
[ "$SERVICE" = 0 ] || [ "$DRY_RUN" = 1 ] || print_access

#!/usr/bin/env bash
# user-session.sh — make a systemd user manager (and journald) available where no login
# session provides one: containers and CI machines where systemd is not PID 1.
#
#   contrib/user-session.sh start [DIR]   start journald (if root and missing) and
#                                         `systemd --user` with XDG_RUNTIME_DIR=DIR, then
#                                         print the exports on stdout:
#                                           eval "$(contrib/user-session.sh start)"
#   contrib/user-session.sh stop [DIR]    stop the manager this script started (by its
#                                         recorded pid, never by name) and wait for it
#   contrib/user-session.sh env [DIR]     print the exports for DIR
#
# DIR defaults to $XDG_RUNTIME_DIR when set, else /run/user/$(id -u) when that can be
# created, else a fixed directory under /tmp. Only the `export` lines go to stdout; every
# diagnostic goes to stderr, so `eval "$(... start)"` is safe.
#
# Before a manager starts, `start` writes DIR/systemd/user/dbus.service.d/rein-slice.conf,
# which puts that manager's bus in a slice of its own. Where several managers share one
# cgroup tree (cgroup v1 without delegation, as in containers) they would otherwise share
# /session.slice/dbus.service, and stopping or restarting one manager's bus would kill the
# dbus-daemons of all of them.
set -euo pipefail

readonly PID_FILE_NAME=rein-user-manager.pid
readonly MANAGER_LOG_NAME=rein-user-manager.log
readonly JOURNALD_LOG=/run/rein-journald.log
readonly START_TIMEOUT_DECISECONDS=100 # 10 s
readonly STOP_TIMEOUT_DECISECONDS=100

say() { printf 'user-session: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

usage() {
    cat >&2 <<'EOF'
usage: user-session.sh start|stop|env [DIR]
  start  start journald and a systemd user manager if none is reachable; print exports
  stop   stop the user manager this script started, by its recorded pid
  env    print the exports (eval "$(user-session.sh env)")
EOF
    exit 2
}

# The runtime dir to use: the explicit argument, else the caller's XDG_RUNTIME_DIR,
# else /run/user/UID if it exists or can be created, else a fixed dir under /tmp.
runtime_dir() {
    if [[ -n "${1:-}" ]]; then
        printf '%s\n' "$1"
    elif [[ -n "${XDG_RUNTIME_DIR:-}" ]]; then
        printf '%s\n' "$XDG_RUNTIME_DIR"
    elif mkdir -p "/run/user/$(id -u)" 2>/dev/null; then
        printf '%s\n' "/run/user/$(id -u)"
    else
        printf '%s\n' "/tmp/rein-user-session-$(id -u)"
    fi
}

print_env() {
    local dir=$1
    printf 'export XDG_RUNTIME_DIR=%q\n' "$dir"
    printf 'export DBUS_SESSION_BUS_ADDRESS=%q\n' "unix:path=$dir/bus"
}

# True when a user manager answers on DIR. `is-system-running` exits non-zero for
# "degraded" or "starting" too, so judge by what it prints, not by its exit code.
manager_reachable() {
    local dir=$1 state
    [[ -S "$dir/systemd/private" ]] || return 1
    state=$(XDG_RUNTIME_DIR="$dir" DBUS_SESSION_BUS_ADDRESS="unix:path=$dir/bus" \
        systemctl --user is-system-running 2>&1 || true)
    case "$state" in
    "" | offline | *"Failed to connect"* | *"No such file"* | *"Connection refused"*) return 1 ;;
    *) return 0 ;;
    esac
}

# True when systemd owns its name on DIR's bus.
systemd_on_bus() {
    busctl --address="unix:path=$1/bus" call org.freedesktop.DBus /org/freedesktop/DBus \
        org.freedesktop.DBus GetNameOwner s org.freedesktop.systemd1 >/dev/null 2>&1
}

# True while PID runs. A zombie counts as gone: where PID 1 is not a real init, an
# exited manager may never be reaped.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ "${stat:0:1}" != Z ]]
}

# The pid recorded by `start`, if that process is still a running systemd (a recycled
# pid that now belongs to something else is ignored, never signalled).
recorded_pid() {
    local dir=$1 pid
    [[ -r "$dir/$PID_FILE_NAME" ]] || return 1
    pid=$(<"$dir/$PID_FILE_NAME")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == systemd ]] || return 1
    printf '%s\n' "$pid"
}

# True when a journald answers. Its sockets outlive a killed journald, so connect to one:
# systemd-cat fails at once on a stale socket.
journald_alive() {
    [[ -S /run/systemd/journal/stdout ]] && systemd-cat true 2>/dev/null
}

start_journald() {
    if journald_alive; then
        return 0
    fi
    if [[ "$(id -u)" != 0 ]]; then
        say "journald is not running and only root can start it; unit output will not be journaled"
        return 0
    fi
    local journald=/lib/systemd/systemd-journald
    [[ -x "$journald" ]] || die "$journald not found (install the systemd package)"
    say "starting $journald (log: $JOURNALD_LOG)"
    setsid "$journald" </dev/null >>"$JOURNALD_LOG" 2>&1 &
    local i
    for ((i = 0; i < START_TIMEOUT_DECISECONDS; i++)); do
        journald_alive && return 0
        sleep 0.1
    done
    die "journald did not answer on /run/systemd/journal/stdout within 10 s (see $JOURNALD_LOG)"
}

# What systemd as PID 1 sets up at boot and worker sandboxing relies on, made here when no
# PID 1 systemd did (root only; a desktop session has all of it already):
# - /run/systemd/inaccessible/{dir,reg,fifo,sock,chr,blk}: the mode-0000 nodes that
#   InaccessiblePaths= and ProtectSystem= bind over hidden paths (without them every
#   sandboxed unit fails with status 226/NAMESPACE);
# - DIR/credentials as a shared mount: LoadCredential= builds each unit's credentials in a
#   private namespace and moves them there, which only reaches the manager through a shared
#   mount (without it $CREDENTIALS_DIRECTORY is empty).
prepare_sandboxing() {
    local dir=$1 nodes=/run/systemd/inaccessible
    [[ "$(id -u)" == 0 ]] || return 0
    if [[ ! -e "$nodes/sock" ]]; then
        mkdir -p "$nodes"
        [[ -e "$nodes/dir" ]] || mkdir -m 0000 "$nodes/dir"
        [[ -e "$nodes/reg" ]] || install -m 0000 /dev/null "$nodes/reg"
        [[ -e "$nodes/fifo" ]] || mkfifo -m 0000 "$nodes/fifo"
        [[ -e "$nodes/chr" ]] || mknod -m 0000 "$nodes/chr" c 0 0
        [[ -e "$nodes/blk" ]] || mknod -m 0000 "$nodes/blk" b 0 0
        python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$nodes/sock" &&
            chmod 0000 "$nodes/sock"
    fi
    mkdir -p "$dir/credentials"
    if ! mountpoint -q "$dir/credentials"; then
        mount --bind "$dir/credentials" "$dir/credentials" &&
            mount --make-shared "$dir/credentials" ||
            say "could not make $dir/credentials a shared mount; LoadCredential= will not reach units"
    fi
}

# The drop-in that gives DIR's bus a slice named after DIR. A `-` in a slice name means
# nesting, so the name is a word and a checksum of the path.
write_bus_slice() {
    local dir=$1 sum
    sum=$(printf '%s' "$dir" | cksum | cut -d' ' -f1)
    mkdir -p "$dir/systemd/user/dbus.service.d"
    printf '[Service]\nSlice=reinbus%s.slice\n' "$sum" >"$dir/systemd/user/dbus.service.d/rein-slice.conf"
}

cmd_start() {
    local dir
    dir=$(runtime_dir "${1:-}")

    # Unit output needs journald even when the manager already runs.
    start_journald
    if manager_reachable "$dir"; then
        say "a user manager is already reachable at $dir"
        print_env "$dir"
        return 0
    fi

    # `systemd --user` refuses to run unless the system looks booted with systemd.
    if [[ ! -d /run/systemd/system ]]; then
        mkdir -p /run/systemd/system ||
            die "cannot create /run/systemd/system (needed by systemd --user); run as root once"
    fi
    prepare_sandboxing "$dir"

    mkdir -p "$dir" || die "cannot create runtime dir $dir"
    chmod 0700 "$dir"

    local pid
    if pid=$(recorded_pid "$dir"); then
        say "user manager pid $pid is alive but not answering yet; waiting for it"
    else
        # Sockets left by a manager that is gone would satisfy the wait below at once.
        rm -f "$dir/systemd/private"
        if [[ -S "$dir/bus" ]] && ! busctl --address="unix:path=$dir/bus" status >/dev/null 2>&1; then
            rm -f "$dir/bus"
        fi
        local manager=/lib/systemd/systemd
        [[ -x "$manager" ]] || die "$manager not found (install the systemd package)"
        write_bus_slice "$dir"
        say "starting $manager --user with XDG_RUNTIME_DIR=$dir (log: $dir/$MANAGER_LOG_NAME)"
        XDG_RUNTIME_DIR="$dir" DBUS_SESSION_BUS_ADDRESS="unix:path=$dir/bus" \
            setsid nohup "$manager" --user </dev/null >>"$dir/$MANAGER_LOG_NAME" 2>&1 &
        pid=$!
        printf '%s\n' "$pid" >"$dir/$PID_FILE_NAME"
    fi

    # Up means systemd answers on its bus. The bus is socket-activated: the first call starts
    # dbus-daemon, and systemd takes its name there a moment later, so until then a client
    # finds the bus but no systemd on it.
    local i
    for ((i = 0; i < START_TIMEOUT_DECISECONDS; i++)); do
        if [[ -S "$dir/bus" && -S "$dir/systemd/private" ]] && systemd_on_bus "$dir"; then
            say "user manager pid $pid is up"
            print_env "$dir"
            return 0
        fi
        alive "$pid" ||
            die "systemd --user (pid $pid) exited; see $dir/$MANAGER_LOG_NAME"
        sleep 0.1
    done
    die "systemd --user (pid $pid) did not answer on $dir/bus and $dir/systemd/private within 10 s; see $dir/$MANAGER_LOG_NAME"
}

cmd_stop() {
    local dir pid
    dir=$(runtime_dir "${1:-}")
    if ! pid=$(recorded_pid "$dir"); then
        say "no user manager started by this script is running for $dir"
        rm -f "$dir/$PID_FILE_NAME"
        return 0
    fi
    say "stopping user manager pid $pid"
    kill -TERM "$pid"
    local i
    for ((i = 0; i < STOP_TIMEOUT_DECISECONDS; i++)); do
        if ! alive "$pid"; then
            break
        fi
        sleep 0.1
    done
    if alive "$pid"; then
        say "user manager pid $pid ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/$PID_FILE_NAME"
    # The shared credentials mount `start` made, so DIR can be removed afterwards.
    if [[ "$(id -u)" == 0 ]] && mountpoint -q "$dir/credentials"; then
        umount "$dir/credentials" 2>/dev/null || umount -l "$dir/credentials" 2>/dev/null || true
    fi
}

main() {
    [[ $# -ge 1 && $# -le 2 ]] || usage
    case "$1" in
    start) cmd_start "${2:-}" ;;
    stop) cmd_stop "${2:-}" ;;
    env) print_env "$(runtime_dir "${2:-}")" ;;
    *) usage ;;
    esac
}

main "$@"

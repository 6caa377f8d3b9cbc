#!/usr/bin/env bash
# desktop-session.sh — a headless KDE desktop for the Konsole bridge: Xvfb, KWin (X11) with
# at least four virtual desktops, and one Konsole window, all on the session bus of a
# systemd user manager. For CI and containers; on a real Plasma desktop you need none of it.
#
#   contrib/desktop-session.sh start DIR   install the packages if missing, start what is not
#                                          running yet, wait until org.kde.KWin and
#                                          org.kde.konsole-PID answer on the session bus and
#                                          the Konsole window is managed, then print exports:
#                                            eval "$(contrib/desktop-session.sh start DIR)"
#   contrib/desktop-session.sh stop DIR    stop what `start` started, by recorded pid
#   contrib/desktop-session.sh env DIR     print the exports of a running desktop
#
# Needs a session bus: XDG_RUNTIME_DIR and DBUS_SESSION_BUS_ADDRESS must be set, e.g. by
#   eval "$(contrib/user-session.sh start)"
# DIR holds the pid files, logs and a private XDG_CONFIG_HOME (kwinrc with the desktops and
# compositing off), so the user's own KDE settings are never read or changed. `start` is
# idempotent: run twice, it reuses what runs. Only the `export` lines go to stdout.
set -euo pipefail

readonly PACKAGES=(konsole kwin-x11 xvfb dbus-x11 wmctrl xdotool)
readonly COMMANDS=(konsole kwin_x11 Xvfb dbus-launch wmctrl xdotool busctl)
readonly DESKTOPS=4
readonly START_TIMEOUT_DECISECONDS=300 # 30 s for each component
readonly STOP_TIMEOUT_DECISECONDS=100
readonly BUS_TIMEOUT=5s

say() { printf 'desktop-session: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

usage() {
    cat >&2 <<'EOF'
usage: desktop-session.sh start|stop|env DIR
  start  start Xvfb, KWin (4+ virtual desktops) and Konsole on the session bus; print exports
  stop   stop what start started, by recorded pid
  env    print the exports (eval "$(desktop-session.sh env DIR)")
EOF
    exit 2
}

# True while PID runs and is the program COMM. A zombie counts as gone: where PID 1 is not
# a real init, an exited process may never be reaped.
alive() {
    local pid=$1 comm=$2 stat
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ "${stat:0:1}" != Z ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$comm" ]]
}

# True while PID runs (whatever it runs: just after `cmd &` it may not have exec'd COMM yet).
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ "${stat:0:1}" != Z ]]
}

# The pid recorded for NAME in DIR, if that process still runs COMM.
recorded() {
    local dir=$1 name=$2 comm=$3 pid
    [[ -r "$dir/$name.pid" ]] || return 1
    pid=$(<"$dir/$name.pid")
    alive "$pid" "$comm" || return 1
    printf '%s\n' "$pid"
}

ensure_packages() {
    local missing=() command
    for command in "${COMMANDS[@]}"; do
        command -v "$command" >/dev/null 2>&1 || missing+=("$command")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ "$(id -u)" == 0 ]] ||
        die "missing ${missing[*]}; install them with: sudo apt-get install -y --no-install-recommends ${PACKAGES[*]}"
    say "installing ${PACKAGES[*]} (missing: ${missing[*]})"
    local apt=(apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "${PACKAGES[@]}")
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" >&2; then
        say "install failed; refreshing the package lists and trying once more"
        apt-get -o DPkg::Lock::Timeout=300 update >&2
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" >&2 || die "apt-get install ${PACKAGES[*]} failed"
    fi
    for command in "${COMMANDS[@]}"; do
        command -v "$command" >/dev/null 2>&1 || die "$command is still missing after the install"
    done
}

ensure_bus() {
    [[ -n "${XDG_RUNTIME_DIR:-}" && -n "${DBUS_SESSION_BUS_ADDRESS:-}" ]] ||
        die 'no session bus: set XDG_RUNTIME_DIR and DBUS_SESSION_BUS_ADDRESS, e.g. eval "$(contrib/user-session.sh start)"'
    busctl --user --timeout="$BUS_TIMEOUT" list >/dev/null 2>&1 ||
        die "the session bus at $DBUS_SESSION_BUS_ADDRESS does not answer; start it with contrib/user-session.sh start"
}

# The pid that owns bus NAME, if any.
bus_owner() {
    { busctl --user --timeout="$BUS_TIMEOUT" status "$1" 2>/dev/null || true; } | sed -n 's/^PID=\([0-9]*\)$/\1/p'
}

write_config() {
    local dir=$1
    mkdir -p "$dir/config"
    # Compositing on a software-rendered Xvfb would only burn the CPU.
    cat >"$dir/config/kwinrc" <<EOF
[Desktops]
Number=$DESKTOPS
Rows=1

[Compositing]
Enabled=false
EOF
}

start_xvfb() {
    local dir=$1 pid display i
    if pid=$(recorded "$dir" xvfb Xvfb) && [[ -s "$dir/display" ]]; then
        return 0
    fi
    rm -f "$dir/display"
    # -displayfd: Xvfb picks a free display itself and writes its number once it is ready.
    setsid Xvfb -displayfd 3 -screen 0 1280x800x24 -nolisten tcp \
        </dev/null >>"$dir/xvfb.log" 2>&1 3>"$dir/display.new" &
    pid=$!
    printf '%s\n' "$pid" >"$dir/xvfb.pid"
    for ((i = 0; i < START_TIMEOUT_DECISECONDS; i++)); do
        display=$(head -n1 "$dir/display.new" 2>/dev/null || true)
        if [[ "$display" =~ ^[0-9]+$ ]] && [[ "$(wc -l <"$dir/display.new")" -ge 1 ]]; then
            printf ':%s\n' "$display" >"$dir/display"
            rm -f "$dir/display.new"
            say "Xvfb pid $pid is up on :$display"
            return 0
        fi
        running "$pid" || die "Xvfb exited; see $dir/xvfb.log"
        sleep 0.1
    done
    die "Xvfb (pid $pid) reported no display within 30 s; see $dir/xvfb.log"
}

# KWin asks org.kde.kglobalaccel for its shortcuts and blocks while the bus tries to
# activate it: the systemd unit that would start it has no DISPLAY and aborts. Run one here.
start_kglobalaccel() {
    local dir=$1 pid i
    command -v kglobalaccel5 >/dev/null 2>&1 || return 0
    [[ -z "$(bus_owner org.kde.kglobalaccel)" ]] || return 0
    # One recorded here but not on this bus belongs to an earlier user manager.
    stop_one "$dir" kglobalaccel kglobalaccel5
    DISPLAY=$(<"$dir/display") XDG_CONFIG_HOME="$dir/config" \
        setsid kglobalaccel5 </dev/null >>"$dir/kglobalaccel.log" 2>&1 &
    pid=$!
    printf '%s\n' "$pid" >"$dir/kglobalaccel.pid"
    for ((i = 0; i < START_TIMEOUT_DECISECONDS; i++)); do
        [[ -n "$(bus_owner org.kde.kglobalaccel)" ]] && return 0
        running "$pid" || die "kglobalaccel5 exited; see $dir/kglobalaccel.log"
        sleep 0.1
    done
    die "kglobalaccel5 (pid $pid) did not take org.kde.kglobalaccel within 30 s"
}

desktop_count() {
    { busctl --user --timeout="$BUS_TIMEOUT" get-property org.kde.KWin /VirtualDesktopManager \
        org.kde.KWin.VirtualDesktopManager count 2>/dev/null || true; } | sed -n 's/^u \([0-9]*\)$/\1/p'
}

start_kwin() {
    local dir=$1 pid owner count i
    # A KWin of an earlier run that is not on this bus (the user manager was restarted) is
    # no use: replace it.
    if pid=$(recorded "$dir" kwin kwin_x11) && [[ "$(bus_owner org.kde.KWin)" != "$pid" ]]; then
        stop_one "$dir" kwin kwin_x11
    fi
    if ! pid=$(recorded "$dir" kwin kwin_x11); then
        owner=$(bus_owner org.kde.KWin)
        [[ -z "$owner" ]] ||
            die "another KWin (pid $owner) owns org.kde.KWin on this session bus; stop it, or use another user manager"
        DISPLAY=$(<"$dir/display") XDG_CONFIG_HOME="$dir/config" \
            setsid kwin_x11 </dev/null >>"$dir/kwin.log" 2>&1 &
        pid=$!
        printf '%s\n' "$pid" >"$dir/kwin.pid"
    fi
    for ((i = 0; i < START_TIMEOUT_DECISECONDS; i++)); do
        count=$(desktop_count)
        if [[ "$(bus_owner org.kde.KWin)" == "$pid" && -n "$count" ]]; then
            break
        fi
        running "$pid" || die "kwin_x11 exited; see $dir/kwin.log"
        sleep 0.1
    done
    [[ -n "${count:-}" ]] || die "kwin_x11 (pid $pid) did not answer on org.kde.KWin within 30 s; see $dir/kwin.log"
    # kwinrc sets the desktops; should KWin have read another config, add them over D-Bus.
    while ((count < DESKTOPS)); do
        busctl --user --timeout="$BUS_TIMEOUT" call org.kde.KWin /VirtualDesktopManager \
            org.kde.KWin.VirtualDesktopManager createDesktop us "$count" "Desktop $((count + 1))" >&2
        count=$(desktop_count)
        [[ -n "$count" ]] || die "KWin stopped answering while desktops were added"
    done
    say "KWin pid $pid is up with $count virtual desktops"
}

start_konsole() {
    local dir=$1 pid i display
    display=$(<"$dir/display")
    if pid=$(recorded "$dir" konsole konsole) && [[ "$(bus_owner "org.kde.konsole-$pid")" != "$pid" ]]; then
        stop_one "$dir" konsole konsole
    fi
    if ! pid=$(recorded "$dir" konsole konsole); then
        DISPLAY=$display XDG_CONFIG_HOME="$dir/config" \
            setsid konsole --workdir "${HOME:-/}" </dev/null >>"$dir/konsole.log" 2>&1 &
        pid=$!
        printf '%s\n' "$pid" >"$dir/konsole.pid"
    fi
    for ((i = 0; i < START_TIMEOUT_DECISECONDS; i++)); do
        # Ready when its bus name answers and KWin manages its window.
        if [[ "$(bus_owner "org.kde.konsole-$pid")" == "$pid" ]] &&
            DISPLAY=$display wmctrl -l -p 2>/dev/null | awk -v pid="$pid" '$3 == pid { found = 1 } END { exit !found }'; then
            say "Konsole pid $pid is up as org.kde.konsole-$pid"
            return 0
        fi
        running "$pid" || die "konsole exited; see $dir/konsole.log"
        sleep 0.1
    done
    die "konsole (pid $pid) did not show a window on org.kde.konsole-$pid within 30 s; see $dir/konsole.log"
}

print_env() {
    local dir=$1 konsole
    [[ -s "$dir/display" ]] || die "no desktop recorded in $dir; run: desktop-session.sh start $dir"
    konsole=$(recorded "$dir" konsole konsole) || die "the Konsole of $dir is not running; run: desktop-session.sh start $dir"
    printf 'export DISPLAY=%q\n' "$(<"$dir/display")"
    printf 'export REIN_KONSOLE_SERVICE=%q\n' "org.kde.konsole-$konsole"
    printf 'export XDG_RUNTIME_DIR=%q\n' "$XDG_RUNTIME_DIR"
    printf 'export DBUS_SESSION_BUS_ADDRESS=%q\n' "$DBUS_SESSION_BUS_ADDRESS"
}

cmd_start() {
    local dir=$1
    ensure_packages
    ensure_bus
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    write_config "$dir"
    start_xvfb "$dir"
    start_kglobalaccel "$dir"
    start_kwin "$dir"
    start_konsole "$dir"
    print_env "$dir"
}

# Stops NAME's recorded process and waits for it to go.
stop_one() {
    local dir=$1 name=$2 comm=$3 pid i
    if ! pid=$(recorded "$dir" "$name" "$comm"); then
        rm -f "$dir/$name.pid"
        return 0
    fi
    say "stopping $comm pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT_DECISECONDS; i++)); do
        alive "$pid" "$comm" || break
        sleep 0.1
    done
    if alive "$pid" "$comm"; then
        say "$comm pid $pid ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/$name.pid"
}

cmd_stop() {
    local dir=$1
    [[ -d "$dir" ]] || return 0
    stop_one "$dir" konsole konsole
    stop_one "$dir" kwin kwin_x11
    stop_one "$dir" kglobalaccel kglobalaccel5
    stop_one "$dir" xvfb Xvfb
    rm -f "$dir/display" "$dir/display.new"
}

main() {
    [[ $# -eq 2 && -n "$2" ]] || usage
    case "$1" in
    start) cmd_start "$2" ;;
    stop) cmd_stop "$2" ;;
    env)
        ensure_bus
        print_env "$(cd "$2" && pwd)"
        ;;
    *) usage ;;
    esac
}

main "$@"

#!/usr/bin/env bash
# The README's test command: sets up everything rein's tests need on a fresh machine, then
# runs them.
#
# On a machine without a systemd user manager (containers, CI) it installs the Debian
# packages the tests use (as root), starts a private user manager and journald with
# contrib/user-session.sh, runs the tests, and stops the manager it started by its pid.
# On a desktop with a running user manager it uses that one: every test makes its own
# profile, so no real unit is touched.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'test.sh: %s\n' "$*" >&2; }

# Debian packages the test suite drives for real.
PACKAGES=(dbus dbus-user-session systemd tmux git)

install_packages() {
    local missing=()
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    ((${#missing[@]} == 0)) && return 0
    if [[ $(id -u) -ne 0 ]]; then
        say "missing packages: ${missing[*]}; install them (sudo apt-get install ${missing[*]}) and re-run"
        exit 1
    fi
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

started_session=""
# Servers the bridge tests start for themselves (real IMAP/SMTP, Xvfb + KWin + Konsole) are
# stopped here, by the pids their scripts recorded.
MAIL_DIR=${REIN_MAIL_DIR:-/tmp/rein-mail-servers}
DESKTOP_DIR=$PWD/target/tmp/konsole-desktop
cleanup() {
    [[ -d "$MAIL_DIR" ]] && contrib/mail-servers.sh stop "$MAIL_DIR" >/dev/null 2>&1 || true
    [[ -d "$DESKTOP_DIR" ]] && contrib/desktop-session.sh stop "$DESKTOP_DIR" >/dev/null 2>&1 || true
    if [[ -n "$started_session" ]]; then
        contrib/user-session.sh stop "$started_session" >/dev/null || true
    fi
}
trap cleanup EXIT

if command -v dpkg-query >/dev/null; then
    install_packages
fi

# A user manager that already answers (a desktop session, or one started earlier) is used
# and left running; otherwise one is started here and stopped at exit.
runtime_dir=${XDG_RUNTIME_DIR:-/run/user/$(id -u)}
if XDG_RUNTIME_DIR=$runtime_dir systemctl --user show-environment >/dev/null 2>&1; then
    export XDG_RUNTIME_DIR=$runtime_dir
    export DBUS_SESSION_BUS_ADDRESS=${DBUS_SESSION_BUS_ADDRESS:-unix:path=$runtime_dir/bus}
    say "using the user manager at $runtime_dir"
else
    eval "$(contrib/user-session.sh start)"
    started_session="$XDG_RUNTIME_DIR"
fi

# The real agent CLIs at pinned versions, for tests/agents_offline.rs (a no-op when present).
eval "$(contrib/agents.sh install)"

cargo test --workspace "$@"
# The benchmark program, run as a quick smoke check of itself (not a measurement).
cargo test --workspace --bench rein

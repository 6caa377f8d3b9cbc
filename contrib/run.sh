#!/usr/bin/env bash
# The README's main-job command: builds rein, makes sure a systemd user manager is reachable
# (on a machine without a login session it starts a private one with contrib/user-session.sh,
# left running so the fleet keeps beating), brings the fleet up on the embedded defaults (or
# your config), and shows its status.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
rein=$PWD/target/release/rein

runtime_dir=${XDG_RUNTIME_DIR:-/run/user/$(id -u)}
if XDG_RUNTIME_DIR=$runtime_dir systemctl --user show-environment >/dev/null 2>&1; then
    export XDG_RUNTIME_DIR=$runtime_dir
    export DBUS_SESSION_BUS_ADDRESS=${DBUS_SESSION_BUS_ADDRESS:-unix:path=$runtime_dir/bus}
else
    eval "$(contrib/user-session.sh start)"
fi

"$rein" up
"$rein" status
echo
echo "rein is up. Try: $rein asks; $rein worker start w1 'your brief'; $rein down"
echo "In another shell: export XDG_RUNTIME_DIR=$XDG_RUNTIME_DIR DBUS_SESSION_BUS_ADDRESS=$DBUS_SESSION_BUS_ADDRESS"

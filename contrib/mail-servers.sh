#!/usr/bin/env bash
# mail-servers.sh — real mail servers on loopback for the email bridge's tests (and for
# trying the bridge by hand): dovecot for IMAP and aiosmtpd for SMTP, which delivers into
# dovecot's mailboxes over LMTP. Everything they keep lives under DIR.
#
#   contrib/mail-servers.sh start DIR   install what is missing (Debian packages as root:
#                                       dovecot-imapd, dovecot-lmtpd, python3-aiosmtpd;
#                                       else aiosmtpd from PyPI into DIR/venv), start the
#                                       servers unless they already run, print the exports:
#                                         eval "$(contrib/mail-servers.sh start DIR)"
#   contrib/mail-servers.sh stop DIR    stop the servers started for DIR, by recorded pids
#   contrib/mail-servers.sh env DIR     print the exports for running servers
#
# What runs, all bound to 127.0.0.1 on ports chosen free at the first start and kept:
# - IMAP with STARTTLS ($REIN_MAIL_IMAP_PORT) and IMAP over TLS ($REIN_MAIL_IMAPS_PORT),
#   IDLE supported; the user noidle@ is told the server can only IMAP4rev1 (no IDLE, to
#   test polling).
# - SMTP with STARTTLS ($REIN_MAIL_SMTP_PORT; plain text also accepted, AUTH only after
#   STARTTLS) and SMTP over TLS ($REIN_MAIL_SMTPS_PORT); AUTH PLAIN/LOGIN optional. Mail to
#   a known user is delivered to their INBOX; any other recipient is refused with 550.
# - Users (every one with password $REIN_MAIL_PASSWORD), all @example.test: rein1..rein8
#   (bridge accounts, one per test), ana, bob, eve, noidle.
# - TLS: a self-signed CA ($REIN_MAIL_CA_FILE) and a server certificate for localhost and
#   127.0.0.1 that it signed.
#
# Only the `export` lines go to stdout; diagnostics go to stderr. A second `start` while the
# servers run prints the exports at once; concurrent starts are serialised with a lock.
set -euo pipefail

readonly DOMAIN=example.test
readonly USERS=(rein1 rein2 rein3 rein4 rein5 rein6 rein7 rein8 ana bob eve noidle)
readonly PACKAGES=(dovecot-imapd dovecot-lmtpd python3-aiosmtpd)
readonly START_TIMEOUT_DECISECONDS=150 # 15 s
readonly STOP_TIMEOUT_DECISECONDS=100
# What the user noidle@ is told the server can do after login: no IDLE (passwd-file extra
# fields end at a space, so this is the bare minimum).
readonly NO_IDLE_CAPABILITIES=IMAP4rev1

say() { printf 'mail-servers: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

usage() {
    cat >&2 <<'EOF'
usage: mail-servers.sh start|stop|env DIR
  start  install (if missing) and start IMAP + SMTP on 127.0.0.1 with state under DIR;
         print exports (eval "$(mail-servers.sh start DIR)")
  stop   stop the servers started for DIR, by their recorded pids
  env    print the exports for DIR
EOF
    exit 2
}

# True while PID runs (a zombie counts as gone).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ "${stat:0:1}" != Z ]]
}

# The pid recorded in FILE if that process still runs the expected program (a recycled pid
# that now belongs to something else is never signalled).
recorded_pid() {
    local file=$1 comm=$2 pid
    [[ -r "$file" ]] || return 1
    pid=$(<"$file")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$comm"* ]] || return 1
    printf '%s\n' "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- installation -----------------------------------------------------------------------

have_dovecot() { [[ -x /usr/sbin/dovecot && -x /usr/lib/dovecot/imap && -x /usr/lib/dovecot/lmtp ]]; }

# The Python that can import aiosmtpd: Debian's, else a venv under DIR.
python_with_aiosmtpd() {
    local dir=$1 candidate
    for candidate in /usr/bin/python3 "$dir/venv/bin/python3"; do
        if [[ -x "$candidate" ]] && "$candidate" -c 'import aiosmtpd' 2>/dev/null; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

install_missing() {
    local dir=$1
    if have_dovecot && python_with_aiosmtpd "$dir" >/dev/null; then
        return 0
    fi
    if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
        say "installing ${PACKAGES[*]}"
        # Package scripts that try to start the services print "Failed to connect to bus"
        # in containers; the install still succeeds and the servers are started below.
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${PACKAGES[@]}" >"$dir/apt.log" 2>&1; then
            apt-get update -qq >>"$dir/apt.log" 2>&1 || true
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                "${PACKAGES[@]}" >>"$dir/apt.log" 2>&1 ||
                say "apt-get install failed (see $dir/apt.log)"
        fi
    fi
    have_dovecot || die "dovecot (IMAP and LMTP) is missing; install ${PACKAGES[*]} as root"
    if ! python_with_aiosmtpd "$dir" >/dev/null; then
        say "installing aiosmtpd from PyPI into $dir/venv"
        python3 -m venv "$dir/venv" >&2 || die "python3 -m venv failed; install python3-venv or python3-aiosmtpd"
        "$dir/venv/bin/pip" install -q aiosmtpd >&2 || die "pip install aiosmtpd failed"
    fi
}

# As root, dovecot reads and writes mail as the `mail` user: every directory above DIR must
# let it through.
check_reachable() {
    local dir=$1
    [[ "$(id -u)" == 0 ]] || return 0
    command -v runuser >/dev/null || return 0
    runuser -u mail -- test -x "$dir" ||
        die "the mail user cannot reach $dir (a parent directory is private); use a DIR under /tmp"
}

# --- configuration ----------------------------------------------------------------------

# Four free loopback ports, chosen once and kept in DIR/ports; chosen again when one of the
# kept ones is taken (the servers are stopped when this runs).
choose_ports() {
    local dir=$1 port taken=""
    if [[ -s "$dir/ports" ]]; then
        for port in $(<"$dir/ports"); do
            port_open "$port" && taken=yes
        done
        [[ -z "$taken" ]] && return 0
        say "a port of $(<"$dir/ports") is in use by something else; choosing new ones"
    fi
    python3 - >"$dir/ports" <<'EOF'
import socket
sockets = [socket.socket() for _ in range(4)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in sockets))
EOF
}

make_certificates() {
    local tls=$1
    [[ -s "$tls/server.pem" && -s "$tls/ca.pem" ]] && return 0
    mkdir -p "$tls"
    say "generating a test CA and server certificate in $tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -keyout "$tls/ca.key" -out "$tls/ca.pem" -subj "/CN=rein test mail CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$tls/server.key" -out "$tls/server.csr" -subj "/CN=localhost" 2>/dev/null
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
        >"$tls/server.ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
        -CAcreateserial -days 3650 -extfile "$tls/server.ext" -out "$tls/server.pem" 2>/dev/null
    chmod 0644 "$tls/ca.pem" "$tls/server.pem"
    chmod 0600 "$tls/ca.key" "$tls/server.key"
}

write_config() {
    local dir=$1 imap_port imaps_port smtp_port smtps_port
    read -r imap_port imaps_port smtp_port smtps_port <"$dir/ports"

    # As root, dovecot's mail processes run as the `mail` user (it refuses root); otherwise
    # everything runs as the invoking user.
    local mail_user internal_user login_user
    if [[ "$(id -u)" == 0 ]]; then
        mail_user=mail internal_user=dovecot login_user=dovenull
    else
        mail_user=$(id -un) internal_user=$(id -un) login_user=$(id -un)
    fi
    local uid gid
    uid=$(id -u "$mail_user")
    gid=$(id -g "$mail_user")

    [[ -s "$dir/password" ]] || python3 -c 'import secrets; print(secrets.token_hex(12))' >"$dir/password"
    local password
    password=$(<"$dir/password")

    mkdir -p "$dir/mail" "$dir/run" "$dir/state"
    local user extra
    : >"$dir/users.tmp"
    for user in "${USERS[@]}"; do
        extra=""
        [[ "$user" == noidle ]] && extra="userdb_imap_capability=$NO_IDLE_CAPABILITIES"
        printf '%s@%s:{PLAIN}%s:%s:%s::%s::%s\n' "$user" "$DOMAIN" "$password" "$uid" "$gid" \
            "$dir/mail/$user@$DOMAIN" "$extra" >>"$dir/users.tmp"
    done
    mv "$dir/users.tmp" "$dir/users"
    if [[ "$(id -u)" == 0 ]]; then
        chown "root:$internal_user" "$dir/users"
        chmod 0640 "$dir/users"
        chown "$mail_user:$mail_user" "$dir/mail"
        chmod 0700 "$dir/mail"
    fi

    cat >"$dir/dovecot.conf" <<EOF
# Written by contrib/mail-servers.sh; rewritten at every start.
base_dir = $dir/run
state_dir = $dir/state
instance_name = rein-test-mail-$imap_port
log_path = $dir/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
default_internal_user = $internal_user
default_login_user = $login_user
first_valid_uid = $uid
last_valid_uid = $uid
first_valid_gid = $gid
mail_location = maildir:~/Maildir
auth_mechanisms = plain login
auth_username_format = %Lu
ssl = yes
ssl_cert = <$dir/tls/server.pem
ssl_key = <$dir/tls/server.key
ssl_min_protocol = TLSv1.2
passdb {
  driver = passwd-file
  args = scheme=PLAIN $dir/users
}
userdb {
  driver = passwd-file
  args = $dir/users
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $imap_port
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $imaps_port
    ssl = yes
  }
}
service lmtp {
  unix_listener lmtp {
    mode = 0600
  }
}
service pop3-login {
  inet_listener pop3 {
    port = 0
  }
  inet_listener pop3s {
    port = 0
  }
}
EOF

    cat >"$dir/smtpd.py" <<'EOF'
"""SMTP for rein's tests: accepts mail for the users in DIR/users and hands it to dovecot
over LMTP. Written by contrib/mail-servers.sh; rewritten at every start."""
import asyncio
import signal
import smtplib
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

state_dir, smtp_port, smtps_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

users = {}
with open(f"{state_dir}/users") as lines:
    for line in lines:
        name, password = line.split(":")[:2]
        users[name.lower()] = password.removeprefix("{PLAIN}")


def deliver(envelope):
    with smtplib.LMTP(f"{state_dir}/run/lmtp") as lmtp:
        refused = lmtp.sendmail(envelope.mail_from, envelope.rcpt_tos, envelope.original_content)
    if refused:
        raise RuntimeError(f"LMTP refused {refused}")


class Deliver:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() not in users:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        try:
            await asyncio.get_running_loop().run_in_executor(None, deliver, envelope)
        except Exception as error:  # noqa: BLE001 - any failure is a temporary one here
            return f"451 4.3.0 delivery failed: {error}"
        return "250 2.0.0 delivered"


def authenticate(server, session, envelope, mechanism, auth_data):
    if isinstance(auth_data, LoginPassword):
        login = auth_data.login.decode("utf-8", "replace").lower()
        if login in users and users[login] == auth_data.password.decode("utf-8", "replace"):
            return AuthResult(success=True)
    return AuthResult(success=False, handled=False)


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(f"{state_dir}/tls/server.pem", f"{state_dir}/tls/server.key")

starttls = Controller(
    Deliver(), hostname="127.0.0.1", port=smtp_port, server_hostname="localhost",
    tls_context=context, require_starttls=False, authenticator=authenticate,
    auth_required=False, auth_require_tls=True,
)
implicit_tls = Controller(
    Deliver(), hostname="127.0.0.1", port=smtps_port, server_hostname="localhost",
    ssl_context=context, authenticator=authenticate, auth_required=False,
    auth_require_tls=False,
)
starttls.start()
implicit_tls.start()
print(f"listening on 127.0.0.1:{smtp_port} (STARTTLS) and :{smtps_port} (TLS)", flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
starttls.stop()
implicit_tls.stop()
EOF
}

print_env() {
    local dir=$1 imap_port imaps_port smtp_port smtps_port
    read -r imap_port imaps_port smtp_port smtps_port <"$dir/ports"
    printf 'export REIN_MAIL_DIR=%q\n' "$dir"
    printf 'export REIN_MAIL_HOST=127.0.0.1\n'
    printf 'export REIN_MAIL_IMAP_PORT=%q\n' "$imap_port"
    printf 'export REIN_MAIL_IMAPS_PORT=%q\n' "$imaps_port"
    printf 'export REIN_MAIL_SMTP_PORT=%q\n' "$smtp_port"
    printf 'export REIN_MAIL_SMTPS_PORT=%q\n' "$smtps_port"
    printf 'export REIN_MAIL_CA_FILE=%q\n' "$dir/tls/ca.pem"
    printf 'export REIN_MAIL_DOMAIN=%q\n' "$DOMAIN"
    printf 'export REIN_MAIL_USERS=%q\n' "${USERS[*]}"
    printf 'export REIN_MAIL_PASSWORD=%q\n' "$(<"$dir/password")"
}

all_ports_open() {
    local dir=$1 port
    for port in $(<"$dir/ports"); do
        port_open "$port" || return 1
    done
}

servers_running() {
    local dir=$1
    recorded_pid "$dir/dovecot.pid" dovecot >/dev/null &&
        recorded_pid "$dir/smtpd.pid" python >/dev/null &&
        [[ -s "$dir/ports" ]] && all_ports_open "$dir"
}

start_servers() {
    local dir=$1 python imap_port imaps_port smtp_port smtps_port
    python=$(python_with_aiosmtpd "$dir")
    read -r imap_port imaps_port smtp_port smtps_port <"$dir/ports"

    if ! recorded_pid "$dir/dovecot.pid" dovecot >/dev/null; then
        say "starting dovecot on 127.0.0.1:$imap_port (STARTTLS) and :$imaps_port (TLS); log $dir/dovecot.log"
        setsid /usr/sbin/dovecot -F -c "$dir/dovecot.conf" </dev/null >>"$dir/dovecot.out" 2>&1 9>&- &
        printf '%s\n' "$!" >"$dir/dovecot.pid"
    fi
    # aiosmtpd hands mail to dovecot's LMTP socket: start it once dovecot is up.
    local i
    for ((i = 0; i < START_TIMEOUT_DECISECONDS; i++)); do
        [[ -S "$dir/run/lmtp" ]] && port_open "$imap_port" && port_open "$imaps_port" && break
        alive "$(<"$dir/dovecot.pid")" ||
            die "dovecot exited; see $dir/dovecot.out and $dir/dovecot.log"
        sleep 0.1
    done
    if ! recorded_pid "$dir/smtpd.pid" python >/dev/null; then
        say "starting aiosmtpd on 127.0.0.1:$smtp_port (STARTTLS) and :$smtps_port (TLS); log $dir/smtpd.log"
        setsid "$python" "$dir/smtpd.py" "$dir" "$smtp_port" "$smtps_port" </dev/null >>"$dir/smtpd.log" 2>&1 9>&- &
        printf '%s\n' "$!" >"$dir/smtpd.pid"
    fi
    for ((i = 0; i < START_TIMEOUT_DECISECONDS; i++)); do
        all_ports_open "$dir" && [[ -S "$dir/run/lmtp" ]] && return 0
        # Just-started processes may not have exec'd yet: check only that they live.
        alive "$(<"$dir/dovecot.pid")" ||
            die "dovecot exited; see $dir/dovecot.out and $dir/dovecot.log"
        alive "$(<"$dir/smtpd.pid")" || die "aiosmtpd exited; see $dir/smtpd.log"
        sleep 0.1
    done
    die "the mail servers did not listen on ports $(<"$dir/ports") within 15 s; see $dir/dovecot.log and $dir/smtpd.log"
}

cmd_start() {
    local dir=$1
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    # Mail processes run as another user when we are root: they must reach DIR.
    chmod 0755 "$dir"
    exec 9>"$dir/.lock"
    flock 9
    if servers_running "$dir"; then
        print_env "$dir"
        return 0
    fi
    # Half-running servers (one died, or the machine restarted) are restarted together.
    stop_one "$dir/smtpd.pid" python aiosmtpd
    stop_one "$dir/dovecot.pid" dovecot dovecot
    install_missing "$dir"
    check_reachable "$dir"
    choose_ports "$dir"
    make_certificates "$dir/tls"
    write_config "$dir"
    start_servers "$dir"
    print_env "$dir"
}

stop_one() {
    local file=$1 comm=$2 name=$3 pid i
    if ! pid=$(recorded_pid "$file" "$comm"); then
        rm -f "$file"
        return 0
    fi
    say "stopping $name (pid $pid)"
    kill -TERM "$pid"
    for ((i = 0; i < STOP_TIMEOUT_DECISECONDS; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        say "$name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

cmd_stop() {
    local dir=$1
    [[ -d "$dir" ]] || return 0
    exec 9>"$dir/.lock"
    flock 9
    stop_one "$dir/smtpd.pid" python aiosmtpd
    stop_one "$dir/dovecot.pid" dovecot dovecot
}

cmd_env() {
    local dir=$1
    servers_running "$dir" || die "no mail servers started by this script run for $dir; use start"
    print_env "$dir"
}

main() {
    [[ $# -eq 2 && -n "$2" ]] || usage
    case "$1" in
    start) cmd_start "$2" ;;
    stop) cmd_stop "$2" ;;
    env) cmd_env "$2" ;;
    *) usage ;;
    esac
}

main "$@"

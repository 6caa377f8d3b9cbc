#!/usr/bin/env bash
# Installs the real agent CLIs rein drives (claude, codex, opencode, pi) at pinned versions
# into a project-local prefix, so nothing global changes and tests run the same versions
# everywhere.
#
#   contrib/agents.sh install [PREFIX]   install what is missing or at another version
#   contrib/agents.sh env [PREFIX]       print the PATH line only (fails if not installed)
#
# PREFIX defaults to target/agents. Both print `export PATH=PREFIX/node_modules/.bin:$PATH`
# on stdout, for `eval "$(contrib/agents.sh install)"`; diagnostics go to stderr. A second
# install with everything present checks versions on disk and touches no network.
set -euo pipefail
cd "$(dirname "$0")/.."

# The versions the offline recipes were checked with (tests/agents_offline.rs).
PACKAGES=(
    "@anthropic-ai/claude-code@2.1.332"
    "@openai/codex@0.171.0"
    "opencode-ai@1.18.33"
    "@mariozechner/pi-coding-agent@0.73.1"
)
BINARIES=(claude codex opencode pi)

say() { printf 'agents.sh: %s\n' "$*" >&2; }
die() {
    say "$*"
    exit 1
}

usage() {
    say "usage: contrib/agents.sh install|env [PREFIX]   (PREFIX defaults to target/agents)"
    exit 2
}

# name@version -> name (scoped names keep their leading @).
package_name() { printf '%s' "${1%@*}"; }
package_version() { printf '%s' "${1##*@}"; }

absolute() {
    mkdir -p "$1"
    (cd "$1" && pwd)
}

# The version of a package installed under the prefix, or nothing.
installed_version() {
    local manifest="$1/node_modules/$2/package.json"
    [[ -f "$manifest" ]] || return 0
    node -e 'process.stdout.write(String(require(process.argv[1]).version || ""))' "$manifest" 2>/dev/null || true
}

missing_packages() {
    local prefix=$1 spec
    for spec in "${PACKAGES[@]}"; do
        if [[ "$(installed_version "$prefix" "$(package_name "$spec")")" != "$(package_version "$spec")" ]]; then
            printf '%s\n' "$spec"
        fi
    done
    for binary in "${BINARIES[@]}"; do
        [[ -x "$prefix/node_modules/.bin/$binary" ]] || printf 'binary:%s\n' "$binary"
    done
}

require_node() {
    command -v node >/dev/null || die "node is not installed; install Node.js 20 or newer (Debian: apt-get install nodejs npm) and re-run"
    command -v npm >/dev/null || die "npm is not installed; install it (Debian: apt-get install npm) and re-run"
    local major
    major=$(node -p 'process.versions.node.split(".")[0]')
    ((major >= 20)) || die "node $(node --version) is too old; the agent CLIs need Node.js 20 or newer"
}

print_env() {
    printf 'export PATH=%q:"$PATH"\n' "$1/node_modules/.bin"
}

install() {
    require_node
    local prefix
    prefix=$(absolute "${1:-target/agents}")
    local missing
    missing=$(missing_packages "$prefix")
    if [[ -z "$missing" ]]; then
        say "all agent CLIs present in $prefix"
        print_env "$prefix"
        return 0
    fi
    say "installing into $prefix: ${PACKAGES[*]}"
    # A package.json of exact versions makes the prefix a small project of its own: npm
    # leaves the rest of the machine alone, and a re-run is a no-op.
    local dependencies="" spec
    for spec in "${PACKAGES[@]}"; do
        dependencies+="${dependencies:+,}\"$(package_name "$spec")\":\"$(package_version "$spec")\""
    done
    printf '{"name":"rein-agents","private":true,"dependencies":{%s}}\n' "$dependencies" >"$prefix/package.json"
    local started=$SECONDS
    # claude-code declares node >= 22 but ships a native binary; node 20 only warns.
    (cd "$prefix" && npm install --no-audit --no-fund --loglevel=error --engine-strict=false) >&2 ||
        die "npm install failed in $prefix (see above)"
    missing=$(missing_packages "$prefix")
    [[ -z "$missing" ]] || die "still missing after npm install: $(tr '\n' ' ' <<<"$missing")"
    local binary
    for binary in "${BINARIES[@]}"; do
        "$prefix/node_modules/.bin/$binary" --version >/dev/null 2>&1 ||
            die "$binary does not run: $prefix/node_modules/.bin/$binary --version failed"
    done
    say "installed in $((SECONDS - started)) s"
    print_env "$prefix"
}

env_only() {
    local prefix=${1:-target/agents}
    [[ -d "$prefix" ]] || die "no agent CLIs in $prefix; run: contrib/agents.sh install${1:+ $1}"
    prefix=$(absolute "$prefix")
    local missing
    missing=$(missing_packages "$prefix")
    [[ -z "$missing" ]] || die "missing in $prefix: $(tr '\n' ' ' <<<"$missing")- run: contrib/agents.sh install${1:+ $1}"
    print_env "$prefix"
}

case "${1:-}" in
install) install "${2:-}" ;;
env) env_only "${2:-}" ;;
*) usage ;;
esac

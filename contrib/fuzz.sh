#!/usr/bin/env bash
# Fuzzes every parser of untrusted input: each target of fuzz/ in turn, for SECONDS seconds
# (default 60), starting from its seeds (fuzz/seeds/TARGET) and the corpus earlier runs
# grew (fuzz/corpus/TARGET, not committed). Ends with a table of executions and findings
# per target, and exits 1 if any target found something (its input is kept in
# fuzz/artifacts/TARGET; `cargo fuzz run TARGET FILE` replays it).
#
#   contrib/fuzz.sh            # a minute per target
#   contrib/fuzz.sh 600        # ten minutes per target
#   contrib/fuzz.sh 5 units    # a smoke run of some targets only
#
# It needs cargo-fuzz (installed from crates.io, pinned, when missing), a C++ compiler for
# libFuzzer, and a toolchain that takes -Z flags: nightly when rustup has it, else the
# stable toolchain with RUSTC_BOOTSTRAP=1. FUZZ_SANITIZER picks cargo-fuzz's sanitizer
# (default none: rein's parsers are safe Rust, and without ASan the build is smaller and each
# execution faster; overflow checks are on either way, see fuzz/Cargo.toml). FUZZ_TARGET_DIR
# puts the build elsewhere than fuzz/target, e.g. a cache that outlives a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
SECONDS_PER_TARGET=${1:-60}
shift || true
SANITIZER=${FUZZ_SANITIZER:-none}
target_dir=()
if [[ -n ${FUZZ_TARGET_DIR:-} ]]; then
    target_dir=(--target-dir "$FUZZ_TARGET_DIR")
fi
# Inputs up to 16 KiB: enough for a 3,000-character worker name or a page of options.
MAX_LEN=${FUZZ_MAX_LEN:-16384}

say() { printf 'fuzz.sh: %s\n' "$*" >&2; }

if ! [[ $SECONDS_PER_TARGET =~ ^[0-9]+$ ]] || ((SECONDS_PER_TARGET < 1)); then
    say "usage: contrib/fuzz.sh [SECONDS] [TARGET...]; SECONDS is a whole number of seconds per target"
    exit 2
fi
if ! command -v cargo >/dev/null; then
    say "no cargo on PATH: install Rust (https://rustup.rs) and re-run"
    exit 1
fi

# A toolchain that accepts the -Z flags cargo-fuzz passes.
toolchain=()
if command -v rustup >/dev/null && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
    say "using $(rustc +nightly --version)"
elif rustc --version 2>/dev/null | grep -q nightly; then
    say "using $(rustc --version)"
else
    export RUSTC_BOOTSTRAP=1
    say "no nightly toolchain; using $(rustc --version) with RUSTC_BOOTSTRAP=1 (\`rustup toolchain install nightly\` gives a real one)"
fi

if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
    say "installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
if ! command -v c++ >/dev/null; then
    say "libFuzzer is built from C++ source and no C++ compiler is on PATH: install one (apt-get install g++) and re-run"
    exit 1
fi

if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
fi
if ((${#targets[@]} == 0)); then
    say "no fuzz targets found in fuzz/"
    exit 1
fi

build_started=$(date +%s)
say "building ${#targets[@]} targets (sanitizer: $SANITIZER)"
for target in "${targets[@]}"; do
    cargo "${toolchain[@]}" fuzz build "${target_dir[@]}" --sanitizer "$SANITIZER" "$target"
done
say "built in $(($(date +%s) - build_started)) s"

summary=()
failed=()
run_started=$(date +%s)
for target in "${targets[@]}"; do
    corpus=fuzz/corpus/$target
    mkdir -p "$corpus" "fuzz/artifacts/$target"
    log=fuzz/artifacts/$target/last-run.log
    say "fuzzing $target for $SECONDS_PER_TARGET s"
    status=ok
    if ! cargo "${toolchain[@]}" fuzz run "${target_dir[@]}" --sanitizer "$SANITIZER" "$target" "$corpus" "fuzz/seeds/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len="$MAX_LEN" -timeout=10 \
        -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1 >"$log" 2>&1; then
        status="FOUND (see $log and fuzz/artifacts/$target)"
        failed+=("$target")
        tail -n 30 "$log" >&2
    fi
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    summary+=("$(printf '%-18s %14s  %s' "$target" "${executions:-?}" "$status")")
done

printf '\n%-18s %14s  %s\n' TARGET EXECUTIONS RESULT
printf '%s\n' "${summary[@]}"
printf '%s targets, %s s each, %s s fuzzing in all\n' "${#targets[@]}" "$SECONDS_PER_TARGET" "$(($(date +%s) - run_started))"
if ((${#failed[@]} > 0)); then
    say "findings in: ${failed[*]}"
    exit 1
fi

//! The `rein` binary: parse, set up logging, dispatch, map the error to an exit code.

fn main() {
    std::process::exit(rein::cli::main());
}

//! The `rein` binary: parse, set up logging, dispatch, map the error to an exit code.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(u8::try_from(rein::cli::main()).unwrap_or(1))
}

//! `rein-host`: the main process of a worker unit, the PTY host its agent runs in (see
//! `rein::worker::host`). rein starts it; it is not a command for people.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(u8::try_from(rein::worker::host::standalone_main()).unwrap_or(1))
}

//! `rein tui`: checks that a person at a terminal runs it, then hands over to [`crate::tui`].

use std::io::IsTerminal;

use crate::cli::Context;
use crate::error::Error;

pub fn run(context: &Context) -> anyhow::Result<()> {
    // Answers come from people: the same refusal as `rein answer` inside an agent unit.
    let unit = crate::fleet::sandbox::current_agent_unit();
    if unit.is_some() || crate::cli::gate_socket(context).is_some() {
        return Err(Error::Forbidden(format!(
            "answers come from people: an agent cannot run rein tui{}",
            unit.map(|u| format!("; this process runs in {u}"))
                .unwrap_or_default()
        ))
        .into());
    }
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        return Err(Error::invalid(
            "rein tui needs a terminal (stdin and stdout must both be one); for scripts, \
             `rein state --json` (and `rein worker ls --json`, `rein asks --json`) give the same data",
        )
        .into());
    }
    crate::tui::run(&context.paths)
}

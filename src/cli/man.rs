//! Man pages, rendered from the clap definition (one page per verb and verb group) plus the
//! file-format and config pages written here. `tests/man.rs` fails when `man/` is stale;
//! `REIN_BLESS=1 cargo test --test man` rewrites it.

use clap::CommandFactory;

use crate::cli::Cli;

/// Every page as (file name, roff bytes).
pub fn render_all() -> Vec<(String, Vec<u8>)> {
    let mut pages = Vec::new();
    let root = Cli::command();
    render_tree(&root, "rein", &mut pages);
    pages.push(("rein-files.5".to_owned(), FILES_PAGE.as_bytes().to_vec()));
    pages.push(("rein-config.5".to_owned(), CONFIG_PAGE.as_bytes().to_vec()));
    pages.sort();
    pages
}

fn render_tree(command: &clap::Command, name: &str, pages: &mut Vec<(String, Vec<u8>)>) {
    let command = command
        .clone()
        .name(name.to_owned())
        .bin_name(name.replace('-', " "));
    let mut bytes = Vec::new();
    // Rendering into a Vec cannot fail.
    let _ = clap_mangen::Man::new(command.clone())
        .date("")
        .render(&mut bytes);
    pages.push((format!("{name}.1"), bytes));
    for sub in command.get_subcommands() {
        if sub.get_name() == "help" || sub.is_hide_set() {
            continue;
        }
        render_tree(sub, &format!("{name}-{}", sub.get_name()), pages);
    }
}

const FILES_PAGE: &str = include_str!("man_files.roff");
const CONFIG_PAGE: &str = include_str!("man_config.roff");

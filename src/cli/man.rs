//! Man pages, rendered from the clap definition (one page per verb and verb group), the
//! file-format and config pages written here, and one page per bridge rendered from the
//! `//!` header of that bridge's crate (its setup documentation lives in one place).
//! `tests/man.rs` fails when `man/` is stale; `REIN_BLESS=1 cargo test --test man` rewrites it.

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

/// The bridge pages, from the crates under `root/bridges/`.
pub fn render_bridges(root: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut pages = Vec::new();
    for name in crate::fleet::bridges::KNOWN {
        let Ok(source) =
            std::fs::read_to_string(root.join("bridges").join(name).join("src/lib.rs"))
        else {
            continue;
        };
        let doc: Vec<&str> = source
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .map(|l| {
                l.trim_start_matches("//!")
                    .strip_prefix(' ')
                    .unwrap_or(l.trim_start_matches("//!"))
            })
            .take_while(|l| !l.starts_with("A map of the crate"))
            .collect();
        let title = format!("rein-bridge-{name}");
        pages.push((
            format!("{title}.1"),
            markdown_to_roff(&title, &doc).into_bytes(),
        ));
    }
    pages
}

fn roff_escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// Inline markup: `code` and **bold** become bold, *emphasis* italic; rustdoc links lose
/// their brackets.
fn inline(text: &str) -> String {
    let text = text.replace("[`", "`").replace("`]", "`");
    let mut out = String::new();
    let mut bold = false;
    let mut italic = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' => {
                out.push_str(if bold { "\\fR" } else { "\\fB" });
                bold = !bold;
            }
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                out.push_str(if bold { "\\fR" } else { "\\fB" });
                bold = !bold;
            }
            '*' => {
                out.push_str(if italic { "\\fR" } else { "\\fI" });
                italic = !italic;
            }
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            other => out.push(other),
        }
    }
    if bold || italic {
        out.push_str("\\fR");
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// A small Markdown subset (headings, paragraphs, lists, fenced code) as a man page.
pub fn markdown_to_roff(title: &str, lines: &[&str]) -> String {
    let mut out = format!(
        ".TH {} 1 \"\" \"rein\" \"rein bridges\"\n",
        title.to_uppercase()
    );
    // The first paragraph is the summary: its words up to the first ':' or '.' name the page,
    // and all of it opens the description.
    let summary_len = lines
        .iter()
        .position(|l| l.trim().is_empty())
        .unwrap_or(lines.len());
    let summary = lines[..summary_len]
        .iter()
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" ");
    let short = summary.split([':', '.']).next().unwrap_or(&summary);
    out.push_str(&format!(
        ".SH NAME\n{title} \\- {}\n.SH DESCRIPTION\n{}\n",
        inline(short),
        inline(&summary)
    ));
    // A fence may be indented (a code block under a list item); its lines lose that indent.
    let mut code_indent: Option<usize> = None;
    for line in &lines[summary_len..] {
        if line.trim_start().starts_with("```") {
            out.push_str(if code_indent.is_some() {
                ".fi\n.RE\n"
            } else {
                ".RS 4\n.nf\n"
            });
            code_indent = match code_indent {
                Some(_) => None,
                None => Some(line.len() - line.trim_start().len()),
            };
            continue;
        }
        if let Some(indent) = code_indent {
            let unindented = if line.len() >= indent && line[..indent].trim().is_empty() {
                &line[indent..]
            } else {
                line.trim_start()
            };
            out.push_str(&roff_escape(unindented));
            out.push('\n');
            continue;
        }
        let trimmed = line.trim();
        if let Some(heading) = trimmed.strip_prefix("# ") {
            out.push_str(&format!(".SH {}\n", roff_escape(&heading.to_uppercase())));
        } else if trimmed.is_empty() {
            out.push_str(".PP\n");
        } else if let Some(item) = trimmed.strip_prefix("- ") {
            out.push_str(&format!(".IP \\(bu 2\n{}\n", inline(item)));
        } else if let Some((number, item)) = trimmed
            .split_once(". ")
            .filter(|(n, _)| n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty())
        {
            out.push_str(&format!(".IP {number}. 4\n{}\n", inline(item)));
        } else {
            out.push_str(&inline(trimmed));
            out.push('\n');
        }
    }
    out.push_str(".SH SEE ALSO\n.BR rein (1),\n.BR rein\\-bridge (1),\n.BR rein\\-config (5)\n");
    out
}

const FILES_PAGE: &str = include_str!("man_files.roff");
const CONFIG_PAGE: &str = include_str!("man_config.roff");

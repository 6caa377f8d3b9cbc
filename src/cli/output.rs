//! Printing: JSON for machines, short aligned text for people.
//!
//! Text for people passes through [`crate::text::inert`] here, so no prompt, answer, note or
//! file name printed by any verb can move the cursor, retitle the terminal or hide a line.

use std::io::Write;

use chrono::{DateTime, Utc};

use crate::text::{inert, inert_line};

/// Prints a value as pretty JSON on stdout.
pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    // Buffered: stdout flushes every line, and pretty JSON of 10,000 asks has 100,000 lines.
    let mut stdout = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    // As an io::Error, a closed pipe is recognised as one and ends quietly.
    serde_json::to_writer_pretty(&mut stdout, value).map_err(std::io::Error::from)?;
    writeln!(stdout)?;
    stdout.flush()?;
    Ok(())
}

/// Prints lines on stdout with control characters made visible (a closed pipe ends quietly,
/// see `cli::main`).
pub fn lines(lines: impl IntoIterator<Item = String>) -> anyhow::Result<()> {
    let mut stdout = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    for line in lines {
        writeln!(stdout, "{}", inert(&line))?;
    }
    stdout.flush()?;
    Ok(())
}

/// Rows as columns padded to their widest cell; the last column is not padded. Cells are
/// made inert on one line first, so a newline or escape in a cell cannot break the columns.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> Vec<String> {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|cell| inert_line(&cell).into_owned())
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let render = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        cells
            .into_iter()
            .enumerate()
            .map(|(i, cell)| {
                if i == last {
                    cell
                } else {
                    format!("{cell:<w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![render(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.into_iter().map(render));
    out
}

/// "3s", "5m", "2h", "4d" since `then`.
pub fn age(then: DateTime<Utc>) -> String {
    let seconds = (Utc::now() - then).num_seconds().max(0);
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// The first line of `text`, cut to `max` characters with an ellipsis.
pub fn short(text: &str, max: usize) -> String {
    let first = text.lines().next().unwrap_or("");
    if first.chars().count() <= max && !text.contains('\n') {
        return first.to_owned();
    }
    let cut: String = first.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

//! Drawing: the three areas (asks, fleet, events), the header and footer, help and prompts,
//! from the model and the screen's state. Every text that did not come from rein itself
//! goes through [`inert`] on its way to the screen.

use chrono::{DateTime, Local, Utc};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use crate::tui::input::{Area, Mode, Ui};
use crate::tui::model::{EventKind, FleetRow, ManagerLink, Model};
use crate::tui::text::inert;

/// Below this size the three areas do not fit: a summary and a note are shown instead.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 12;

pub fn draw(frame: &mut Frame, model: &Model, ui: &Ui) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        draw_tiny(frame, model, area);
        return;
    }
    let available = area.height.saturating_sub(2);
    let asks = model.visible_asks(&ui.filter);
    // Borders, header and rows, plus two lines of the selected ask's whole prompt.
    let asks_wanted = asks.len() as u16 + 3 + if asks.is_empty() { 0 } else { 2 };
    let asks_height = asks_wanted.clamp(5, (available * 2 / 5).max(5));
    let rest = available - asks_height;
    let rows = model.visible_rows(&ui.filter);
    let unreachable = u16::from(matches!(model.manager, ManagerLink::Unreachable(_)));
    let fleet_wanted = rows.len() as u16 + 4 + unreachable;
    let fleet_height = fleet_wanted.clamp(5, (rest * 3 / 5).max(5));
    let [header, asks_area, fleet_area, events_area, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(asks_height),
        Constraint::Length(fleet_height),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, model, ui, header);
    draw_asks(frame, model, ui, asks_area);
    draw_fleet(frame, model, ui, fleet_area);
    draw_events(frame, model, ui, events_area);
    draw_footer(frame, model, ui, footer);
    if ui.mode == Mode::Help {
        draw_help(frame, area);
    }
}

fn block(title: String, focused: bool) -> Block<'static> {
    let style = if focused {
        Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)
    } else {
        Style::new()
    };
    Block::bordered()
        .border_type(if focused {
            BorderType::Thick
        } else {
            BorderType::Plain
        })
        .border_style(style)
        .title(Span::styled(title, style))
}

fn highlight(focused: bool) -> Style {
    if focused {
        Style::new().add_modifier(Modifier::REVERSED)
    } else {
        Style::new().add_modifier(Modifier::BOLD)
    }
}

fn draw_header(frame: &mut Frame, model: &Model, ui: &Ui, area: Rect) {
    let link = match &model.manager {
        ManagerLink::Connecting => Span::raw("systemd: connecting"),
        ManagerLink::Connected => Span::raw("systemd: connected"),
        ManagerLink::Unreachable(_) => Span::styled(
            "systemd: UNREACHABLE",
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
    };
    let pulse = match &model.pulse {
        Some(pulse) if pulse.active => format!(
            "pulse up, every {}{}",
            pulse
                .interval
                .map(|interval| interval.to_string())
                .unwrap_or_else(|| "?".to_owned()),
            pulse
                .last_beat
                .as_ref()
                .map(|b| format!(", beat {} {}", b.beat, clock(b.at)))
                .unwrap_or_default()
        ),
        Some(_) | None => "pulse down".to_owned(),
    };
    let mut spans = vec![
        Span::styled("rein", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!(" · {} · ", inert(&model.profile))),
        link,
        Span::raw(format!(" · {pulse}")),
    ];
    if !ui.filter.is_empty() {
        spans.push(Span::styled(
            format!(" · filter “{}”", inert(&ui.filter)),
            Style::new().fg(Color::Yellow),
        ));
    }
    // The screen changes only on events: say when it last did.
    spans.push(Span::raw(format!(" · {}", Local::now().format("%H:%M:%S"))));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_asks(frame: &mut Frame, model: &Model, ui: &Ui, area: Rect) {
    let focused = ui.focus == Area::Asks;
    let asks = model.visible_asks(&ui.filter);
    let title = if ui.filter.is_empty() {
        format!(" Asks ({} pending) ", model.asks.len())
    } else {
        format!(" Asks ({} of {} pending) ", asks.len(), model.asks.len())
    };
    let outer = block(title, focused);
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    if asks.is_empty() {
        frame.render_widget(
            Paragraph::new("nothing waits on you").style(Style::new().fg(Color::DarkGray)),
            inner,
        );
        return;
    }
    let selected = asks
        .iter()
        .position(|a| Some(&a.ask.id) == ui.selected_ask.as_ref());
    let detail_height = if inner.height >= 4 { 2 } else { 0 };
    let [table_area, detail_area] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(detail_height)]).areas(inner);
    let rows = asks.iter().map(|record| {
        let ask = &record.ask;
        let options = if ask.options.is_empty() {
            "⏎ text".to_owned()
        } else {
            ask.options
                .iter()
                .enumerate()
                .map(|(i, o)| format!("{} {}", i + 1, inert(o)))
                .collect::<Vec<_>>()
                .join("  ")
        };
        Row::new(vec![
            Cell::from(ask.id.clone()),
            Cell::from(inert(&ask.worker)),
            Cell::from(age(ask.created)),
            Cell::from(ask.reference.as_deref().map(inert).unwrap_or_default()),
            Cell::from(first_line(&ask.prompt)),
            Cell::from(options),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(6),
            Constraint::Length(10),
            Constraint::Length(4),
            Constraint::Length(10),
            Constraint::Fill(3),
            Constraint::Fill(2),
        ],
    )
    .header(
        Row::new(["ID", "WORKER", "AGE", "REF", "PROMPT", "OPTIONS"])
            .style(Style::new().add_modifier(Modifier::UNDERLINED)),
    )
    .row_highlight_style(highlight(focused));
    let mut state = TableState::new().with_selected(selected);
    frame.render_stateful_widget(table, table_area, &mut state);
    if let Some(record) = selected.map(|i| asks[i]) {
        let prompt = record
            .ask
            .prompt
            .lines()
            .map(inert)
            .collect::<Vec<_>>()
            .join(" ⏎ ");
        let detail = Line::from(vec![
            Span::styled(
                format!("{} asks: ", inert(&record.ask.worker)),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::raw(prompt),
        ]);
        frame.render_widget(
            Paragraph::new(detail).wrap(Wrap { trim: false }),
            detail_area,
        );
    }
}

fn draw_fleet(frame: &mut Frame, model: &Model, ui: &Ui, area: Rect) {
    let focused = ui.focus == Area::Fleet;
    let rows = model.visible_rows(&ui.filter);
    let loops = model.rows.values().filter(|r| r.is_loop()).count();
    let workers = model.rows.len() - loops;
    let title = format!(" Fleet ({workers} workers, {loops} loops) ");
    let outer = block(title, focused);
    let mut inner = outer.inner(area);
    frame.render_widget(outer, area);
    if let ManagerLink::Unreachable(why) = &model.manager {
        let [note, rest] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(inner);
        frame.render_widget(
            Paragraph::new(format!(
                "systemd user manager unreachable — states below are as last seen; reconnecting when it is back ({})",
                inert(why)
            ))
            .style(Style::new().fg(Color::Red)),
            note,
        );
        inner = rest;
    }
    if rows.is_empty() {
        let text = if model.rows.is_empty() {
            "no workers or loops (`rein worker start ID BRIEF` starts one)"
        } else {
            "nothing matches the filter"
        };
        frame.render_widget(
            Paragraph::new(text).style(Style::new().fg(Color::DarkGray)),
            inner,
        );
        return;
    }
    let selected = rows
        .iter()
        .position(|r| Some(&r.id) == ui.selected_row.as_ref());
    let detail_height = u16::from(focused && inner.height >= 4);
    let [table_area, detail_area] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(detail_height)]).areas(inner);
    // Only the rows that can show are built: the cost of a redraw does not grow with the
    // fleet.
    let visible = usize::from(table_area.height.saturating_sub(1)).max(1);
    let first = match selected {
        Some(index) if index >= visible => index + 1 - visible,
        _ => 0,
    };
    let shown: Vec<&FleetRow> = rows.iter().skip(first).take(visible).copied().collect();
    let fires_width = if loops > 0 { 11 } else { 0 };
    let widths = [
        Constraint::Length(12),
        Constraint::Length(13),
        Constraint::Length(3),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(fires_width),
        Constraint::Fill(1),
        Constraint::Fill(2),
    ];
    // The place is cut at its start (a path's end says the most): it needs its width.
    let place_width = Layout::horizontal(widths).spacing(1).split(table_area)[6]
        .width
        .max(1);
    let table_rows = shown.iter().map(|row| {
        let (state, _) = model.state_of(row);
        Row::new(vec![
            Cell::from(format!(
                "{}{}",
                if row.is_loop() { "↻ " } else { "" },
                inert(&row.id)
            )),
            Cell::from(Span::styled(state.clone(), state_style(&state))),
            Cell::from(row.restarts().to_string()),
            Cell::from(
                row.service
                    .as_ref()
                    .and_then(|s| s.memory_current)
                    .map(bytes)
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::from(
                row.service
                    .as_ref()
                    .and_then(|s| s.cpu_usage_nsec)
                    .map(cpu)
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::from(fires(row)),
            Cell::from(
                row.place()
                    .map(|p| tail(&inert(&home_relative(&p)), usize::from(place_width)))
                    .unwrap_or_default(),
            ),
            Cell::from(row.output.as_deref().map(inert).unwrap_or_default()),
        ])
    });
    let table = Table::new(
        table_rows,
        [
            Constraint::Length(12),
            Constraint::Length(13),
            Constraint::Length(3),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(fires_width),
            Constraint::Fill(1),
            Constraint::Fill(2),
        ],
    )
    .header(
        Row::new([
            "ID",
            "STATE",
            "RST",
            "MEM",
            "CPU",
            if loops > 0 { "LAST→NEXT" } else { "" },
            "WHERE",
            "LAST OUTPUT",
        ])
        .style(Style::new().add_modifier(Modifier::UNDERLINED)),
    )
    .row_highlight_style(highlight(focused));
    let mut state = TableState::new().with_selected(selected.map(|i| i - first));
    frame.render_stateful_widget(table, table_area, &mut state);
    if detail_height > 0 {
        if let Some(row) = ui.row(model) {
            let (_, why) = model.state_of(row);
            let mut text = format!("{} {}", row.unit, row_detail(row));
            if let Some(why) = why {
                text.push_str(&format!(" · waiting on {}", first_line(&why)));
            }
            frame.render_widget(
                Paragraph::new(text).style(Style::new().fg(Color::DarkGray)),
                detail_area,
            );
        }
    }
}

fn row_detail(row: &FleetRow) -> String {
    let mut parts = Vec::new();
    if let Some(service) = &row.service {
        if service.main_pid != 0 {
            parts.push(format!("pid {}", service.main_pid));
        }
        if let Some(since) = service.active_since() {
            parts.push(format!("since {}", clock(DateTime::<Utc>::from(since))));
        }
        if !service.result.is_empty() && service.result != "success" {
            parts.push(format!("result {}", service.result));
        }
    }
    if let Some(looped) = &row.looped {
        parts.push(format!("schedule {}", inert(&looped.schedule)));
        if let Some(desktop) = looped.desktop {
            parts.push(format!("desktop {desktop}"));
        }
    }
    parts.join(" · ")
}

fn draw_events(frame: &mut Frame, model: &Model, ui: &Ui, area: Rect) {
    let focused = ui.focus == Area::Events;
    let events = model.visible_events(&ui.filter);
    let title = if ui.events_back > 0 {
        format!(" Events ({} back) ", ui.events_back)
    } else {
        " Events ".to_owned()
    };
    let outer = block(title, focused);
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    let height = usize::from(inner.height);
    let end = events.len().saturating_sub(ui.events_back);
    let start = end.saturating_sub(height);
    let lines: Vec<Line> = events[start..end]
        .iter()
        .map(|event| {
            let style = match event.kind {
                EventKind::Problem => Style::new().fg(Color::Red),
                EventKind::Ask => Style::new().fg(Color::Yellow),
                EventKind::Unit => Style::new().fg(Color::Cyan),
                _ => Style::new(),
            };
            Line::from(vec![
                Span::styled(
                    format!("{} ", event.at.format("%H:%M:%S")),
                    Style::new().fg(Color::DarkGray),
                ),
                Span::styled(format!("{:<7} ", event.kind.label()), style),
                Span::raw(first_line(&event.text)),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_footer(frame: &mut Frame, model: &Model, ui: &Ui, area: Rect) {
    let line = match &ui.mode {
        Mode::Input { purpose, text } => Line::from(vec![
            Span::styled(purpose.prompt(), Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(inert(text)),
            Span::styled("█", Style::new().add_modifier(Modifier::SLOW_BLINK)),
            Span::styled("  ⏎ send · Esc cancel", Style::new().fg(Color::DarkGray)),
        ]),
        Mode::Confirm(command) => Line::from(vec![Span::styled(
            format!(
                "{} y/n",
                command.confirmation().unwrap_or_else(|| "Sure?".into())
            ),
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        )]),
        _ => match &ui.message {
            Some(message) => Line::from(Span::styled(
                inert(message),
                Style::new().add_modifier(Modifier::BOLD),
            )),
            None => Line::from(Span::styled(
                hints(model, ui),
                Style::new().fg(Color::DarkGray),
            )),
        },
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// The keys of the focused area, most useful first (a narrow footer cuts the rest).
fn hints(model: &Model, ui: &Ui) -> String {
    let area_keys = match ui.focus {
        Area::Asks => "1-9 answer · ⏎ type answer · w withdraw",
        Area::Fleet => match ui.row(model) {
            Some(row) if row.is_loop() => {
                "a attach · t tick · s tell · r restart · c close · o reopen · g move"
            }
            _ => "a attach · s tell · k kill · r restart · t tick pulse",
        },
        Area::Events => "↑↓ scroll",
    };
    format!("{area_keys} · ? help · q quit · Tab area · ↑↓/j/k select · / filter")
}

const HELP: &[(&str, &str)] = &[
    (
        "↑ ↓  j k",
        "select (in the fleet area k kills: use ↑ there)",
    ),
    ("Tab  S-Tab", "next / previous area"),
    ("1-9", "answer the selected ask with that option"),
    ("Enter", "type a free-text answer to the selected ask"),
    ("w", "withdraw the selected ask (asks first)"),
    (
        "a",
        "attach to the selected worker; its detach key (Ctrl-]) returns here",
    ),
    ("t", "tick the selected loop, or the pulse"),
    ("s", "send a line to the selected worker (worker tell)"),
    ("k", "kill the selected worker (asks first)"),
    ("r", "restart the selected worker or loop (asks first)"),
    ("c  o", "close (asks first) / reopen the selected loop"),
    ("g", "move the selected loop to another desktop"),
    ("/", "filter every area; Esc clears"),
    ("?", "this help; any key closes it"),
    ("q  Ctrl-C", "quit"),
];

fn draw_help(frame: &mut Frame, area: Rect) {
    let width = area.width.min(78);
    let height = (HELP.len() as u16 + 4).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let mut lines: Vec<Line> = HELP
        .iter()
        .map(|(keys, what)| {
            Line::from(vec![
                Span::styled(
                    format!("{keys:<12}"),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from(
        "Answers are recorded as cli:$USER, through the same mailbox as `rein answer`.",
    ));
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(block(" Keys ".to_owned(), true)),
        popup,
    );
}

/// A terminal too small for the areas: what fits of a summary, and a note.
fn draw_tiny(frame: &mut Frame, model: &Model, area: Rect) {
    let mut lines = vec![Line::from(Span::styled(
        format!(
            "rein: {}×{} is too small; {MIN_WIDTH}×{MIN_HEIGHT} shows everything",
            area.width, area.height
        ),
        Style::new().fg(Color::Yellow),
    ))];
    let newest = model
        .asks
        .last()
        .map(|a| {
            format!(
                " — newest {} {}: {}",
                a.ask.id,
                inert(&a.ask.worker),
                first_line(&a.ask.prompt)
            )
        })
        .unwrap_or_default();
    lines.push(Line::from(format!(
        "asks: {} pending{newest}",
        model.asks.len()
    )));
    let counts = model
        .state_counts()
        .into_iter()
        .map(|(state, count)| format!("{count} {state}"))
        .collect::<Vec<_>>()
        .join(", ");
    lines.push(Line::from(format!(
        "fleet: {}",
        if counts.is_empty() {
            "empty".to_owned()
        } else {
            counts
        }
    )));
    if let ManagerLink::Unreachable(_) = model.manager {
        lines.push(Line::from("systemd user manager unreachable"));
    }
    if let Some(event) = model.events.back() {
        lines.push(Line::from(format!("last: {}", first_line(&event.text))));
    }
    lines.push(Line::from("q quits"));
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), area);
}

fn state_style(state: &str) -> Style {
    match state {
        "running" => Style::new().fg(Color::Green),
        "waiting-human" => Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        "restarting" | "starting" | "stopping" => Style::new().fg(Color::Magenta),
        "failed" => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        _ => Style::new().fg(Color::DarkGray),
    }
}

/// The first line of agent text, inert.
fn first_line(text: &str) -> String {
    let mut lines = text.lines();
    let first = inert(lines.next().unwrap_or_default());
    if lines.next().is_some() {
        format!("{first} …")
    } else {
        first
    }
}

/// `~/…` for a path in the home directory.
fn home_relative(path: &str) -> String {
    match std::env::var("HOME") {
        Ok(home) if !home.is_empty() && home != "/" => match path.strip_prefix(&home) {
            Some(rest) if rest.starts_with('/') => format!("~{rest}"),
            _ => path.to_owned(),
        },
        _ => path.to_owned(),
    }
}

/// The end of `text` (where a path says the most), at most `max` characters.
fn tail(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    let kept: String = text.chars().skip(count + 1 - max).collect();
    format!("…{kept}")
}

/// A loop's last and next fire.
fn fires(row: &FleetRow) -> String {
    let Some(looped) = &row.looped else {
        return String::new();
    };
    let at = |t: Option<DateTime<Utc>>| {
        t.map(|t| t.with_timezone(&Local).format("%H:%M").to_string())
            .unwrap_or_else(|| "-".into())
    };
    format!("{}→{}", at(looped.last_fire), at(looped.next_fire))
}

/// Local time of day, with the date when it is not today.
fn clock(at: DateTime<Utc>) -> String {
    let local = at.with_timezone(&Local);
    if local.date_naive() == Local::now().date_naive() {
        local.format("%H:%M:%S").to_string()
    } else {
        local.format("%m-%d %H:%M").to_string()
    }
}

/// "12s", "5m", "2h", "4d": how old, as of this redraw.
fn age(then: DateTime<Utc>) -> String {
    let seconds = (Utc::now() - then).num_seconds().max(0);
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn bytes(count: u64) -> String {
    let mib = count as f64 / 1048576.0;
    if mib >= 1024.0 {
        format!("{:.1}G", mib / 1024.0)
    } else {
        format!("{mib:.0}M")
    }
}

fn cpu(nanoseconds: u64) -> String {
    let seconds = nanoseconds as f64 / 1e9;
    match seconds {
        s if s < 60.0 => format!("{s:.1}s"),
        s if s < 3600.0 => format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64),
        s => format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_short() {
        assert_eq!(bytes(5 * 1048576), "5M");
        assert_eq!(bytes(3 * 1073741824 / 2), "1.5G");
        assert_eq!(cpu(1_500_000_000), "1.5s");
        assert_eq!(cpu(125_000_000_000), "2m05s");
        assert_eq!(cpu(7_500_000_000_000), "2h05m");
        assert_eq!(first_line("one\ntwo"), "one …");
        assert_eq!(tail("/a/b/c/work", 6), "…/work");
        assert_eq!(tail("short", 6), "short");
        assert_eq!(first_line("\u{1b}[31mred"), "\\e[31mred");
    }
}

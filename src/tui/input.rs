//! Keys: what each does in each mode, as [`Command`]s for the loop to carry out. The
//! screen's own state (focus, selection, filter, the open prompt) lives in [`Ui`].

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::tui::model::Model;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Asks,
    Fleet,
    Events,
}

impl Area {
    fn next(self) -> Area {
        match self {
            Area::Asks => Area::Fleet,
            Area::Fleet => Area::Events,
            Area::Events => Area::Asks,
        }
    }

    fn previous(self) -> Area {
        self.next().next()
    }
}

/// What a line of text typed at the bottom is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// A free-text answer to this ask.
    Answer(String),
    /// A line to type into this worker.
    Tell(String),
    /// The desktop to move this loop to.
    Move(String),
    Filter,
}

impl Purpose {
    pub fn prompt(&self) -> String {
        match self {
            Purpose::Answer(id) => format!("answer {id}: "),
            Purpose::Tell(id) => format!("tell {id}: "),
            Purpose::Move(name) => format!("move loop {name} to desktop: "),
            Purpose::Filter => "filter: ".to_owned(),
        }
    }
}

/// What the screen does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Quit,
    Answer {
        ask: String,
        text: String,
    },
    Withdraw {
        ask: String,
    },
    Attach {
        id: String,
    },
    /// Tick a loop, or the pulse when `None`.
    Tick {
        name: Option<String>,
    },
    Tell {
        id: String,
        text: String,
    },
    Kill {
        id: String,
    },
    Restart {
        id: String,
        unit: String,
    },
    Close {
        name: String,
    },
    Reopen {
        name: String,
    },
    Move {
        name: String,
        desktop: String,
    },
    /// Read a unit again (memory and CPU are not signalled).
    Refresh {
        unit: String,
    },
}

impl Command {
    /// The question asked before a destructive command runs; `None` runs it at once.
    pub fn confirmation(&self) -> Option<String> {
        match self {
            Command::Withdraw { ask } => Some(format!(
                "Withdraw ask {ask}? Its worker's `rein ask` exits 4."
            )),
            Command::Kill { id } => {
                Some(format!("Kill worker {id}? Its pending asks are withdrawn."))
            }
            Command::Restart { id, .. } => Some(format!("Restart {id}?")),
            Command::Close { name } => {
                Some(format!("Close loop {name}? Its timer and session stop."))
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Help,
    /// y runs it, anything else cancels.
    Confirm(Command),
    Input {
        purpose: Purpose,
        text: String,
    },
}

/// The screen's own state.
#[derive(Debug)]
pub struct Ui {
    pub focus: Area,
    /// The selected ask and fleet row, by id, so a selection survives changes around it.
    pub selected_ask: Option<String>,
    pub selected_row: Option<String>,
    /// Events scrolled back from the newest (0: following the newest).
    pub events_back: usize,
    pub filter: String,
    pub mode: Mode,
    /// A message shown in the footer until the next key.
    pub message: Option<String>,
}

impl Default for Ui {
    fn default() -> Self {
        Ui {
            focus: Area::Asks,
            selected_ask: None,
            selected_row: None,
            events_back: 0,
            filter: String::new(),
            mode: Mode::Normal,
            message: None,
        }
    }
}

impl Ui {
    /// Keeps the selections on something visible: the same id if it is still there, else
    /// the nearest.
    pub fn settle(&mut self, model: &Model) {
        let asks = model.visible_asks(&self.filter);
        if !self
            .selected_ask
            .as_ref()
            .is_some_and(|id| asks.iter().any(|a| &a.ask.id == id))
        {
            // Newest last: a fresh screen selects the newest ask.
            self.selected_ask = asks.last().map(|a| a.ask.id.clone());
        }
        let rows = model.visible_rows(&self.filter);
        if !self
            .selected_row
            .as_ref()
            .is_some_and(|id| rows.iter().any(|r| &r.id == id))
        {
            self.selected_row = rows.first().map(|r| r.id.clone());
        }
    }

    /// Handles one key; returns what to do, if anything.
    pub fn key(&mut self, model: &Model, key: KeyEvent) -> Option<Command> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        self.message = None;
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            return Some(Command::Quit);
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Help => None,
            Mode::Confirm(command) => match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => Some(command),
                _ => {
                    self.message = Some("cancelled".to_owned());
                    None
                }
            },
            Mode::Input { purpose, mut text } => match key.code {
                KeyCode::Esc => {
                    if purpose == Purpose::Filter {
                        self.filter.clear();
                        self.settle(model);
                    }
                    None
                }
                KeyCode::Enter => self.submit(model, purpose, text),
                KeyCode::Backspace => {
                    text.pop();
                    self.typed(model, purpose, text);
                    None
                }
                KeyCode::Char('u') if ctrl => {
                    self.typed(model, purpose, String::new());
                    None
                }
                KeyCode::Char(c) if !ctrl => {
                    text.push(c);
                    self.typed(model, purpose, text);
                    None
                }
                _ => {
                    self.mode = Mode::Input { purpose, text };
                    None
                }
            },
            Mode::Normal => self.normal_key(model, key),
        }
    }

    fn typed(&mut self, model: &Model, purpose: Purpose, text: String) {
        if purpose == Purpose::Filter {
            // The filter applies as it is typed.
            self.filter = text.clone();
            self.settle(model);
        }
        self.mode = Mode::Input { purpose, text };
    }

    fn submit(&mut self, model: &Model, purpose: Purpose, text: String) -> Option<Command> {
        let text = text.trim().to_owned();
        match purpose {
            Purpose::Filter => {
                self.filter = text;
                self.settle(model);
                None
            }
            _ if text.is_empty() => {
                self.message = Some("nothing typed; nothing sent".to_owned());
                None
            }
            Purpose::Answer(ask) => Some(Command::Answer { ask, text }),
            Purpose::Tell(id) => Some(Command::Tell { id, text }),
            Purpose::Move(name) => Some(Command::Move {
                name,
                desktop: text,
            }),
        }
    }

    fn normal_key(&mut self, model: &Model, key: KeyEvent) -> Option<Command> {
        match key.code {
            KeyCode::Char('q') => return Some(Command::Quit),
            KeyCode::Char('?') => {
                self.mode = Mode::Help;
                return None;
            }
            KeyCode::Tab => {
                self.focus = self.focus.next();
                return None;
            }
            KeyCode::BackTab => {
                self.focus = self.focus.previous();
                return None;
            }
            KeyCode::Char('/') => {
                self.mode = Mode::Input {
                    purpose: Purpose::Filter,
                    text: self.filter.clone(),
                };
                return None;
            }
            KeyCode::Esc => {
                self.filter.clear();
                self.settle(model);
                return None;
            }
            KeyCode::Up | KeyCode::Char('k')
                if key.code == KeyCode::Up || self.focus != Area::Fleet =>
            {
                return self.step(model, -1);
            }
            KeyCode::Down | KeyCode::Char('j') => return self.step(model, 1),
            KeyCode::PageUp => return self.step(model, -10),
            KeyCode::PageDown => return self.step(model, 10),
            KeyCode::Home => return self.step(model, isize::MIN / 2),
            KeyCode::End => return self.step(model, isize::MAX / 2),
            KeyCode::Char('t') => {
                let row = self.row(model);
                return Some(Command::Tick {
                    name: row.filter(|r| r.is_loop()).map(|r| r.id.clone()),
                });
            }
            _ => {}
        }
        match self.focus {
            Area::Asks => self.ask_key(model, key),
            Area::Fleet => self.fleet_key(model, key),
            Area::Events => None,
        }
    }

    fn ask_key(&mut self, model: &Model, key: KeyEvent) -> Option<Command> {
        let Some(ask) = self
            .selected_ask
            .as_ref()
            .and_then(|id| model.asks.iter().find(|a| &a.ask.id == id))
        else {
            if matches!(
                key.code,
                KeyCode::Char('1'..='9') | KeyCode::Enter | KeyCode::Char('w')
            ) {
                self.message = Some("no ask selected".to_owned());
            }
            return None;
        };
        let id = ask.ask.id.clone();
        match key.code {
            KeyCode::Char(digit @ '1'..='9') => {
                let index = digit as usize - '1' as usize;
                match ask.ask.options.get(index) {
                    Some(option) => Some(Command::Answer {
                        ask: id,
                        text: option.clone(),
                    }),
                    None if ask.ask.options.is_empty() => {
                        self.message = Some(format!("ask {id} takes free text: press Enter"));
                        None
                    }
                    None => {
                        self.message =
                            Some(format!("ask {id} has {} options", ask.ask.options.len()));
                        None
                    }
                }
            }
            KeyCode::Enter => {
                self.mode = Mode::Input {
                    purpose: Purpose::Answer(id),
                    text: String::new(),
                };
                None
            }
            KeyCode::Char('w') => self.confirm(Command::Withdraw { ask: id }),
            _ => None,
        }
    }

    fn fleet_key(&mut self, model: &Model, key: KeyEvent) -> Option<Command> {
        let Some(row) = self.row(model) else {
            if matches!(
                key.code,
                KeyCode::Char('a' | 's' | 'k' | 'r' | 'c' | 'o' | 'g')
            ) {
                self.message = Some("no worker or loop selected".to_owned());
            }
            return None;
        };
        let id = row.id.clone();
        let is_loop = row.is_loop();
        match key.code {
            KeyCode::Char('a') => Some(Command::Attach { id }),
            KeyCode::Char('s') => {
                self.mode = Mode::Input {
                    purpose: Purpose::Tell(id),
                    text: String::new(),
                };
                None
            }
            KeyCode::Char('k') if is_loop => {
                self.message = Some(format!("{id} is a loop: c closes it"));
                None
            }
            KeyCode::Char('k') => self.confirm(Command::Kill { id }),
            KeyCode::Char('r') if row.service.is_none() => {
                self.message = Some(format!(
                    "{id} has no unit to restart (`rein up` brings back recorded workers)"
                ));
                None
            }
            KeyCode::Char('r') => {
                let unit = row.unit.clone();
                self.confirm(Command::Restart { id, unit })
            }
            KeyCode::Char('c' | 'o' | 'g') if !is_loop => {
                self.message = Some(format!("{id} is a worker, not a loop"));
                None
            }
            KeyCode::Char('c') => self.confirm(Command::Close { name: id }),
            KeyCode::Char('o') => Some(Command::Reopen { name: id }),
            KeyCode::Char('g') => {
                self.mode = Mode::Input {
                    purpose: Purpose::Move(id),
                    text: String::new(),
                };
                None
            }
            _ => None,
        }
    }

    fn confirm(&mut self, command: Command) -> Option<Command> {
        self.mode = Mode::Confirm(command);
        None
    }

    /// The selected fleet row.
    pub fn row<'a>(&self, model: &'a Model) -> Option<&'a crate::tui::model::FleetRow> {
        self.selected_row.as_ref().and_then(|id| model.rows.get(id))
    }

    /// Moves the selection of the focused area by `delta` rows.
    fn step(&mut self, model: &Model, delta: isize) -> Option<Command> {
        fn moved(current: Option<usize>, len: usize, delta: isize) -> Option<usize> {
            if len == 0 {
                return None;
            }
            let from = current.unwrap_or(0) as isize;
            Some(from.saturating_add(delta).clamp(0, len as isize - 1) as usize)
        }
        match self.focus {
            Area::Asks => {
                let asks = model.visible_asks(&self.filter);
                let current = asks
                    .iter()
                    .position(|a| Some(&a.ask.id) == self.selected_ask.as_ref());
                self.selected_ask =
                    moved(current, asks.len(), delta).map(|i| asks[i].ask.id.clone());
                None
            }
            Area::Fleet => {
                let rows = model.visible_rows(&self.filter);
                let current = rows
                    .iter()
                    .position(|r| Some(&r.id) == self.selected_row.as_ref());
                let before = self.selected_row.clone();
                self.selected_row = moved(current, rows.len(), delta).map(|i| rows[i].id.clone());
                // Memory and CPU are not signalled: a newly selected row is read afresh.
                match self.row(model) {
                    Some(row) if self.selected_row != before && row.service.is_some() => {
                        Some(Command::Refresh {
                            unit: row.unit.clone(),
                        })
                    }
                    _ => None,
                }
            }
            Area::Events => {
                let total = model.visible_events(&self.filter).len();
                // Up (negative) scrolls back in time.
                let back = self.events_back as isize - delta;
                self.events_back = back.clamp(0, total.saturating_sub(1) as isize) as usize;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::UnitNames;
    use crate::mailbox::{Ask, AskRecord};

    fn press(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn model_with_ask(options: &[&str]) -> Model {
        let mut model = Model::new("t", UnitNames::for_profile("t", false));
        model.set_asks(
            vec![AskRecord {
                ask: Ask {
                    version: 1,
                    id: "a1".into(),
                    seq: 1,
                    worker: "w1".into(),
                    prompt: "merge?".into(),
                    reference: None,
                    options: options.iter().map(|o| o.to_string()).collect(),
                    created: chrono::Utc::now(),
                    key: "k".into(),
                },
                resolution: None,
                archived: false,
            }],
            true,
            |_| None,
        );
        model
    }

    #[test]
    fn a_number_answers_with_that_option() {
        let model = model_with_ask(&["yes", "no"]);
        let mut ui = Ui::default();
        ui.settle(&model);
        assert_eq!(
            ui.key(&model, press(KeyCode::Char('2'))),
            Some(Command::Answer {
                ask: "a1".into(),
                text: "no".into()
            })
        );
        assert_eq!(ui.key(&model, press(KeyCode::Char('3'))), None);
        assert!(ui
            .message
            .as_deref()
            .is_some_and(|m| m.contains("2 options")));
    }

    #[test]
    fn enter_opens_a_text_line_and_enter_sends_it() {
        let model = model_with_ask(&[]);
        let mut ui = Ui::default();
        ui.settle(&model);
        assert_eq!(ui.key(&model, press(KeyCode::Enter)), None);
        for c in "ship it".chars() {
            ui.key(&model, press(KeyCode::Char(c)));
        }
        assert_eq!(
            ui.key(&model, press(KeyCode::Enter)),
            Some(Command::Answer {
                ask: "a1".into(),
                text: "ship it".into()
            })
        );
        assert_eq!(ui.mode, Mode::Normal);
    }

    #[test]
    fn destructive_keys_ask_first() {
        let model = model_with_ask(&["yes"]);
        let mut ui = Ui::default();
        ui.settle(&model);
        assert_eq!(ui.key(&model, press(KeyCode::Char('w'))), None);
        assert!(matches!(ui.mode, Mode::Confirm(_)));
        assert_eq!(ui.key(&model, press(KeyCode::Char('n'))), None);
        assert_eq!(ui.mode, Mode::Normal);
        ui.key(&model, press(KeyCode::Char('w')));
        assert_eq!(
            ui.key(&model, press(KeyCode::Char('y'))),
            Some(Command::Withdraw { ask: "a1".into() })
        );
    }
}

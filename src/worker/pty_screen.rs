//! The agent's screen as text: a terminal emulator that keeps one character per cell.
//!
//! The transcript, the Screen request and dialog detection read text, the cursor and a few
//! modes, never colours or attributes, so a cell is one `u32`: a character, blank, or the
//! right half of a wide character. Characters that combine with the one before them (width
//! 0) are kept beside their row. The escape sequences are parsed by `vte`; what they do is
//! what xterm does with them, for the part that moves text: printing with deferred wrap,
//! cursor movement and addressing (with origin mode), erasing, inserting and deleting
//! characters and lines, scroll regions and scrolling, tab stops, saving and restoring the
//! cursor, the alternate screen (allocated only while it is in use), insert mode, autowrap,
//! bracketed paste, and a full reset. Everything else (colours, titles, mouse modes,
//! reports) is read and dropped. U+FFFD and C1 characters are not printed.
//!
//! Memory: one cell of 4 bytes per position (about 19 KiB at 120 × 40), twice that only
//! while the alternate screen is in use, no scrollback.

use unicode_width::UnicodeWidthChar;

/// An empty cell (shown as a space).
const BLANK: u32 = 0;
/// The right half of a wide character.
const WIDE_RIGHT: u32 = 0x11_0000;
/// The default distance between tab stops.
const TAB_WIDTH: u16 = 8;
/// The most bytes of combining characters kept on one cell.
const MARK_BYTES: usize = 16;

#[derive(Clone)]
struct Line {
    /// One cell per column, or none while the whole row is blank: a row costs memory only
    /// once something is written on it (a host lives as long as its agent, and most of an
    /// agent's rows are often empty).
    cells: Vec<u32>,
    cols: u16,
    /// Characters of width 0 that follow the character of a cell, by column.
    marks: Vec<(u16, String)>,
    /// The text went on past the end of this row into the next one.
    wrapped: bool,
}

impl Line {
    fn new(cols: u16) -> Line {
        Line {
            cells: Vec::new(),
            cols,
            marks: Vec::new(),
            wrapped: false,
        }
    }

    fn cell(&self, col: usize) -> u32 {
        self.cells.get(col).copied().unwrap_or(BLANK)
    }

    /// The cells of a row with something written on it; none for a blank row, which blanks
    /// moved along leave as it is.
    fn written_mut(&mut self) -> Option<&mut [u32]> {
        (!self.cells.is_empty()).then_some(&mut self.cells[..])
    }

    /// The cells, for writing: a blank row gets its cells now.
    fn cells_mut(&mut self) -> &mut [u32] {
        if self.cells.is_empty() {
            self.cells = vec![BLANK; usize::from(self.cols)];
        }
        &mut self.cells
    }

    fn clear_range(&mut self, from: u16, to: u16) {
        let to = to.min(self.cols);
        if from >= to || self.cells.is_empty() {
            return;
        }
        self.marks.retain(|(col, _)| *col < from || *col >= to);
        if from == 0 && to == self.cols {
            self.cells = Vec::new();
            return;
        }
        // A wide character cut in half by the range is blanked whole.
        if from > 0 && self.cells[usize::from(from)] == WIDE_RIGHT {
            self.cells[usize::from(from - 1)] = BLANK;
        }
        if usize::from(to) < self.cells.len() && self.cells[usize::from(to)] == WIDE_RIGHT {
            self.cells[usize::from(to)] = BLANK;
        }
        self.cells[usize::from(from)..usize::from(to)].fill(BLANK);
    }

    fn resize(&mut self, cols: u16) {
        if cols < self.cols {
            self.wrapped = false;
        }
        self.cols = cols;
        self.marks.retain(|(col, _)| *col < cols);
        if self.cells.is_empty() {
            return;
        }
        let cols = usize::from(cols);
        // A wide character whose right half is cut off is blanked.
        if cols < self.cells.len() && self.cells[cols] == WIDE_RIGHT {
            self.cells[cols - 1] = BLANK;
        }
        self.cells.resize(cols, BLANK);
    }

    fn text(&self) -> String {
        let mut text = String::with_capacity(self.cells.len());
        for (col, cell) in self.cells.iter().enumerate() {
            match *cell {
                WIDE_RIGHT => continue,
                BLANK => text.push(' '),
                c => text.push(char::from_u32(c).unwrap_or(' ')),
            }
            for (_, marks) in self.marks.iter().filter(|(at, _)| usize::from(*at) == col) {
                text.push_str(marks);
            }
        }
        text.truncate(text.trim_end().len());
        text
    }
}

#[derive(Clone, Copy)]
struct Saved {
    row: u16,
    col: u16,
    pending_wrap: bool,
    origin_mode: bool,
    autowrap: bool,
}

impl Saved {
    /// What restoring a cursor never saved gives: the top left, the modes' defaults.
    const HOME: Saved = Saved {
        row: 0,
        col: 0,
        pending_wrap: false,
        origin_mode: false,
        autowrap: true,
    };
}

/// The screen: size, the main grid and the alternate one, the cursor and the modes.
pub struct Screen {
    rows: u16,
    cols: u16,
    main: Vec<Line>,
    /// The alternate screen's grid, while it is shown.
    alternate: Option<Vec<Line>>,
    row: u16,
    col: u16,
    /// The last column was printed; the next character goes on the next row.
    pending_wrap: bool,
    /// The scroll region, first and last row, inclusive.
    top: u16,
    bottom: u16,
    origin_mode: bool,
    autowrap: bool,
    insert_mode: bool,
    bracketed_paste: bool,
    tabs: Vec<bool>,
    saved_main: Saved,
    saved_alternate: Saved,
    last_printed: Option<char>,
}

/// A `Screen` and the parser that feeds it.
pub struct Emulator {
    parser: vte::Parser,
    screen: Screen,
}

impl Emulator {
    pub fn new(rows: u16, cols: u16) -> Emulator {
        Emulator {
            parser: vte::Parser::new(),
            screen: Screen::new(rows, cols),
        }
    }

    pub fn process(&mut self, bytes: &[u8]) {
        self.parser.advance(&mut self.screen, bytes);
    }

    pub fn screen(&self) -> &Screen {
        &self.screen
    }

    pub fn set_size(&mut self, rows: u16, cols: u16) {
        self.screen.set_size(rows, cols);
    }
}

fn default_tabs(cols: u16) -> Vec<bool> {
    (0..cols)
        .map(|col| col > 0 && col % TAB_WIDTH == 0)
        .collect()
}

impl Screen {
    fn new(rows: u16, cols: u16) -> Screen {
        let (rows, cols) = (rows.max(1), cols.max(1));
        Screen {
            rows,
            cols,
            main: vec![Line::new(cols); usize::from(rows)],
            alternate: None,
            row: 0,
            col: 0,
            pending_wrap: false,
            top: 0,
            bottom: rows - 1,
            origin_mode: false,
            autowrap: true,
            insert_mode: false,
            bracketed_paste: false,
            tabs: default_tabs(cols),
            saved_main: Saved::HOME,
            saved_alternate: Saved::HOME,
            last_printed: None,
        }
    }

    /// `(rows, cols)`.
    pub fn size(&self) -> (u16, u16) {
        (self.rows, self.cols)
    }

    /// Zero-based `(row, col)` of the cursor.
    pub fn cursor_position(&self) -> (u16, u16) {
        (self.row, self.col)
    }

    pub fn alternate_screen(&self) -> bool {
        self.alternate.is_some()
    }

    pub fn bracketed_paste(&self) -> bool {
        self.bracketed_paste
    }

    /// Whether the text of `row` went on into the next row.
    pub fn row_wrapped(&self, row: u16) -> bool {
        self.grid()
            .get(usize::from(row))
            .is_some_and(|line| line.wrapped)
    }

    /// One row as text: blank cells are spaces, trailing blanks are trimmed.
    pub fn row_text(&self, row: u16) -> String {
        self.grid()
            .get(usize::from(row))
            .map(Line::text)
            .unwrap_or_default()
    }

    fn grid(&self) -> &Vec<Line> {
        self.alternate.as_ref().unwrap_or(&self.main)
    }

    fn grid_mut(&mut self) -> &mut Vec<Line> {
        self.alternate.as_mut().unwrap_or(&mut self.main)
    }

    /// The row `row` of the grid shown (every grid has one line per row, and the cursor's
    /// row is always on the screen).
    fn line_mut(&mut self, row: u16) -> &mut Line {
        let grid = self.grid_mut();
        let index = usize::from(row).min(grid.len() - 1);
        &mut grid[index]
    }

    fn set_size(&mut self, rows: u16, cols: u16) {
        let (rows, cols) = (rows.max(1), cols.max(1));
        for grid in std::iter::once(&mut self.main).chain(self.alternate.as_mut()) {
            // Rows beyond the new height go from the top while the cursor would be below
            // it, as on a terminal whose window shrinks; the rest from the bottom.
            let mut drop_top = 0;
            if usize::from(rows) < grid.len() && self.row >= rows {
                drop_top = usize::from(self.row - rows + 1);
            }
            grid.drain(..drop_top.min(grid.len()));
            grid.resize(usize::from(rows), Line::new(cols));
            for line in grid.iter_mut() {
                line.resize(cols);
            }
        }
        if self.row >= rows {
            self.row = rows - 1;
        }
        self.rows = rows;
        self.cols = cols;
        self.col = self.col.min(cols - 1);
        self.pending_wrap = false;
        self.top = 0;
        self.bottom = rows - 1;
        // New columns get the default tab stops.
        let had = self.tabs.len();
        self.tabs.resize(usize::from(cols), false);
        for (col, stop) in self.tabs.iter_mut().enumerate().skip(had) {
            *stop = col % usize::from(TAB_WIDTH) == 0;
        }
    }

    // ---- cursor movement ----

    /// The rows the cursor may move in: the scroll region when the cursor is in it (or in
    /// origin mode), else the whole screen.
    fn vertical_bounds(&self) -> (u16, u16) {
        if self.origin_mode || (self.row >= self.top && self.row <= self.bottom) {
            (self.top, self.bottom)
        } else {
            (0, self.rows - 1)
        }
    }

    fn move_to(&mut self, row: u16, col: u16) {
        self.row = row.min(self.rows - 1);
        self.col = col.min(self.cols - 1);
        self.pending_wrap = false;
    }

    /// Cursor addressing: `row` counts from the scroll region's top in origin mode.
    fn address(&mut self, row: u16, col: u16) {
        let row = if self.origin_mode {
            self.top.saturating_add(row).min(self.bottom)
        } else {
            row
        };
        self.move_to(row, col);
    }

    fn up(&mut self, n: u16) {
        let (top, _) = self.vertical_bounds();
        let row = self
            .row
            .saturating_sub(n)
            .max(if self.row >= top { top } else { 0 });
        self.move_to(row, self.col);
    }

    fn down(&mut self, n: u16) {
        let (_, bottom) = self.vertical_bounds();
        let limit = if self.row <= bottom {
            bottom
        } else {
            self.rows - 1
        };
        self.move_to(self.row.saturating_add(n).min(limit), self.col);
    }

    fn line_feed(&mut self) {
        self.pending_wrap = false;
        if self.row == self.bottom {
            self.scroll_up(1);
        } else if self.row + 1 < self.rows {
            self.row += 1;
        }
    }

    fn reverse_index(&mut self) {
        self.pending_wrap = false;
        if self.row == self.top {
            self.scroll_down(1);
        } else if self.row > 0 {
            self.row -= 1;
        }
    }

    fn tab_forward(&mut self, n: u16) {
        for _ in 0..n {
            let next = ((self.col + 1)..self.cols).find(|col| self.tabs[usize::from(*col)]);
            self.col = next.unwrap_or(self.cols - 1);
        }
        self.pending_wrap = false;
    }

    fn tab_back(&mut self, n: u16) {
        for _ in 0..n {
            let previous = (0..self.col).rev().find(|col| self.tabs[usize::from(*col)]);
            self.col = previous.unwrap_or(0);
        }
        self.pending_wrap = false;
    }

    // ---- scrolling ----

    /// Moves the rows of the scroll region up by `n`; blank rows come in at its bottom.
    fn scroll_up(&mut self, n: u16) {
        self.shift_rows(self.top, n, true);
    }

    /// Moves the rows of the scroll region down by `n`; blank rows come in at its top.
    fn scroll_down(&mut self, n: u16) {
        self.shift_rows(self.top, n, false);
    }

    /// Moves rows `from` to the scroll region's bottom up (or down) by `n`; blank rows come in
    /// where they left.
    fn shift_rows(&mut self, from: u16, n: u16, up: bool) {
        let (from, end) = (usize::from(from), usize::from(self.bottom) + 1);
        let n = usize::from(n).min(end - from);
        let rows = &mut self.grid_mut()[from..end];
        if up {
            rows.rotate_left(n);
            self.blank_rows(end - n..end);
        } else {
            rows.rotate_right(n);
            self.blank_rows(from..from + n);
        }
    }

    /// IL (`up` false) and DL (`up` true): the rows from the cursor's to the region's bottom
    /// move by `n`; nothing happens with the cursor outside the region.
    fn edit_lines(&mut self, n: u16, up: bool) {
        if self.row < self.top || self.row > self.bottom {
            return;
        }
        self.shift_rows(self.row, n, up);
        self.col = 0;
        self.pending_wrap = false;
    }

    // ---- erasing, inserting and deleting characters ----

    fn erase_in_line(&mut self, mode: u16) {
        let (col, cols, row) = (self.col, self.cols, self.row);
        let line = self.line_mut(row);
        match mode {
            0 => line.clear_range(col, cols),
            1 => line.clear_range(0, col + 1),
            2 => line.clear_range(0, cols),
            _ => return,
        }
        if mode != 1 {
            line.wrapped = false;
        }
        self.pending_wrap = false;
    }

    fn erase_in_display(&mut self, mode: u16) {
        let row = usize::from(self.row);
        match mode {
            0 => {
                self.erase_in_line(0);
                self.blank_rows(row + 1..usize::from(self.rows));
            }
            1 => {
                self.blank_rows(0..row);
                self.erase_in_line(1);
            }
            2 | 3 => self.blank_rows(0..usize::from(self.rows)),
            _ => {}
        }
        self.pending_wrap = false;
    }

    fn blank_rows(&mut self, rows: std::ops::Range<usize>) {
        let cols = self.cols;
        for line in &mut self.grid_mut()[rows] {
            *line = Line::new(cols);
        }
    }

    fn erase_chars(&mut self, n: u16) {
        let (row, col) = (self.row, self.col);
        let to = col.saturating_add(n);
        self.line_mut(row).clear_range(col, to);
        self.pending_wrap = false;
    }

    fn insert_blanks(&mut self, n: u16) {
        let (row, col, cols) = (self.row, usize::from(self.col), usize::from(self.cols));
        let n = usize::from(n).min(cols - col);
        let line = self.line_mut(row);
        if let Some(cells) = line.written_mut() {
            if col > 0 && cells[col] == WIDE_RIGHT {
                cells[col - 1] = BLANK;
                cells[col] = BLANK;
            }
            cells[col..].rotate_right(n);
            cells[col..col + n].fill(BLANK);
            // A wide character pushed half off the end is blanked.
            if cells[cols - 1] != WIDE_RIGHT
                && char::from_u32(cells[cols - 1]).and_then(|c| c.width()) == Some(2)
            {
                cells[cols - 1] = BLANK;
            }
        }
        line.marks.retain_mut(|(at, _)| {
            if usize::from(*at) >= col {
                *at += n as u16;
            }
            usize::from(*at) < cols
        });
        line.wrapped = false;
        self.pending_wrap = false;
    }

    fn delete_chars(&mut self, n: u16) {
        let (row, col, cols) = (self.row, usize::from(self.col), usize::from(self.cols));
        let n = usize::from(n).min(cols - col);
        let line = self.line_mut(row);
        if let Some(cells) = line.written_mut() {
            if col > 0 && cells[col] == WIDE_RIGHT {
                cells[col - 1] = BLANK;
            }
            cells[col..].rotate_left(n);
            cells[cols - n..].fill(BLANK);
            if cells[col] == WIDE_RIGHT {
                cells[col] = BLANK;
            }
        }
        line.marks.retain_mut(|(at, _)| {
            let at_col = usize::from(*at);
            if at_col < col {
                return true;
            }
            if at_col < col + n {
                return false;
            }
            *at -= n as u16;
            true
        });
        line.wrapped = false;
        self.pending_wrap = false;
    }

    // ---- printing ----

    fn print_char(&mut self, c: char) {
        let Some(width) = c.width() else {
            return;
        };
        if width == 0 {
            self.combine(c);
            return;
        }
        let width = width as u16;
        if self.pending_wrap && self.autowrap {
            let row = self.row;
            self.line_mut(row).wrapped = true;
            self.line_feed();
            self.col = 0;
        }
        self.pending_wrap = false;
        if width > self.cols {
            return;
        }
        if self.col + width > self.cols {
            if self.autowrap {
                let row = self.row;
                self.line_mut(row).wrapped = true;
                self.line_feed();
                self.col = 0;
            } else {
                self.col = self.cols - width;
            }
        }
        if self.insert_mode {
            self.insert_blanks(width);
        }
        let (row, col) = (self.row, self.col);
        let line = self.line_mut(row);
        line.clear_range(col, col + width);
        let cells = line.cells_mut();
        cells[usize::from(col)] = c as u32;
        if width == 2 {
            cells[usize::from(col) + 1] = WIDE_RIGHT;
        }
        self.last_printed = Some(c);
        if col + width >= self.cols {
            self.col = self.cols - 1;
            self.pending_wrap = self.autowrap;
        } else {
            self.col = col + width;
        }
    }

    /// A character of width 0 joins the character before the cursor.
    fn combine(&mut self, c: char) {
        let (row, col, pending) = (self.row, self.col, self.pending_wrap);
        let line = self.line_mut(row);
        let mut at = if pending {
            Some(col)
        } else {
            col.checked_sub(1)
        };
        if let Some(left) = at {
            if line.cell(usize::from(left)) == WIDE_RIGHT {
                at = left.checked_sub(1);
            }
        }
        let Some(at) = at else {
            return;
        };
        if line.cell(usize::from(at)) == BLANK {
            return;
        }
        match line.marks.iter_mut().find(|(col, _)| *col == at) {
            // At most MARK_BYTES of marks per cell, so no input grows a row without end.
            Some((_, marks)) => {
                if marks.len() + c.len_utf8() <= MARK_BYTES {
                    marks.push(c);
                }
            }
            None => line.marks.push((at, c.to_string())),
        }
    }

    // ---- modes and state ----

    fn save_cursor(&mut self) {
        let saved = Saved {
            row: self.row,
            col: self.col,
            pending_wrap: self.pending_wrap,
            origin_mode: self.origin_mode,
            autowrap: self.autowrap,
        };
        if self.alternate.is_some() {
            self.saved_alternate = saved;
        } else {
            self.saved_main = saved;
        }
    }

    fn restore_cursor(&mut self) {
        let saved = if self.alternate.is_some() {
            self.saved_alternate
        } else {
            self.saved_main
        };
        self.origin_mode = saved.origin_mode;
        self.autowrap = saved.autowrap;
        self.move_to(saved.row, saved.col);
        self.pending_wrap = saved.pending_wrap && self.col == self.cols - 1;
    }

    fn enter_alternate(&mut self, clear: bool) {
        match &mut self.alternate {
            Some(grid) if clear => {
                for line in grid.iter_mut() {
                    *line = Line::new(self.cols);
                }
            }
            Some(_) => {}
            None => self.alternate = Some(vec![Line::new(self.cols); usize::from(self.rows)]),
        }
    }

    /// Back to the main screen; the alternate one's memory is handed back.
    fn exit_alternate(&mut self) {
        self.alternate = None;
    }

    fn set_private_mode(&mut self, mode: u16, on: bool) {
        match mode {
            6 => {
                self.origin_mode = on;
                self.address(0, 0);
            }
            7 => self.autowrap = on,
            47 | 1047 => {
                if on {
                    self.enter_alternate(false);
                } else {
                    self.exit_alternate();
                }
            }
            1048 => {
                if on {
                    self.save_cursor();
                } else {
                    self.restore_cursor();
                }
            }
            1049 => {
                if on {
                    self.save_cursor();
                    self.enter_alternate(true);
                    self.save_cursor();
                } else {
                    self.exit_alternate();
                    self.restore_cursor();
                }
            }
            2004 => self.bracketed_paste = on,
            _ => {}
        }
    }

    fn reset(&mut self) {
        *self = Screen::new(self.rows, self.cols);
    }

    fn set_scroll_region(&mut self, top: u16, bottom: u16) {
        let top = top.max(1) - 1;
        let bottom = if bottom == 0 {
            self.rows
        } else {
            bottom.min(self.rows)
        } - 1;
        if top >= bottom {
            return;
        }
        self.top = top;
        self.bottom = bottom;
        self.address(0, 0);
    }
}

/// The parameters of a sequence, each the first of its sub-parameters.
fn numbers(params: &vte::Params) -> Vec<u16> {
    params
        .iter()
        .map(|param| param.first().copied().unwrap_or(0))
        .collect()
}

impl vte::Perform for Screen {
    fn print(&mut self, c: char) {
        if c == '\u{fffd}' || ('\u{80}'..'\u{a0}').contains(&c) {
            return;
        }
        self.print_char(c);
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            0x08 => {
                self.pending_wrap = false;
                self.col = self.col.saturating_sub(1);
            }
            0x09 => self.tab_forward(1),
            0x0a..=0x0c => self.line_feed(),
            0x0d => {
                self.col = 0;
                self.pending_wrap = false;
            }
            _ => {}
        }
    }

    fn esc_dispatch(&mut self, intermediates: &[u8], _ignore: bool, byte: u8) {
        match (intermediates, byte) {
            ([], b'7') => self.save_cursor(),
            ([], b'8') => self.restore_cursor(),
            ([], b'D') => self.line_feed(),
            ([], b'E') => {
                self.line_feed();
                self.col = 0;
            }
            ([], b'M') => self.reverse_index(),
            ([], b'H') => self.tabs[usize::from(self.col)] = true,
            ([], b'c') => self.reset(),
            _ => {}
        }
    }

    fn csi_dispatch(
        &mut self,
        params: &vte::Params,
        intermediates: &[u8],
        ignore: bool,
        action: char,
    ) {
        if ignore {
            return;
        }
        let numbers = numbers(params);
        let first = numbers.first().copied().unwrap_or(0);
        // A count: 0 or missing means 1.
        let n = first.max(1);
        let at = |index: usize| numbers.get(index).copied().unwrap_or(0).max(1) - 1;
        match (intermediates, action) {
            ([b'?'], 'h') | ([b'?'], 'l') => {
                for mode in &numbers {
                    self.set_private_mode(*mode, action == 'h');
                }
            }
            ([], 'h') | ([], 'l') if numbers.contains(&4) => self.insert_mode = action == 'h',
            ([], '@') => self.insert_blanks(n),
            ([], 'A') => self.up(n),
            ([], 'B') | ([], 'e') => self.down(n),
            ([], 'C') | ([], 'a') => {
                let col = self.col.saturating_add(n).min(self.cols - 1);
                self.move_to(self.row, col);
            }
            ([], 'D') => {
                let col = self.col.saturating_sub(n);
                self.move_to(self.row, col);
            }
            ([], 'E') => {
                self.down(n);
                self.col = 0;
            }
            ([], 'F') => {
                self.up(n);
                self.col = 0;
            }
            ([], 'G') | ([], '`') => self.move_to(self.row, at(0)),
            ([], 'H') | ([], 'f') => self.address(at(0), at(1)),
            ([], 'I') => self.tab_forward(n),
            ([], 'Z') => self.tab_back(n),
            ([], 'J') => self.erase_in_display(first),
            ([], 'K') => self.erase_in_line(first),
            ([], 'X') => self.erase_chars(n),
            ([], 'L') => self.edit_lines(n, false),
            ([], 'M') => self.edit_lines(n, true),
            ([], 'P') => self.delete_chars(n),
            ([], 'S') => self.scroll_up(n),
            ([], 'T') if numbers.len() <= 1 => self.scroll_down(n),
            ([], 'b') => {
                if let Some(c) = self.last_printed {
                    for _ in 0..n {
                        self.print_char(c);
                    }
                }
            }
            ([], 'd') => {
                let row = at(0);
                self.address(row, self.col);
            }
            ([], 'g') => match first {
                0 => self.tabs[usize::from(self.col)] = false,
                3 => self.tabs.fill(false),
                _ => {}
            },
            ([], 'r') => {
                let top = numbers.first().copied().unwrap_or(0);
                let bottom = numbers.get(1).copied().unwrap_or(0);
                self.set_scroll_region(top, bottom);
            }
            ([], 's') if numbers.is_empty() || numbers == [0] => self.save_cursor(),
            ([], 'u') => self.restore_cursor(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen(rows: u16, cols: u16, input: &[u8]) -> Emulator {
        let mut emulator = Emulator::new(rows, cols);
        emulator.process(input);
        emulator
    }

    fn lines(emulator: &Emulator) -> Vec<String> {
        let (rows, _) = emulator.screen().size();
        (0..rows)
            .map(|row| emulator.screen().row_text(row))
            .collect()
    }

    #[test]
    fn printing_wraps_late_and_marks_the_wrapped_row() {
        let e = screen(3, 5, b"abcde");
        assert_eq!(e.screen().cursor_position(), (0, 4), "the wrap waits");
        assert!(!e.screen().row_wrapped(0));
        let mut e = e;
        e.process(b"f");
        assert_eq!(lines(&e), ["abcde", "f", ""]);
        assert!(e.screen().row_wrapped(0));
        // A carriage return cancels the pending wrap.
        let e = screen(3, 5, b"abcde\rX");
        assert_eq!(lines(&e), ["Xbcde", "", ""]);
        // Without autowrap the last column is overwritten.
        let e = screen(3, 5, b"\x1b[?7labcdefg");
        assert_eq!(lines(&e), ["abcdg", "", ""]);
    }

    #[test]
    fn wide_and_combining_characters_keep_their_text() {
        let e = screen(2, 6, "a\u{4e2d}b".as_bytes());
        assert_eq!(lines(&e)[0], "a\u{4e2d}b");
        assert_eq!(e.screen().cursor_position(), (0, 4));
        // A wide character that does not fit goes to the next row.
        let e = screen(2, 4, "abc\u{4e2d}".as_bytes());
        assert_eq!(lines(&e), ["abc", "\u{4e2d}"]);
        // Overwriting either half blanks the whole wide character.
        let e = screen(2, 6, "\u{4e2d}\u{4e2d}\x1b[1;2Hx".as_bytes());
        assert_eq!(lines(&e)[0], " x\u{4e2d}");
        let e = screen(2, 6, "e\u{301}!".as_bytes());
        assert_eq!(lines(&e)[0], "e\u{301}!");
        // U+FFFD and C1 controls are not printed.
        let e = screen(2, 6, "a\u{fffd}\u{85}b".as_bytes());
        assert_eq!(lines(&e)[0], "ab");
    }

    #[test]
    fn cursor_addressing_erasing_and_editing() {
        let e = screen(4, 10, b"\x1b[2;3Hxy\x1b[1;1Hab\x1b[4;10Hz");
        assert_eq!(lines(&e), ["ab", "  xy", "", "         z"]);
        let e = screen(2, 10, b"0123456789\x1b[1;4H\x1b[K");
        assert_eq!(lines(&e)[0], "012");
        let e = screen(2, 10, b"0123456789\x1b[1;4H\x1b[1K");
        assert_eq!(lines(&e)[0], "    456789");
        let e = screen(2, 10, b"0123456789\x1b[1;4H\x1b[2X");
        assert_eq!(lines(&e)[0], "012  56789");
        let e = screen(2, 10, b"0123456789\x1b[1;4H\x1b[2P");
        assert_eq!(lines(&e)[0], "01256789");
        let e = screen(2, 10, b"0123456789\x1b[1;4H\x1b[2@");
        assert_eq!(lines(&e)[0], "012  34567");
        let e = screen(2, 10, b"abc\x1b[4h\x1b[1;2HX");
        assert_eq!(lines(&e)[0], "aXbc");
        let e = screen(3, 5, b"a\r\nb\r\nc\x1b[2;1H\x1b[J");
        assert_eq!(lines(&e), ["a", "", ""]);
        let e = screen(3, 5, b"a\r\nb\r\nc\x1b[2;1H\x1b[1J");
        assert_eq!(lines(&e), ["", "", "c"]);
        let e = screen(3, 5, b"a\r\nb\r\nc\x1b[2J");
        assert_eq!(lines(&e), ["", "", ""]);
        // REP repeats the last character; a back tab returns to the stop the tab reached.
        let e = screen(2, 20, b"x\x1b[3b|\tT\x1b[Zt");
        assert_eq!(lines(&e)[0], "xxxx|   t");
    }

    #[test]
    fn scroll_regions_lines_and_reverse_index() {
        // Lines scroll within the region only; the rows outside stay.
        let e = screen(5, 10, b"head\x1b[5;1Hfoot\x1b[2;4r\x1b[4;1H1\n\r2\n\r3");
        assert_eq!(lines(&e), ["head", "1", "2", "3", "foot"]);
        // Reverse index at the region's top scrolls it down.
        let e = screen(4, 10, b"a\r\nb\r\nc\r\nd\x1b[2;3r\x1b[2;1H\x1bMX");
        assert_eq!(lines(&e), ["a", "X", "b", "d"]);
        let e = screen(4, 10, b"a\r\nb\r\nc\r\nd\x1b[2;1H\x1b[L");
        assert_eq!(lines(&e), ["a", "", "b", "c"]);
        let e = screen(4, 10, b"a\r\nb\r\nc\r\nd\x1b[2;1H\x1b[2M");
        assert_eq!(lines(&e), ["a", "d", "", ""]);
        let e = screen(3, 10, b"a\r\nb\r\nc\x1b[S");
        assert_eq!(lines(&e), ["b", "c", ""]);
        let e = screen(3, 10, b"a\r\nb\r\nc\x1b[T");
        assert_eq!(lines(&e), ["", "a", "b"]);
        // Origin mode addresses rows from the region's top.
        let e = screen(5, 10, b"\x1b[2;4r\x1b[?6h\x1b[1;1HO\x1b[9;1HB");
        assert_eq!(lines(&e), ["", "O", "", "B", ""]);
    }

    #[test]
    fn the_alternate_screen_saves_the_main_one_and_is_dropped_after() {
        let mut e = screen(3, 12, b"main\r\nprompt");
        e.process(b"\x1b[?1049h\x1b[Hfull screen");
        assert!(e.screen().alternate_screen());
        assert_eq!(lines(&e), ["full screen", "", ""]);
        e.process(b"\x1b[?1049l");
        assert!(!e.screen().alternate_screen());
        assert_eq!(lines(&e), ["main", "prompt", ""]);
        assert_eq!(e.screen().cursor_position(), (1, 6));
        e.process(b"\x1b7\x1b[3;3H\x1b8!");
        assert_eq!(lines(&e)[1], "prompt!");
        e.process(b"\x1b[?2004h");
        assert!(e.screen().bracketed_paste());
        e.process(b"\x1bc");
        assert!(!e.screen().bracketed_paste());
        assert_eq!(lines(&e), ["", "", ""]);
    }

    #[test]
    fn resizing_keeps_the_cursor_row_and_clips() {
        let mut e = screen(4, 10, "1\r\n2\r\n3\r\n4\u{4e2d}".as_bytes());
        e.set_size(2, 2);
        assert_eq!(lines(&e), ["3", "4"]);
        assert_eq!(e.screen().cursor_position(), (1, 1));
        e.set_size(3, 20);
        assert_eq!(lines(&e), ["3", "4", ""]);
        e.process(b"\x1b[1;20Hz\t");
        assert_eq!(e.screen().cursor_position(), (0, 19));
    }

    #[test]
    fn a_row_holds_cells_only_while_it_has_text() {
        let rows_with_cells = |e: &Emulator| {
            e.screen()
                .main
                .iter()
                .filter(|l| !l.cells.is_empty())
                .count()
        };
        let mut e = Emulator::new(5, 10);
        assert_eq!(rows_with_cells(&e), 0, "a new screen is all blank rows");
        e.process(b"\x1b[3;4Hx\x1b[1;1H\x1b[2P\x1b[3@\x1b[K\x1b[3X");
        assert_eq!(rows_with_cells(&e), 1, "only the row written on");
        assert_eq!(e.screen().row_text(2), "   x");
        // Editing a blank row leaves it blank; erasing a whole row gives its cells back.
        e.process(b"\x1b[3;1H\x1b[2K");
        assert_eq!(rows_with_cells(&e), 0);
        assert_eq!(e.screen().row_text(2), "");
        e.process(b"ab\x1b[2J");
        assert_eq!(rows_with_cells(&e), 0, "ED 2 erases every row");
        e.process("\x1b[2;9H\u{4e2d}".as_bytes());
        assert_eq!(e.screen().row_text(1), "        \u{4e2d}");
        e.set_size(5, 9);
        assert_eq!(
            e.screen().row_text(1),
            "",
            "a wide character cut in half is blanked"
        );
    }

    #[test]
    fn huge_counts_stay_within_the_screen() {
        let e = screen(
            3,
            5,
            b"x\x1b[65535b\x1b[65535@\x1b[65535P\x1b[65535L\x1b[65535M\x1b[65535S\x1b[65535T\x1b[65535;65535H\x1b[65535X\x1b[65535I\x1b[65535Z",
        );
        let (rows, cols) = e.screen().size();
        let (row, col) = e.screen().cursor_position();
        assert!(row < rows && col < cols);
    }
}

//! Draws the dashboard from its [`Model`]: header, config error, server table or log, footer.
//!
//! It only turns the model into ratatui widgets: it decides nothing (the model says what is
//! enabled and what each line reads) and does no I/O, so it can be tested on a `TestBackend`.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use super::model::{LogSource, Model, View, COLUMNS, NO_LOG_FILE};
use crate::status::ServerState;

/// Draws the whole screen. `log` holds the selected server's log lines (oldest first) when
/// the log view is showing; it is ignored otherwise.
pub fn draw(frame: &mut Frame, model: &Model, log: &[String]) {
    let config_error = model.config_error();
    let [header, error, main, message, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(if config_error.is_some() { 3 } else { 0 }),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());

    let header_style = if model.stale() {
        Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
    } else {
        Style::new().add_modifier(Modifier::BOLD)
    };
    frame.render_widget(Paragraph::new(model.header()).style(header_style), header);

    if let Some(e) = config_error {
        let block = Block::new()
            .borders(Borders::ALL)
            .border_style(Style::new().fg(Color::Red))
            .title(" config error: the daemon keeps its previous configuration ");
        frame.render_widget(
            Paragraph::new(e)
                .style(Style::new().fg(Color::Red).add_modifier(Modifier::BOLD))
                .wrap(Wrap { trim: true })
                .block(block),
            error,
        );
    }

    match model.view() {
        View::Table => draw_table(frame, model, main),
        View::Log => draw_log(frame, model, log, main),
    }

    if let Some(note) = model.message() {
        let style = if note.error {
            Style::new().fg(Color::Red)
        } else {
            Style::new().fg(Color::Green)
        };
        frame.render_widget(Paragraph::new(note.text).style(style), message);
    }

    let mut spans = Vec::new();
    for hint in model.keys() {
        let style = if hint.enabled {
            Style::new()
        } else {
            Style::new().add_modifier(Modifier::DIM | Modifier::CROSSED_OUT)
        };
        spans.push(Span::styled(
            hint.key,
            style.add_modifier(Modifier::BOLD).fg(Color::Cyan),
        ));
        spans.push(Span::styled(format!(" {}   ", hint.label), style));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), keys);
}

fn state_color(state: ServerState) -> Color {
    match state {
        ServerState::Running => Color::Green,
        ServerState::Starting | ServerState::Lazy => Color::Yellow,
        ServerState::Backoff => Color::Magenta,
        ServerState::Stopped => Color::Gray,
        ServerState::Failed => Color::Red,
    }
}

fn draw_table(frame: &mut Frame, model: &Model, area: Rect) {
    let rows = model.rows();
    let mut widths: Vec<u16> = COLUMNS.iter().map(|c| c.chars().count() as u16).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(&row.cells) {
            *w = (*w).max(cell.chars().count() as u16);
        }
    }
    let constraints: Vec<Constraint> = widths
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i == COLUMNS.len() - 1 {
                Constraint::Fill(1)
            } else {
                Constraint::Length(*w)
            }
        })
        .collect();
    let stale = model.stale();
    let table_rows = rows.iter().map(|r| {
        let cells = r.cells.iter().enumerate().map(|(i, c)| {
            let cell = Cell::from(c.as_str());
            if i == 1 && r.removed {
                cell.style(Style::new().fg(Color::DarkGray))
            } else if i == 1 {
                cell.style(Style::new().fg(state_color(r.state)))
            } else {
                cell
            }
        });
        let row = Row::new(cells);
        // A removed server lingering for its clients is not one of the config's: dimmed.
        if stale || r.removed {
            row.style(Style::new().add_modifier(Modifier::DIM))
        } else {
            row
        }
    });
    let title = if stale {
        " servers (last known state) "
    } else {
        " servers "
    };
    let table = Table::new(table_rows, constraints)
        .header(Row::new(COLUMNS).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(Block::new().borders(Borders::ALL).title(title))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("▶ ")
        .column_spacing(2);
    // The selected server's row (instance rows sit between servers).
    let mut state = TableState::default().with_selected(rows.iter().position(|r| r.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_log(frame: &mut Frame, model: &Model, log: &[String], area: Rect) {
    let (title, lines, wrap): (String, Vec<Line>, bool) = match model.log_source() {
        LogSource::File { path, server } => {
            let height = area.height.saturating_sub(2) as usize;
            let shown = &log[log.len().saturating_sub(height)..];
            let lines = if shown.is_empty() {
                vec![Line::styled(
                    format!("no lines for {server} yet"),
                    Style::new().add_modifier(Modifier::DIM),
                )]
            } else {
                shown.iter().map(|l| Line::raw(l.as_str())).collect()
            };
            (
                format!(" log: {server} · {} ", path.display()),
                lines,
                false,
            )
        }
        LogSource::None => (" log ".into(), vec![Line::raw(NO_LOG_FILE)], true),
        LogSource::NoServer => (" log ".into(), vec![Line::raw("no server selected")], true),
    };
    // Log lines are cut at the edge (so the last ones fit); a sentence to read is wrapped.
    let mut paragraph =
        Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(title));
    if wrap {
        paragraph = paragraph.wrap(Wrap { trim: true });
    }
    frame.render_widget(paragraph, area);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::{DaemonStatus, ServerReport};
    use crate::dashboard::model::Action;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn report(name: &str, state: ServerState, pid: Option<u32>) -> ServerReport {
        ServerReport {
            pid,
            clients: 2,
            pending: 1,
            restarts: 4,
            uptime_ms: pid.map(|_| 125_000),
            last_exit: pid.is_none().then(|| "killed by signal 9".into()),
            ..crate::daemon::fixtures::report(name, state)
        }
    }

    fn model(config_error: Option<&str>, log_file: Option<&str>) -> Model {
        let mut m = Model::new();
        m.update(DaemonStatus {
            pid: 99,
            uptime_ms: 5_000,
            log_file: log_file.map(Into::into),
            config_error: config_error.map(Into::into),
            ..crate::daemon::fixtures::status(vec![
                report("memory", ServerState::Running, Some(1234)),
                report("time", ServerState::Failed, None),
            ])
        });
        m
    }

    fn render(model: &Model, log: &[String]) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(100, 16)).unwrap();
        terminal.draw(|f| draw(f, model, log)).unwrap();
        let buf = terminal.backend().buffer().clone();
        (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect()
    }

    fn find(screen: &[String], needle: &str) -> usize {
        screen
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} not on screen:\n{}", screen.join("\n")))
    }

    #[test]
    fn table_shows_header_rows_selection_and_keys() {
        let m = model(None, None);
        let screen = render(&m, &[]);
        assert!(screen[0].starts_with("rmcp-mux 0.4.0 · pid 99 · up 5s · /c/mux.toml"));
        let head = find(&screen, "Server");
        for col in COLUMNS {
            assert!(screen[head].contains(col), "{col}: {}", screen[head]);
        }
        let memory = find(&screen, "memory");
        assert_eq!(memory, head + 1);
        let row = &screen[memory];
        assert!(row.contains("▶ memory"), "{row}");
        for cell in ["running", "2/64", "1234", "2m 5s"] {
            assert!(row.contains(cell), "{cell}: {row}");
        }
        let time = &screen[memory + 1];
        assert!(
            time.contains("failed") && time.contains("killed by signal 9"),
            "{time}"
        );
        assert!(!time.contains('▶'));
        let keys = &screen[15];
        for k in [
            "j/k",
            "r restart",
            "s stop",
            "S start",
            "l log",
            "q/Esc quit",
        ] {
            assert!(keys.contains(k), "{k}: {keys}");
        }
    }

    #[test]
    fn disabled_keys_are_dimmed_and_states_coloured() {
        let m = model(None, None);
        let mut terminal = Terminal::new(TestBackend::new(100, 16)).unwrap();
        terminal.draw(|f| draw(f, &m, &[])).unwrap();
        let buf = terminal.backend().buffer();
        let keys_y = 15;
        let line: String = (0..100).map(|x| buf[(x, keys_y)].symbol()).collect();
        // The selected server runs: start is disabled, stop is not.
        let start_x = line.find("S start").unwrap();
        let stop_x = line.find("s stop").unwrap();
        let col = |s: &str, byte: usize| s[..byte].chars().count() as u16;
        assert!(buf[(col(&line, start_x), keys_y)]
            .modifier
            .contains(Modifier::DIM));
        assert!(!buf[(col(&line, stop_x), keys_y)]
            .modifier
            .contains(Modifier::DIM));
        let screen = render(&m, &[]);
        let y = find(&screen, "running") as u16;
        let x = col(
            &screen[y as usize],
            screen[y as usize].find("running").unwrap(),
        );
        assert_eq!(buf[(x, y)].fg, Color::Green);
    }

    #[test]
    fn a_removed_server_is_drawn_dimmed() {
        let mut m = Model::new();
        m.update(crate::daemon::fixtures::status(vec![
            report("memory", ServerState::Running, Some(1234)),
            ServerReport {
                removed: true,
                ..report("old", ServerState::Stopped, None)
            },
        ]));
        let mut terminal = Terminal::new(TestBackend::new(100, 16)).unwrap();
        terminal.draw(|f| draw(f, &m, &[])).unwrap();
        let buf = terminal.backend().buffer().clone();
        let screen = render(&m, &[]);
        let y = find(&screen, "removed") as u16;
        let line = &screen[y as usize];
        assert!(line.contains("old") && line.contains("2/64"), "{line}");
        let x = line[..line.find("removed").unwrap()].chars().count() as u16;
        assert_eq!(buf[(x, y)].fg, Color::DarkGray);
        assert!(buf[(x, y)].modifier.contains(Modifier::DIM));
        let live = find(&screen, "memory") as u16;
        assert!(!buf[(x, live)].modifier.contains(Modifier::DIM));
    }

    #[test]
    fn config_error_is_shown_above_the_table() {
        let m = model(Some("/c/mux.toml line 4: unknown key `cmdd`"), None);
        let screen = render(&m, &[]);
        let err = find(&screen, "unknown key `cmdd`");
        assert!(find(&screen, "config error") < err);
        assert!(err < find(&screen, "memory"));
    }

    #[test]
    fn unreachable_daemon_is_said_in_header_and_footer() {
        let mut m = model(None, None);
        m.unreachable("no rmcp-mux daemon is listening on /r/control.sock".into());
        let screen = render(&m, &[]);
        assert!(screen[0].starts_with("daemon not reachable (retrying)"));
        assert!(screen[14].starts_with("daemon not reachable: no rmcp-mux daemon is listening"));
        find(&screen, "last known state");
    }

    #[test]
    fn action_notes_show_in_the_footer() {
        let mut m = model(None, None);
        m.action_done(Err("server memory is shutting down".into()));
        let screen = render(&m, &[]);
        assert!(screen[14].starts_with("server memory is shutting down"));
    }

    #[test]
    fn log_view_shows_the_last_lines_that_fit() {
        let mut m = model(None, Some("/l/rmcp-mux.log"));
        m.apply(Action::OpenLog);
        let log: Vec<String> = (0..30)
            .map(|i| format!("INFO server{{name=memory}}: line {i}"))
            .collect();
        let screen = render(&m, &log);
        find(&screen, "log: memory · /l/rmcp-mux.log");
        find(&screen, "line 29");
        assert!(!screen.iter().any(|l| l.contains("line 0 ")));
        assert!(screen[15].contains("l/Esc back"));
    }

    #[test]
    fn log_view_without_a_log_file_says_how_to_get_one() {
        let mut m = model(None, None);
        m.apply(Action::OpenLog);
        let screen = render(&m, &[]);
        find(
            &screen,
            "this daemon logs to its terminal; run it with `rmcp-mux daemon start`",
        );
    }
}

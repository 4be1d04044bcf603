//! `nmidctl top`: a live view of each function's calls/s, errors, p99, in flight and queued
//! calls, redrawn every interval from `/api/v1/calls` (counters, turned into rates between two
//! readings), `/api/v1/functions` and `/api/v1/stats`.
//!
//! On a terminal it takes the alternate screen in raw mode and quits on `q`, Esc or Ctrl-C
//! (and SIGTERM), restoring the terminal whatever happens; a dispatcher that stops answering
//! is shown, not fatal. When stdout is not a terminal (or with `--once`) it prints one
//! snapshot, two readings one interval apart, and exits.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyModifiers};
use crossterm::{cursor, execute, terminal};
use serde_json::Value;

use super::admin::{age, Admin};
use super::cli::{Cli, TopArgs};
use super::table;
use super::CtlError;
use crate::rates::{rates, CallTotals, CallsView};

/// How often the key reader looks up from its wait (to see that `top` is over).
const KEY_POLL: Duration = Duration::from_millis(100);

/// One reading of the dispatcher.
struct Reading {
    at: Instant,
    calls: CallsView,
    functions: Value,
    stats: Value,
}

async fn read(admin: &Admin) -> Result<Reading, CtlError> {
    let calls = admin.json("/api/v1/calls").await?;
    let calls: CallsView = serde_json::from_value(calls)
        .map_err(|e| CtlError::Protocol(format!("/api/v1/calls: {e}")))?;
    Ok(Reading {
        at: Instant::now(),
        calls,
        functions: admin.json("/api/v1/functions").await?,
        stats: admin.json("/api/v1/stats").await?,
    })
}

/// One screen: the summary lines, then the table (its header line first).
struct Screen {
    summary: Vec<String>,
    table: Vec<String>,
}

/// The screen for `now` against the reading before it, every line at most `width` columns.
/// A narrow terminal gets the summary on several lines and the table cut at the edge.
fn screen(http: &str, before: &Reading, now: &Reading, width: usize) -> Screen {
    let elapsed = now.at.saturating_duration_since(before.at);
    let bounds = &now.calls.bounds;
    let overall = rates(
        bounds,
        Some(&CallTotals::sum("", &before.calls.functions)),
        &CallTotals::sum("", &now.calls.functions),
        elapsed,
    );
    let mut lines: Vec<(f64, Vec<String>)> = Vec::new();
    for f in now.functions.as_array().into_iter().flatten() {
        let name = f["name"].as_str().unwrap_or("?");
        let after = now.calls.functions.iter().find(|c| c.function == name);
        let previous = before.calls.functions.iter().find(|c| c.function == name);
        let r = after
            .map(|a| rates(bounds, previous, a, elapsed))
            .unwrap_or_default();
        lines.push((
            r.calls_per_second,
            vec![
                name.to_owned(),
                f["workers"].to_string(),
                f["in_flight"].to_string(),
                f["queued"].to_string(),
                f["jobs_queued"]
                    .as_u64()
                    .map_or("-".to_owned(), |n| n.to_string()),
                format!("{:.1}", r.calls_per_second),
                format!("{:.1}%", r.error_ratio * 100.0),
                r.p99_ms.map_or("-".to_owned(), |p| format!("{p:.2}")),
            ],
        ));
    }
    lines.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1[0].cmp(&b.1[0])));
    let uptime = Duration::from_secs_f64(now.stats["uptime_seconds"].as_f64().unwrap_or(0.0));
    let mut summary = vec![
        format!(
            "nmid {} at {http}",
            now.stats["version"].as_str().unwrap_or("?")
        ),
        format!("up {}", age(uptime)),
        format!("{} workers", now.stats["workers"]),
        format!("{:.1} calls/s", overall.calls_per_second),
        format!("{:.1}% errors", overall.error_ratio * 100.0),
        format!(
            "p99 {}",
            overall
                .p99_ms
                .map_or("-".to_owned(), |p| format!("{p:.2} ms"))
        ),
    ];
    if let Some(jobs) = now.stats["jobs_queued"].as_u64().filter(|&n| n > 0) {
        summary.push(format!("{jobs} background jobs queued"));
    }
    if now.stats["draining"] == true {
        summary.push("DRAINING".to_owned());
    }
    let rows: Vec<Vec<String>> = lines.into_iter().map(|(_, row)| row).collect();
    let body = table::render(
        &[
            "FUNCTION",
            "WORKERS",
            "IN FLIGHT",
            "QUEUED",
            "JOBS QUEUED",
            "CALLS/S",
            "ERRORS",
            "P99 MS",
        ],
        &rows,
    );
    Screen {
        summary: wrap(&summary, width),
        table: body.lines().map(|line| cut(line, width)).collect(),
    }
}

/// `screen` and `footer` in at most `rows` lines, so that nothing scrolls off the top: the
/// summary always comes first and whole (unless it alone is taller than the terminal), then
/// a blank line and as much of the table as fits; the footer only when it fits below the
/// table's header and a function line.
fn fit(screen: Screen, footer: &[&str], rows: usize) -> String {
    let mut lines = screen.summary;
    lines.truncate(rows);
    let room = rows - lines.len();
    let footer = match room >= footer.len() + 3 {
        true => footer,
        false => &[],
    };
    let table_rows = room
        .saturating_sub(footer.len() + 1)
        .min(screen.table.len());
    if table_rows > 0 {
        lines.push(String::new());
        lines.extend(screen.table.into_iter().take(table_rows));
    }
    lines.extend(footer.iter().map(|line| (*line).to_owned()));
    lines.join("\n")
}

/// What the live view shows below the screen.
const FOOTER: [&str; 2] = ["", "q quits"];

/// `parts` joined with " · " on as few lines of at most `width` columns as they fit (a part
/// wider than that is cut).
fn wrap(parts: &[String], width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for part in parts {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 3 + part.chars().count() <= width => {
                line.push_str(" · ");
                line.push_str(part);
            }
            _ => lines.push(cut(part, width)),
        }
    }
    lines
}

/// `line` cut to `width` columns.
fn cut(line: &str, width: usize) -> String {
    line.chars().take(width).collect()
}

pub(super) async fn top(cli: &Cli, args: &TopArgs) -> Result<(), CtlError> {
    let admin = Admin::new(cli)?;
    if args.once || !std::io::stdout().is_terminal() {
        let before = read(&admin).await?;
        tokio::time::sleep(args.interval).await;
        let now = read(&admin).await?;
        let screen = screen(&cli.http, &before, &now, usize::MAX);
        println!("{}", fit(screen, &[], usize::MAX));
        return Ok(());
    }
    let terminal = Terminal::take()?;
    let result = live(cli, args, &admin).await;
    drop(terminal);
    result
}

/// Redraws every interval until a quit key or signal.
async fn live(cli: &Cli, args: &TopArgs, admin: &Admin) -> Result<(), CtlError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| CtlError::Usage(format!("signal handler: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| CtlError::Usage(format!("signal handler: {e}")))?;
    let (quit_tx, mut quit) = tokio::sync::mpsc::channel::<()>(1);
    let over = Arc::new(AtomicBool::new(false));
    let keys = {
        let over = over.clone();
        std::thread::spawn(move || read_keys(&over, &quit_tx))
    };
    let mut before: Option<Reading> = None;
    let mut ticks = tokio::time::interval(args.interval);
    let result = loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = quit.recv() => break Ok(()),
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
        }
        // A terminal that says it has no size, as a bare pty may, gets a screenful.
        let (width, rows) = match terminal::size() {
            Ok((cols, rows)) if rows > 0 && cols > 0 => (usize::from(cols), usize::from(rows)),
            _ => (usize::MAX, 24),
        };
        let line = |text: String| Screen {
            summary: vec![cut(&text, width)],
            table: Vec::new(),
        };
        let screen = match read(admin).await {
            Ok(now) => {
                let screen = match &before {
                    Some(before) => screen(&cli.http, before, &now, width),
                    None => line(format!("nmid at {}: reading…", cli.http)),
                };
                before = Some(now);
                screen
            }
            Err(err) => line(format!(
                "nmid at {}: {err}; retrying every {:?}",
                cli.http, args.interval
            )),
        };
        draw(&fit(screen, &FOOTER, rows));
    };
    over.store(true, Ordering::Relaxed);
    let _ = keys.join();
    result
}

/// Waits for q, Esc or Ctrl-C (raw mode turns Ctrl-C into a key), until `over`.
fn read_keys(over: &AtomicBool, quit: &tokio::sync::mpsc::Sender<()>) {
    while !over.load(Ordering::Relaxed) {
        if !event::poll(KEY_POLL).unwrap_or(false) {
            continue;
        }
        let Ok(Event::Key(KeyEvent {
            code, modifiers, ..
        })) = event::read()
        else {
            continue;
        };
        let ctrl_c = code == KeyCode::Char('c') && modifiers.contains(KeyModifiers::CONTROL);
        if ctrl_c || matches!(code, KeyCode::Char('q' | 'Q') | KeyCode::Esc) {
            let _ = quit.try_send(());
            return;
        }
    }
}

fn draw(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = execute!(
        out,
        cursor::MoveTo(0, 0),
        terminal::Clear(terminal::ClearType::All)
    );
    // Raw mode: a newline does not return the carriage by itself.
    let _ = out.write_all(text.replace('\n', "\r\n").as_bytes());
    let _ = out.flush();
}

/// The terminal in raw mode on the alternate screen, restored when dropped (also on a
/// panic or an error).
struct Terminal;

impl Terminal {
    fn take() -> Result<Self, CtlError> {
        terminal::enable_raw_mode()
            .map_err(|e| CtlError::Usage(format!("cannot use the terminal: {e}")))?;
        let guard = Terminal;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )
        .map_err(|e| CtlError::Usage(format!("cannot use the terminal: {e}")))?;
        Ok(guard)
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = execute!(
            std::io::stdout(),
            cursor::Show,
            terminal::LeaveAlternateScreen
        );
        let _ = terminal::disable_raw_mode();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(functions: usize) -> Screen {
        Screen {
            summary: vec![
                "nmid 0.1.0 at http://h · up 3s".to_owned(),
                "0.0% errors".to_owned(),
            ],
            table: (0..=functions).map(|i| format!("row {i}")).collect(),
        }
    }

    /// However short the terminal, the frame fits it and starts with the whole summary; the
    /// table is cut to the rows left, and the footer goes first when room is short.
    #[test]
    fn a_short_terminal_keeps_the_summary_and_cuts_the_table() {
        for rows in 2..30 {
            let frame = fit(sample(40), &FOOTER, rows);
            let lines: Vec<&str> = frame.lines().collect();
            assert!(lines.len() <= rows, "{rows} rows: {frame}");
            assert_eq!(
                lines[..2],
                ["nmid 0.1.0 at http://h · up 3s", "0.0% errors"]
            );
        }
        let tall = fit(sample(40), &FOOTER, 10);
        assert_eq!(tall.lines().count(), 10);
        assert!(tall.ends_with("row 4\n\nq quits"), "{tall}");
        let short = fit(sample(40), &FOOTER, 5);
        assert_eq!(
            short.lines().collect::<Vec<_>>()[2..],
            ["", "row 0", "row 1"]
        );
        let all = fit(sample(3), &[], usize::MAX);
        assert!(all.ends_with("\n\nrow 0\nrow 1\nrow 2\nrow 3"), "{all}");
        assert_eq!(fit(sample(3), &FOOTER, 1), "nmid 0.1.0 at http://h · up 3s");
    }
}

//! `run`'s screen. On a terminal: a panel of [`HEIGHT`] lines redrawn in
//! place at the bottom (ratatui's inline viewport), log lines printed above
//! it, and keys read as SIPp reads them. Anywhere else: one plain line per
//! tick, no escape codes.

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::terminal;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget, Wrap};
use ratatui::{Terminal, TerminalOptions, Viewport, backend::CrosstermBackend};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use switchy_controller::cdr_stats;
use switchy_controller::originator::{State, Status};

/// Lines the panel takes.
pub const HEIGHT: u16 = 11;

/// What a key asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Key {
    /// Change the rate by this many calls/s.
    Rate(f64),
    /// Change the concurrency limit by this many calls.
    Limit(i64),
    /// Pause or resume launching.
    Pause,
    /// Stop launching; the run ends when its calls have ended.
    Quit,
    /// Hang up every call of the run now and end it.
    HangupAll,
    /// Ctrl-C (the terminal is raw: no SIGINT).
    Interrupt,
}

/// The SIPp-like key map.
pub const KEY_HELP: &str = "+,- rate ±1  *,/ ±10  ],[ limit ±10  p pause  q stop  Q hang up all";

fn map_key(code: KeyCode, mods: KeyModifiers) -> Option<Key> {
    Some(match code {
        KeyCode::Char('c') if mods.contains(KeyModifiers::CONTROL) => Key::Interrupt,
        KeyCode::Char('+') | KeyCode::Char('=') => Key::Rate(1.0),
        KeyCode::Char('-') => Key::Rate(-1.0),
        KeyCode::Char('*') => Key::Rate(10.0),
        KeyCode::Char('/') => Key::Rate(-10.0),
        KeyCode::Char(']') => Key::Limit(10),
        KeyCode::Char('[') => Key::Limit(-10),
        KeyCode::Char('p') | KeyCode::Char(' ') => Key::Pause,
        KeyCode::Char('q') | KeyCode::Esc => Key::Quit,
        KeyCode::Char('Q') => Key::HangupAll,
        _ => return None,
    })
}

/// Everything the panel shows besides the Originator's status.
pub struct View<'a> {
    /// The Originator.
    pub status: &'a Status,
    /// The run id (CDRs carry it).
    pub run_id: &'a str,
    /// A line about the run's end, once it is ending.
    pub note: Option<String>,
}

fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0) as u64;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// The panel's lines for a terminal `width` columns wide (each cut to
/// it). Pure, so it is tested without a terminal.
pub fn lines(v: &View<'_>, width: u16) -> Vec<String> {
    let s = v.status;
    let state = match s.state {
        State::Initial => "STARTING",
        State::Originating => "ORIGINATING",
        State::Stopped if s.config.rate <= 0.0 => "PAUSED",
        State::Stopped => "STOPPED",
    };
    let eta = s
        .eta_s
        .filter(|_| s.state == State::Originating)
        .map(fmt_secs)
        .unwrap_or_else(|| "-".into());
    let k = cdr_stats::live_kpis(s.answered, &s.failures);
    let pct = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.1} %"));
    let live_pct = 100.0 * s.active as f64 / s.config.limit.max(1) as f64;
    let failures = if s.failures.is_empty() {
        "none".to_owned()
    } else {
        let mut by: Vec<_> = s.failures.iter().collect();
        by.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
        by.iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let nodes = if s.active_per_node.is_empty() {
        "-".to_owned()
    } else {
        s.active_per_node
            .iter()
            .map(|(n, c)| format!("{n} {c}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let setup = if s.setup_recent.n == 0 {
        "- (no answer in the last 10 s)".to_owned()
    } else {
        format!(
            "p50 {:.1} ms  p99 {:.1} ms  (agent clock, last {:.0} s, {} calls)",
            s.setup_recent.p50_ms, s.setup_recent.p99_ms, s.setup_recent.window_s, s.setup_recent.n
        )
    };
    let bottleneck = s.bottleneck.clone().unwrap_or_else(|| {
        format!(
            "none (late launches {}, waits for limit {})",
            s.late_launches, s.blocked_by_limit
        )
    });
    let mut out = vec![
        format!(
            "switchy run {}  {state}  {} elapsed  ETA {eta}",
            v.run_id,
            fmt_secs(s.elapsed_s)
        ),
        format!(
            "rate        target {} cps  now {:.0}  average {:.1}",
            s.config.rate, s.current_cps, s.average_cps
        ),
        format!(
            "calls       offered {}  answered {}  failed {}  ended {}",
            s.offered, s.answered, s.failed, s.ended
        ),
        format!(
            "live        {} of limit {} ({live_pct:.0} %)  max {}",
            s.active, s.config.limit, s.max_active
        ),
        format!("setup       {setup}"),
        format!(
            "KPIs        ASR {}  NER {}  (ACD, PDD in the summary)",
            pct(k.asr_pct),
            pct(k.ner_pct)
        ),
        format!("failures    {failures}"),
        format!("nodes live  {nodes}"),
        format!("BOTTLENECK  {bottleneck}"),
        v.note
            .clone()
            .unwrap_or_else(|| format!("keys        {KEY_HELP}")),
    ];
    let w = width.max(20) as usize;
    for l in &mut out {
        if l.chars().count() > w {
            *l = l.chars().take(w - 1).collect::<String>() + "…";
        }
    }
    out
}

/// One plain line (no terminal).
pub fn plain_line(v: &View<'_>) -> String {
    let s = v.status;
    let k = cdr_stats::live_kpis(s.answered, &s.failures);
    format!(
        "{:?} offered {} answered {} failed {} live {}/{} | {:.0} cps now, {:.1} avg (target {}) | setup p99 {:.1} ms | ASR {}{}",
        s.state,
        s.offered,
        s.answered,
        s.failed,
        s.active,
        s.config.limit,
        s.current_cps,
        s.average_cps,
        s.config.rate,
        s.setup_recent.p99_ms,
        k.asr_pct.map_or("-".into(), |x| format!("{x:.1} %")),
        s.bottleneck
            .as_ref()
            .map(|b| format!(" | BOTTLENECK: {b}"))
            .unwrap_or_default()
    )
}

/// crossterm on stderr, except that it never asks the terminal where the
/// cursor is: crossterm writes that query to stdout, which `run … >
/// file` sends into the file, and the answer never comes. The panel
/// takes the bottom rows instead (ratatui scrolls the screen up to make
/// room), so no query is needed.
struct StderrBackend(CrosstermBackend<std::io::Stderr>);

impl ratatui::backend::Backend for StderrBackend {
    fn draw<'a, I>(&mut self, content: I) -> std::io::Result<()>
    where
        I: Iterator<Item = (u16, u16, &'a ratatui::buffer::Cell)>,
    {
        self.0.draw(content)
    }
    fn append_lines(&mut self, n: u16) -> std::io::Result<()> {
        self.0.append_lines(n)
    }
    fn hide_cursor(&mut self) -> std::io::Result<()> {
        self.0.hide_cursor()
    }
    fn show_cursor(&mut self) -> std::io::Result<()> {
        self.0.show_cursor()
    }
    fn get_cursor_position(&mut self) -> std::io::Result<ratatui::layout::Position> {
        let h = self.0.size()?.height;
        Ok(ratatui::layout::Position::new(0, h.saturating_sub(1)))
    }
    fn set_cursor_position<P: Into<ratatui::layout::Position>>(
        &mut self,
        position: P,
    ) -> std::io::Result<()> {
        self.0.set_cursor_position(position)
    }
    fn clear(&mut self) -> std::io::Result<()> {
        self.0.clear()
    }
    fn clear_region(&mut self, t: ratatui::backend::ClearType) -> std::io::Result<()> {
        self.0.clear_region(t)
    }
    fn size(&self) -> std::io::Result<ratatui::layout::Size> {
        self.0.size()
    }
    fn window_size(&mut self) -> std::io::Result<ratatui::backend::WindowSize> {
        self.0.window_size()
    }
    fn flush(&mut self) -> std::io::Result<()> {
        ratatui::backend::Backend::flush(&mut self.0)
    }
}

/// The terminal panel and its key reader.
struct Panel {
    term: Terminal<StderrBackend>,
    logs: std::sync::mpsc::Receiver<String>,
    raw: bool,
    stop_keys: Arc<AtomicBool>,
    key_thread: Option<std::thread::JoinHandle<()>>,
}

/// `run`'s screen: a panel on a terminal, plain lines elsewhere.
pub struct Screen {
    panel: Option<Panel>,
    keys: Option<tokio::sync::mpsc::Receiver<Key>>,
}

impl Screen {
    /// A panel when `panel` (stderr is a terminal), plain lines otherwise.
    /// Keys are read when stdin is a terminal too.
    pub fn new(panel: bool) -> Screen {
        if !panel {
            return Screen {
                panel: None,
                keys: None,
            };
        }
        match Panel::start() {
            Ok((p, keys)) => Screen {
                panel: Some(p),
                keys,
            },
            Err(e) => {
                tracing::warn!(error = %e, "no live panel on this terminal; plain lines instead");
                Screen {
                    panel: None,
                    keys: None,
                }
            }
        }
    }

    /// The keys pressed (once; None without a panel or a terminal stdin).
    pub fn take_keys(&mut self) -> Option<tokio::sync::mpsc::Receiver<Key>> {
        self.keys.take()
    }

    /// Redraws (panel) or prints a line (plain).
    pub fn draw(&mut self, v: &View<'_>) {
        match &mut self.panel {
            Some(p) => {
                if let Err(e) = p.draw(v) {
                    let _ = writeln!(std::io::stderr(), "panel: {e}");
                }
            }
            None => {
                let _ = writeln!(std::io::stderr(), "{}", plain_line(v));
            }
        }
    }

    /// Gives the terminal back (cooked mode, logs to stderr, the cursor
    /// under the last frame).
    pub fn finish(mut self) {
        if let Some(p) = self.panel.take() {
            p.finish();
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        if let Some(p) = self.panel.take() {
            p.finish();
        }
    }
}

impl Panel {
    fn start() -> std::io::Result<(Panel, Option<tokio::sync::mpsc::Receiver<Key>>)> {
        let term = Terminal::with_options(
            StderrBackend(CrosstermBackend::new(std::io::stderr())),
            TerminalOptions {
                viewport: Viewport::Inline(HEIGHT),
            },
        )?;
        let (log_tx, logs) = std::sync::mpsc::sync_channel(10_000);
        switchy_telemetry::tap(log_tx);
        let stop_keys = Arc::new(AtomicBool::new(false));
        let mut panel = Panel {
            term,
            logs,
            raw: false,
            stop_keys: stop_keys.clone(),
            key_thread: None,
        };
        if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            return Ok((panel, None));
        }
        terminal::enable_raw_mode()?;
        panel.raw = true;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        panel.key_thread = Some(std::thread::spawn(move || {
            while !stop_keys.load(Ordering::Relaxed) {
                match event::poll(Duration::from_millis(100)) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(_) => return,
                }
                let Ok(Event::Key(k)) = event::read() else {
                    continue;
                };
                if k.kind != KeyEventKind::Press {
                    continue;
                }
                if let Some(key) = map_key(k.code, k.modifiers)
                    && tx.blocking_send(key).is_err()
                {
                    return;
                }
            }
        }));
        Ok((panel, Some(rx)))
    }

    fn draw(&mut self, v: &View<'_>) -> std::io::Result<()> {
        let width = self.term.size()?.width.max(1);
        // Log lines first, above the panel.
        while let Ok(line) = self.logs.try_recv() {
            let rows = line
                .lines()
                .map(|l| (l.chars().count().max(1) as u16).div_ceil(width))
                .sum::<u16>()
                .max(1);
            self.term.insert_before(rows, |buf| {
                Paragraph::new(line.clone())
                    .wrap(Wrap { trim: false })
                    .render(buf.area, buf);
            })?;
        }
        let text = lines(v, width);
        self.term.draw(|f| {
            let area = f.area();
            let styled: Vec<Line> = text
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    if i == 0 || l.starts_with("BOTTLENECK") && !l.contains("  none") {
                        Line::from(Span::styled(
                            l.clone(),
                            Style::default().add_modifier(Modifier::BOLD),
                        ))
                    } else {
                        Line::from(l.clone())
                    }
                })
                .collect();
            f.render_widget(
                Paragraph::new(styled),
                Rect {
                    height: area.height.min(HEIGHT),
                    ..area
                },
            );
        })?;
        Ok(())
    }

    fn finish(mut self) {
        self.stop_keys.store(true, Ordering::Relaxed);
        if let Some(t) = self.key_thread.take() {
            let _ = t.join();
        }
        if self.raw {
            let _ = terminal::disable_raw_mode();
        }
        switchy_telemetry::untap();
        // What was logged since the last frame goes to stderr, in order.
        let mut err = std::io::stderr();
        let _ = writeln!(err);
        while let Ok(line) = self.logs.try_recv() {
            let _ = writeln!(err, "{line}");
        }
        let dropped = switchy_telemetry::TAP_DROPPED.load(Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(
                err,
                "({dropped} log lines came faster than the panel could show them and were not shown)"
            );
        }
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_are_sipps() {
        assert_eq!(
            map_key(KeyCode::Char('+'), KeyModifiers::NONE),
            Some(Key::Rate(1.0))
        );
        assert_eq!(
            map_key(KeyCode::Char('*'), KeyModifiers::NONE),
            Some(Key::Rate(10.0))
        );
        assert_eq!(
            map_key(KeyCode::Char('q'), KeyModifiers::NONE),
            Some(Key::Quit)
        );
        assert_eq!(
            map_key(KeyCode::Char('c'), KeyModifiers::CONTROL),
            Some(Key::Interrupt)
        );
        assert_eq!(map_key(KeyCode::Char('x'), KeyModifiers::NONE), None);
    }

    #[test]
    fn the_panel_fits_80_columns_and_shows_the_kpis() {
        let mut s = Status {
            state: State::Originating,
            offered: 1234,
            answered: 1200,
            failed: 34,
            active: 150,
            ..Status::default()
        };
        s.config.rate = 50.0;
        s.config.limit = 200;
        s.failures.insert("USER_BUSY".into(), 20);
        s.failures.insert("NO_ROUTE_DESTINATION".into(), 14);
        for i in 0..40 {
            s.active_per_node.insert(format!("freeswitch-node-{i}"), 3);
        }
        let v = View {
            status: &s,
            run_id: "0123456789abcdef",
            note: None,
        };
        let l = lines(&v, 80);
        assert_eq!(l.len(), HEIGHT as usize - 1);
        assert!(l.iter().all(|l| l.chars().count() <= 80), "{l:#?}");
        // ASR 1200 / 1234; NER counts the busy callees as the network's success.
        let kpis = l.iter().find(|l| l.starts_with("KPIs")).map(String::as_str);
        assert_eq!(
            kpis,
            Some("KPIs        ASR 97.2 %  NER 98.9 %  (ACD, PDD in the summary)")
        );
        assert!(
            l.iter()
                .any(|l| l.starts_with("failures    USER_BUSY 20  NO_ROUTE"))
        );
        assert!(plain_line(&v).find('\x1b').is_none());
    }
}

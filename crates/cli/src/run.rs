//! `switchy-controller run`: a load test. With `--mock N` everything runs in
//! this process: N simulated FreeSWITCH nodes (mock-relay), one real agent
//! per node over QUIC/mTLS with an in-memory CA, the controller, the CDR
//! store and the Originator.

use clap::Parser;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use switchy_controller::apps::builtin;
use switchy_controller::cdr::{CdrStore, CdrWriter, Launches};
use switchy_controller::cdr_stats;
use switchy_controller::cluster::Tracking;
use switchy_controller::originator::{Arrivals, Holding, Originator, OriginatorConfig, Weighted};
use switchy_controller::{ClusterConfig, Controller, ca};

/// Who ends a call at its holding time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HangupBy {
    /// FreeSWITCH itself where the app allows it.
    Freeswitch,
    /// The controller, with `uuid_kill`.
    Controller,
}

/// `run` arguments.
#[derive(Parser, Debug, Clone)]
pub struct Run {
    /// Node ids to originate from (agents connect to --listen); empty with --mock.
    pub nodes: Vec<String>,
    /// Run N simulated FreeSWITCH nodes and their agents in this process.
    #[arg(long, default_value_t = 0)]
    pub mock: usize,
    /// FreeSWITCH (or mock-relay) ESL endpoints, HOST:PORT, repeatable:
    /// one agent per endpoint runs in this process (nodes fs1, fs2, …).
    #[arg(long = "esl", value_name = "HOST:PORT")]
    pub esl: Vec<String>,
    /// Embedded agents subscribe ALL events instead of the ones switchy
    /// needs (plus those of the loaded apps).
    #[arg(long)]
    pub all_events: bool,
    /// What the tracker follows on every node (minimal: each leg's end,
    /// enough for CDRs and the Originator at the least FreeSWITCH CPU; live;
    /// full). Apps add the events they listen to.
    #[arg(long, value_enum, default_value_t = Tracking::Minimal)]
    pub tracking: Tracking,
    /// ESL event format of the embedded agents (plain or json).
    #[arg(long, default_value = "plain")]
    pub event_format: String,
    /// ESL command connections per embedded agent (beside its event
    /// connection).
    #[arg(long, default_value_t = 2)]
    pub command_connections: usize,
    /// Who hangs up an answered call after its holding time: freeswitch
    /// (the caller leg runs `&sleep(ms)` instead of `&park()`: no command
    /// per call) when its app does not act on the answered caller leg, or
    /// always the controller (`uuid_kill`).
    #[arg(long, value_enum, default_value_t = HangupBy::Freeswitch)]
    pub hangup_by: HangupBy,
    /// Embedded agents wake FreeSWITCH's event thread this often, ms (0:
    /// never; it then sends queued events every 20 ms).
    #[arg(long, default_value_t = 5)]
    pub event_poke_ms: u64,
    /// ESL password for --esl endpoints.
    #[arg(
        long,
        env = "SWITCHY_ESL_PASSWORD",
        default_value = "ClueCon",
        hide_env_values = true
    )]
    pub esl_password: String,
    /// Calls per second.
    #[arg(long, default_value_t = 30.0)]
    pub rate: f64,
    /// Maximum concurrent calls (erlangs).
    #[arg(long, default_value_t = 1)]
    pub limit: u64,
    /// Stop after this many calls (0: run until interrupted).
    #[arg(long, default_value_t = 0)]
    pub max_offered: u64,
    /// Mean call holding time in seconds (default: 95 % of limit / rate,
    /// leaving room for setup and teardown under the limit).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Arrival process.
    #[arg(long, value_enum, default_value_t = Arrivals::Even)]
    pub arrivals: Arrivals,
    /// Holding time distribution.
    #[arg(long, value_enum, default_value_t = Holding::Fixed)]
    pub holding: Holding,
    /// Built-in app with a weight, `NAME[:WEIGHT]` (repeatable; default Park).
    #[arg(long = "app", value_name = "NAME[:WEIGHT]")]
    pub apps: Vec<String>,
    /// Destination `user@host:port` (default with --mock: the next node's external profile).
    #[arg(long)]
    pub dest_url: Option<String>,
    /// SIP profile.
    #[arg(long, default_value = "external")]
    pub profile: String,
    /// Outbound proxy (fs_path), host:port.
    #[arg(long)]
    pub proxy: Option<String>,
    /// Gateway instead of a profile.
    #[arg(long)]
    pub gateway: Option<String>,
    /// Maximum calls launched per node.
    #[arg(long)]
    pub node_capacity: Option<u64>,
    /// CDR database.
    #[arg(long, env = "SWITCHY_DB", default_value = "sqlite://switchy.db")]
    pub db: String,
    /// Write the summary (JSON) here.
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
    /// REST API address (the Originator is at /api/v1/originator).
    #[arg(long, default_value = "127.0.0.1:9080")]
    pub http: SocketAddr,
    /// QUIC address for agents (without --mock).
    #[arg(long, default_value = "0.0.0.0:4433")]
    pub listen: SocketAddr,
    /// TLS directory (without --mock).
    #[arg(long, default_value = "/etc/switchy")]
    pub tls_dir: PathBuf,
    /// Seconds to wait for calls to end after the last launch or a signal.
    #[arg(long, default_value_t = 30)]
    pub drain_secs: u64,
    /// More log lines: -v INFO, -vv DEBUG (default WARN; RUST_LOG
    /// overrides).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Plain progress lines even on a terminal (no live panel, no keys).
    #[arg(long)]
    pub plain: bool,
    /// Write a CSV row of interval and cumulative statistics here every
    /// --stats-every (as SIPp's -trace_stat).
    #[arg(long, value_name = "FILE")]
    pub stats_file: Option<PathBuf>,
    /// Interval of --stats-file rows (e.g. 1s, 500ms, 1m).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub stats_every: Duration,
    /// REST bearer token (default: a random one, printed at start).
    #[arg(long, env = "SWITCHY_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `run`'s log filter for `-v` counts.
pub fn log_filter(verbose: u8) -> &'static str {
    match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    }
}

/// The live panel is drawn: stderr is a terminal and not `--plain` (nor
/// `TERM=dumb`).
pub fn panel_wanted(r: &Run) -> bool {
    !r.plain
        && std::io::stderr().is_terminal()
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

fn parse_apps(specs: &[String]) -> anyhow::Result<Vec<(String, u32)>> {
    if specs.is_empty() {
        return Ok(vec![("Park".into(), 1)]);
    }
    specs
        .iter()
        .map(|s| {
            let (name, w) = s.split_once(':').unwrap_or((s, "1"));
            let w: u32 = w
                .parse()
                .map_err(|_| anyhow::anyhow!("--app {s}: weight {w:?} is not a whole number"))?;
            Ok((name.to_owned(), w))
        })
        .collect()
}

/// Runs the load test; returns the process exit code.
pub async fn run(a: Run) -> anyhow::Result<i32> {
    let apps = parse_apps(&a.apps)?;
    // Everything a flag can get wrong is refused before anything starts.
    for (name, _) in &apps {
        builtin::build(name, &builtin::Params::new()).map_err(|e| {
            anyhow::anyhow!("--app {name}: {e} (switchy-controller list-apps shows them)")
        })?;
    }
    if a.rate.is_nan() || a.rate <= 0.0 {
        anyhow::bail!(
            "--rate {}: give a rate above 0 calls/s (pause a running test with `p` or PATCH /api/v1/originator {{\"rate\": 0}})",
            a.rate
        );
    }
    if a.stats_every.is_zero() {
        anyhow::bail!("--stats-every must be above 0 (e.g. 1s)");
    }
    let mut stats = match &a.stats_file {
        Some(p) => Some(crate::stats_file::StatsFile::create(p)?),
        None => None,
    };
    let store = CdrStore::connect(&a.db).await?;
    let token = match a.token.clone().filter(|t| !t.is_empty()) {
        Some(t) => t,
        None => uuid::Uuid::new_v4().simple().to_string(),
    };
    let token_shown = if a.token.as_deref().is_some_and(|t| !t.is_empty()) {
        "token from SWITCHY_API_TOKEN / --token".to_owned()
    } else {
        format!("token {token}")
    };
    let config = ClusterConfig {
        tracking: a.tracking,
        ..ClusterConfig::default()
    };
    let event_format = switchy_protocol::esl::EventFormat::from_keyword(&a.event_format)
        .filter(|f| *f != switchy_protocol::esl::EventFormat::Xml)
        .ok_or_else(|| anyhow::anyhow!("--event-format {:?}: use plain or json", a.event_format))?;
    if a.command_connections == 0 {
        anyhow::bail!("--command-connections must be at least 1");
    }
    // Embedded cluster, or a real one.
    let mut _mock = None;
    let mut _agents = Vec::new();
    let embedded = a.mock > 0 || !a.esl.is_empty();
    // Embedded agents, started once the CDR writer listens.
    let mut embedded_agents: Vec<switchy_agent::AgentConfig> = Vec::new();
    let mut ctl = if embedded {
        if a.mock > 0 && !a.esl.is_empty() {
            anyhow::bail!("--mock and --esl exclude each other");
        }
        let mut endpoints: Vec<(String, u16)> = Vec::new();
        if a.mock > 0 {
            let mut mc = mock_relay::MockConfig::ephemeral(a.mock);
            mc.journal_capacity = 1024;
            mc.knobs.max_sessions = 1_000_000;
            let mock = mock_relay::MockCluster::start(mc).await?;
            for i in 0..a.mock {
                let esl = mock.esl_addr(i);
                endpoints.push((esl.ip().to_string(), esl.port()));
            }
            _mock = Some(mock);
        } else {
            for e in &a.esl {
                let (h, p) = e
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
                    .ok_or_else(|| anyhow::anyhow!("--esl {e}: expected HOST:PORT"))?;
                endpoints.push((h, p));
            }
        }
        let cap = ca::new_ca()?;
        let cpem = ca::issue(&cap, "controller", &[])?;
        let ctl = Controller::prepare(
            config,
            "127.0.0.1:0".parse()?,
            a.http,
            token.clone(),
            cap.cert.as_bytes(),
            cpem.cert.as_bytes(),
            cpem.key.as_bytes(),
        )
        .await?;
        for (i, (host, port)) in endpoints.iter().enumerate() {
            let id = format!("fs{}", i + 1);
            let pem = ca::issue(&cap, &id, &[])?;
            let mut c = switchy_agent::AgentConfig::new(
                &id,
                &ctl.quic_addr.to_string(),
                cap.cert.clone().into_bytes(),
                pem.cert.clone().into_bytes(),
                pem.key.clone().into_bytes(),
            );
            c.esl_host = host.clone();
            c.esl_port = *port;
            c.esl_password = a.esl_password.clone();
            c.max_events = 2_000_000;
            c.event_format = event_format;
            c.command_connections = a.command_connections;
            c.event_poke = Duration::from_millis(a.event_poke_ms);
            if a.all_events {
                c.events = vec!["ALL".into()];
            }
            embedded_agents.push(c);
        }
        ctl
    } else {
        if a.nodes.is_empty() {
            anyhow::bail!(
                "give node ids to originate from, --esl HOST:PORT, or --mock N for simulated nodes"
            );
        }
        if a.dest_url.is_none() {
            anyhow::bail!("--dest-url is required with real nodes");
        }
        Controller::prepare_from_dir(
            config,
            Default::default(),
            a.listen,
            a.http,
            token.clone(),
            &a.tls_dir,
        )
        .await?
    };
    eprintln!(
        "switchy run: REST http://{}\n  {token_shown}\n  CDRs → {}",
        ctl.http_addr, store.url
    );
    for (name, _) in &apps {
        let app = builtin::build(name, &builtin::Params::new())?;
        ctl.apps.load(name, vec![app]).await?;
    }
    let launches: Launches = Default::default();
    let writer = CdrWriter::start(&ctl.cluster, store.clone(), launches.clone());
    // Every consumer is attached: events from here on are theirs.
    ctl.accept_agents().await?;
    for c in embedded_agents {
        _agents.push(switchy_agent::Agent::start(c)?);
    }
    let cfg = OriginatorConfig {
        rate: a.rate,
        limit: a.limit,
        max_offered: a.max_offered,
        duration: a.duration,
        arrivals: a.arrivals,
        holding: a.holding,
        apps: apps
            .iter()
            .map(|(n, w)| Weighted {
                app: n.clone(),
                weight: *w,
            })
            .collect(),
        nodes: a.nodes.clone(),
        dest_url: a.dest_url.clone(),
        profile: a.profile.clone(),
        gateway: a.gateway.clone(),
        proxy: a.proxy.clone(),
        node_capacity: a.node_capacity,
        ..OriginatorConfig::default()
    };
    let orig = Originator::new(ctl.cluster.clone(), cfg, launches)?;
    orig.set_cdr_sink(writer.sink());
    // Apps that do not act on the answered caller leg let FreeSWITCH hold
    // their calls itself (no hangup command per call).
    if a.hangup_by == HangupBy::Freeswitch {
        orig.hold_in_freeswitch(
            apps.iter()
                .filter(|(n, _)| !ctl.apps.listens(n, "CHANNEL_ANSWER"))
                .map(|(n, _)| n.clone()),
        );
    }
    *ctl.originator.write().unwrap_or_else(|p| p.into_inner()) = Some(orig.clone());
    // Wait for the nodes.
    let want = if a.mock > 0 {
        a.mock
    } else if !a.esl.is_empty() {
        a.esl.len()
    } else {
        a.nodes.len()
    };
    let t0 = Instant::now();
    loop {
        let up = ctl.cluster.nodes().iter().filter(|n| n.ready()).count();
        if up >= want {
            break;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("only {up} of {want} nodes came up within 60 s: check the agents");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if embedded && a.dest_url.is_none() {
        // Each node calls the next node's profile (as reported by its agent).
        let nodes = ctl.cluster.nodes();
        let mut dests = std::collections::BTreeMap::new();
        for (i, n) in nodes.iter().enumerate() {
            let peer = &nodes[(i + 1) % nodes.len()];
            let url = peer
                .profiles
                .iter()
                .find(|p| p.name == a.profile)
                .or(peer.profiles.first())
                .map(|p| p.url.clone())
                .ok_or_else(|| {
                    anyhow::anyhow!("node {} reports no SIP profile: give --dest-url", peer.id)
                })?;
            let hostport = url.rsplit('@').next().unwrap_or(&url).to_owned();
            dests.insert(n.id.clone(), format!("{}@{hostport}", 2000 + i));
        }
        orig.update(|c| c.dest_by_node = dests)?;
    }
    let started_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    if let Err(e) = store
        .record_run(
            orig.run_id(),
            started_us,
            &serde_json::to_value(orig.config()).unwrap_or_default(),
        )
        .await
    {
        tracing::warn!(error = %e, "the run's parameters are not stored: its plot will lack the target lines");
    }
    let rss_idle = rss_bytes();
    let (mut rss_peak, mut active_at_peak) = (rss_idle, 0u64);
    orig.start();
    let mut screen = crate::panel::Screen::new(panel_wanted(&a));
    let mut keys = screen.take_keys();
    let run_id = orig.run_id().to_owned();
    let stop = switchy_telemetry::shutdown_signal();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut stats_tick = tokio::time::interval(a.stats_every);
    let mut interrupted = false;
    let mut note: Option<String> = None;
    loop {
        tokio::select! {
            _ = &mut stop => {
                interrupted = true;
                break;
            }
            _ = orig.wait_finished() => break,
            Some(k) = next_key(&mut keys) => {
                use crate::panel::Key;
                match k {
                    Key::Interrupt => {
                        interrupted = true;
                        break;
                    }
                    Key::Rate(d) => {
                        let _ = orig.update(|c| c.rate = (c.rate + d).max(1.0));
                    }
                    Key::Limit(d) => {
                        let _ = orig.update(|c| c.limit = c.limit.saturating_add_signed(d).max(1));
                    }
                    Key::Pause => {
                        if orig.state() == switchy_controller::originator::State::Originating {
                            orig.stop();
                            note = Some("paused: p resumes, q ends the run".into());
                        } else if !orig.finished() {
                            orig.start();
                            note = None;
                        }
                    }
                    Key::Quit if !orig.finished() => {
                        orig.finish();
                        note = Some(format!(
                            "stopping: no more launches, {} calls end at their holding time (q again or Q: hang up now)",
                            orig.active()
                        ));
                    }
                    Key::Quit | Key::HangupAll => {
                        note = Some("hanging up this run's calls".into());
                        let _ = orig.shutdown().await;
                    }
                }
                redraw(&mut screen, &orig, &run_id, note.clone());
            }
            _ = stats_tick.tick(), if stats.is_some() => {
                if let Some(f) = stats.as_mut()
                    && let Err(e) = f.row(&orig.status(), std::time::SystemTime::now())
                {
                    tracing::warn!(error = %e, "--stats-file: cannot write; no more rows");
                    stats = None;
                }
            }
            _ = tick.tick() => {
                redraw(&mut screen, &orig, &run_id, note.clone());
                let (r, act) = (rss_bytes(), orig.active());
                if act > active_at_peak {
                    active_at_peak = act;
                    rss_peak = rss_peak.max(r);
                }
            }
        }
    }
    if interrupted {
        redraw(
            &mut screen,
            &orig,
            &run_id,
            Some("interrupted: hanging up this run's calls, flushing CDRs".into()),
        );
        let _ = orig.shutdown().await;
    }
    // Drain: calls end (hold time or hupall), their CDRs are built.
    let deadline = Instant::now() + Duration::from_secs(a.drain_secs);
    let mut last_draw = Instant::now();
    while orig.active() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if last_draw.elapsed() >= Duration::from_secs(1) {
            last_draw = Instant::now();
            redraw(
                &mut screen,
                &orig,
                &run_id,
                Some(format!("draining: {} calls still up", orig.active())),
            );
        }
    }
    // Let the last CHANNEL_DESTROYs through the tracker.
    let deadline = Instant::now() + Duration::from_secs(5);
    while ctl.cluster.with_tracker(|t| !t.is_empty()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redraw(&mut screen, &orig, &run_id, Some("done".into()));
    screen.finish();
    if let Some(f) = stats.as_mut() {
        // The last row covers the drain.
        let _ = f.row(&orig.status(), std::time::SystemTime::now());
    }
    orig.set_cdr_sink(None);
    let written = writer.close().await;
    // Embedded agents stop on purpose (no "connection lost" warning).
    for ag in std::mem::take(&mut _agents) {
        ag.stop(Duration::from_secs(2)).await;
    }
    let status = orig.status();
    let cdrs: Vec<_> = store
        .all()
        .await?
        .into_iter()
        .filter(|c| c.caller_req_originate.is_some_and(|t| t >= started_us))
        .collect();
    let summary = cdr_stats::summarize(&cdrs);
    let waits: Vec<(String, u64, u64)> = ctl
        .cluster
        .pipeline()
        .consumers()
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                c.stats.waits.load(std::sync::atomic::Ordering::Relaxed),
                c.stats.waited_us.load(std::sync::atomic::Ordering::Relaxed),
            )
        })
        .filter(|(_, n, _)| *n > 0)
        .collect();
    print_summary(&status, &summary, written, &waits);
    let per_call = rss_peak
        .saturating_sub(rss_idle)
        .checked_div(active_at_peak)
        .unwrap_or(0);
    println!(
        "{}",
        summary_row(
            "process memory (RSS)",
            &format!(
                "{:.1} MiB idle, {:.1} MiB at {} live calls: ~{} bytes per live call{}",
                rss_idle as f64 / 1048576.0,
                rss_peak as f64 / 1048576.0,
                active_at_peak,
                per_call,
                if embedded {
                    " (controller + embedded agents)"
                } else {
                    ""
                }
            )
        )
    );
    if let Some(p) = &a.metrics_file {
        let doc = serde_json::json!({"originator": status, "cdr_summary": summary, "cdrs_written": written,
            "rss_idle_bytes": rss_idle, "rss_peak_bytes": rss_peak, "active_at_peak": active_at_peak});
        std::fs::write(p, serde_json::to_vec_pretty(&doc)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?;
        eprintln!("metrics written to {}", p.display());
    }
    store.close().await;
    Ok(if interrupted { 130 } else { 0 })
}

/// Resident memory of this process, bytes (Linux; 0 elsewhere).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// Draws the Originator's status now, with `note` in the key line's place.
fn redraw(screen: &mut crate::panel::Screen, o: &Originator, run_id: &str, note: Option<String>) {
    screen.draw(&crate::panel::View {
        status: &o.status(),
        run_id,
        note,
    });
}

/// The next key, or never without a key reader.
async fn next_key(
    keys: &mut Option<tokio::sync::mpsc::Receiver<crate::panel::Key>>,
) -> Option<crate::panel::Key> {
    match keys {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Width the summary fits (an 80-column terminal).
const SUMMARY_WIDTH: usize = 80;
/// Column where values start.
const VALUE_COLUMN: usize = 37;

/// `  key   value`, the value wrapped at word boundaries to fit
/// [`SUMMARY_WIDTH`] with continuation lines under the value column.
pub fn summary_row(k: &str, v: &str) -> String {
    let mut out = format!("  {k:<34} ");
    let start = out.chars().count().max(VALUE_COLUMN);
    let room = SUMMARY_WIDTH.saturating_sub(start).max(20);
    let mut col = 0;
    for w in v.split(' ') {
        let n = w.chars().count();
        if col > 0 && col + 1 + n > room {
            out.push('\n');
            out.push_str(&" ".repeat(VALUE_COLUMN));
            col = 0;
        } else if col > 0 {
            out.push(' ');
            col += 1;
        }
        out.push_str(w);
        col += n;
    }
    out.push('\n');
    out
}

fn print_summary(
    s: &switchy_controller::originator::Status,
    m: &cdr_stats::Summary,
    written: u64,
    backpressure: &[(String, u64, u64)],
) {
    let mut out = String::new();
    let row = |out: &mut String, k: &str, v: String| out.push_str(&summary_row(k, &v));
    out.push_str("\n== switchy run summary ==\n");
    row(&mut out, "offered", s.offered.to_string());
    row(&mut out, "answered", s.answered.to_string());
    row(&mut out, "failed", s.failed.to_string());
    let cdr_note = match written.cmp(&s.offered) {
        std::cmp::Ordering::Equal => " (one per offered call)".to_owned(),
        std::cmp::Ordering::Less => format!(
            " ({} fewer than offered: calls still up at exit, or rows the store refused; see the log)",
            s.offered - written
        ),
        std::cmp::Ordering::Greater => format!(
            " ({} more than offered: inbound calls, or a call split by a resync)",
            written - s.offered
        ),
    };
    row(&mut out, "CDRs written", format!("{written}{cdr_note}"));
    row(
        &mut out,
        "rate achieved / target",
        format!("{:.2} / {} calls/s", s.average_cps, s.config.rate),
    );
    if !backpressure.is_empty() {
        let parts: Vec<String> = backpressure
            .iter()
            .map(|(name, n, us)| format!("{name} {n} times, {:.1} s", *us as f64 / 1e6))
            .collect();
        row(
            &mut out,
            "backpressure",
            format!(
                "events waited for a slow consumer ({}); nothing was dropped",
                parts.join("; ")
            ),
        );
    }
    if s.config.rate > 0.0 && s.offered > 0 && s.average_cps < 0.99 * s.config.rate {
        let planned = s.offered as f64 / s.config.rate;
        let took = s.offered as f64 / s.average_cps.max(1e-9);
        row(
            &mut out,
            "fell behind",
            format!(
                "launching {} calls took {took:.1} s for {planned:.1} s planned ({:.1} % behind schedule); every call was launched, late",
                s.offered,
                100.0 * (took - planned) / planned
            ),
        );
    }
    row(
        &mut out,
        "erlangs max / mean",
        format!(
            "{:.0} / {:.1} (limit {})",
            m.max_erlangs, m.mean_erlangs, s.config.limit
        ),
    );
    row(
        &mut out,
        "hold time",
        format!("{:.2} s ({:?})", s.hold_secs, s.config.holding),
    );
    let p = |x: &cdr_stats::Pcts| {
        if x.n == 0 {
            return "n/a (no samples: the events it needs were not subscribed)".to_owned();
        }
        format!(
            "p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
            x.p50, x.p95, x.p99, x.max
        )
    };
    out.push_str("  -- agent clock (µs resolution) --\n");
    row(
        &mut out,
        "call setup: originate → answer (ms)",
        p(&m.call_setup_agent_ms),
    );
    out.push_str("  -- FreeSWITCH's event clock (20 ms steps on some servers) --\n");
    row(
        &mut out,
        "call setup: create → answer (ms)",
        p(&m.call_setup_latency_ms),
    );
    row(&mut out, "answer latency (ms)", p(&m.answer_latency_ms));
    row(&mut out, "invite latency (ms)", p(&m.invite_latency_ms));
    row(
        &mut out,
        "call duration: answer → hangup (s)",
        p(&m.call_duration_s),
    );
    out.push_str("  -- controller clock → FreeSWITCH --\n");
    row(
        &mut out,
        "originate latency (ms)",
        p(&m.originate_latency_ms),
    );
    let k = &m.kpis;
    out.push_str("  -- KPIs (from the CDRs) --\n");
    let pct = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.2} %"));
    row(
        &mut out,
        "ASR / NER",
        format!("{} / {}", pct(k.asr_pct), pct(k.ner_pct)),
    );
    row(
        &mut out,
        "ACD (answered calls)",
        k.acd_s.map_or("-".into(), |a| format!("{a:.2} s")),
    );
    row(
        &mut out,
        "PDD: create → ringing (ms)",
        if k.pdd_ms.n == 0 {
            "n/a (no call rang or had early media before answer)".to_owned()
        } else {
            format!("{} (FreeSWITCH's clock)", p(&k.pdd_ms))
        },
    );
    let counts = |m: &std::collections::BTreeMap<String, usize>| {
        let mut v: Vec<_> = m.iter().collect();
        v.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
        v.iter()
            .map(|(c, n)| format!("{c}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    row(&mut out, "SIP final status", counts(&k.sip_status));
    row(&mut out, "Q.850 cause", counts(&k.q850));
    if m.per_node.len() > 1 {
        for (node, nk) in &m.per_node {
            row(
                &mut out,
                &format!("node {node}"),
                format!(
                    "{} calls, ASR {}, NER {}, ACD {}",
                    nk.calls,
                    pct(nk.asr_pct),
                    pct(nk.ner_pct),
                    nk.acd_s.map_or("-".into(), |a| format!("{a:.2} s"))
                ),
            );
        }
    }
    if !s.apps.is_empty() {
        row(&mut out, "apps", format!("{:?}", s.apps));
    }
    for (app, (passed, failed)) in &m.verdicts {
        row(
            &mut out,
            &format!("verdicts: {app}"),
            format!("{passed} passed, {failed} failed"),
        );
    }
    if s.failures.is_empty() {
        row(&mut out, "failures by cause", "none".into());
    } else {
        for (c, n) in &s.failures {
            row(&mut out, &format!("failed: {c}"), n.to_string());
        }
    }
    let verdict_failures: usize = m.verdicts.values().map(|(_, f)| f).sum();
    if verdict_failures > 0 {
        row(
            &mut out,
            "failed: app verdict",
            verdict_failures.to_string(),
        );
        if m.verdicts_cut_short > 0 {
            row(
                &mut out,
                "",
                format!(
                    "{} of them ended before their app's check finished: hold the calls longer (--duration)",
                    m.verdicts_cut_short
                ),
            );
        }
    }
    if s.bottleneck_secs.is_empty() {
        row(
            &mut out,
            "BOTTLENECK",
            s.bottleneck.clone().unwrap_or_else(|| {
                format!(
                    "none (late launches {}, waits for limit {})",
                    s.late_launches, s.blocked_by_limit
                )
            }),
        );
    } else {
        let mut by: Vec<_> = s.bottleneck_secs.values().collect();
        by.sort_by_key(|b| std::cmp::Reverse(b.0));
        for (secs, why) in by {
            row(
                &mut out,
                "BOTTLENECK",
                format!("{why} ({secs} of {:.0} s originating)", s.elapsed_s),
            );
        }
    }
    println!("{out}");
}

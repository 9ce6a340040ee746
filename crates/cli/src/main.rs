//! `switchy-controller`: the cluster's brain (serve), and its CA tools.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use switchy_controller::cluster::Tracking;
use switchy_controller::{ClusterConfig, Controller, ca};

mod panel;
mod run;
mod stats_file;

/// Controls a cluster of FreeSWITCH nodes through their switchy-agents.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the controller: QUIC for agents, REST API. Settings: flags >
    /// SWITCHY_* environment > --config file > defaults.
    Serve(Box<Serve>),
    /// A load test: the Originator drives the nodes (`--mock N`: simulated
    /// nodes in this process) and CDRs go to --db.
    Run(Box<run::Run>),
    /// Draw one run over time: call rate against its target, concurrent
    /// calls (all, per node) against the limit, setup latency p50/p95/p99,
    /// failures by cause. SVG or PNG by the --out name.
    Plot {
        /// CDR database.
        #[arg(long, env = "SWITCHY_DB", default_value = "sqlite://switchy.db")]
        db: String,
        /// Output file: .svg or .png.
        #[arg(long, default_value = "report.svg")]
        out: PathBuf,
        /// The run to draw: a run id (see --list-runs), `latest`, or `none`
        /// for CDRs that name no run (inbound calls, older databases).
        #[arg(long, default_value = "latest")]
        run: String,
        /// List the runs in the database and exit.
        #[arg(long)]
        list_runs: bool,
    },
    /// CDR tools.
    Cdr {
        #[command(subcommand)]
        cmd: CdrCmd,
    },
    /// List the built-in apps with their documentation and parameters.
    ListApps,
    /// Cluster certificate authority.
    Ca {
        #[command(subcommand)]
        cmd: CaCmd,
    },
}

#[derive(Subcommand, Debug)]
enum CdrCmd {
    /// Write every CDR to stdout.
    Export {
        /// CDR database.
        #[arg(long, env = "SWITCHY_DB", default_value = "sqlite://switchy.db")]
        db: String,
        /// csv, ndjson (one object per line) or json (an array). CSV and
        /// NDJSON give each timestamp as stored (µs since the Unix epoch)
        /// and readable (`<column>_utc`).
        #[arg(long, default_value = "csv")]
        format: String,
    },
}

#[derive(Subcommand, Debug)]
enum CaCmd {
    /// Print the SHA-256 fingerprint of each certificate in a PEM file (what a --revoked file lists).
    Fingerprint {
        /// PEM file (e.g. fs1.pem).
        file: PathBuf,
    },
    /// Create a CA (ca.pem, ca.key) in DIR.
    Init {
        /// Directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a certificate (NAME.pem, NAME.key) for an agent (NAME = node id) or the controller (NAME = controller).
    Issue {
        /// Node id, or `controller`.
        #[arg(long)]
        name: String,
        /// Directory holding the CA.
        #[arg(long)]
        dir: PathBuf,
        /// Extra DNS names for the certificate (the controller's public name).
        #[arg(long)]
        san: Vec<String>,
        /// Days the certificate is valid (renew before: `--force`).
        #[arg(long, default_value_t = switchy_controller::ca::CERT_VALID_DAYS)]
        days: i64,
        /// Replace an existing NAME.pem / NAME.key (renewal).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Parser, Debug)]
struct Serve {
    /// TOML config file (see deploy/controller.toml).
    #[arg(long, env = "SWITCHY_CONTROLLER_CONFIG")]
    config: Option<PathBuf>,
    /// QUIC address agents connect to.
    #[arg(long, env = "SWITCHY_LISTEN", default_value = "0.0.0.0:4433")]
    listen: SocketAddr,
    /// REST API address.
    #[arg(long, env = "SWITCHY_HTTP", default_value = "127.0.0.1:9080")]
    http: SocketAddr,
    /// Serve REST over TLS with this certificate (PEM; e.g. from `ca issue --name controller --san HOST`).
    #[arg(long, env = "SWITCHY_HTTP_TLS_CERT", requires = "http_tls_key")]
    http_tls_cert: Option<PathBuf>,
    /// The key of --http-tls-cert (PEM).
    #[arg(long, env = "SWITCHY_HTTP_TLS_KEY", requires = "http_tls_cert")]
    http_tls_key: Option<PathBuf>,
    /// API commands `POST /api/v1/api` may run, comma-separated (`*`: any, which includes FreeSWITCH's `system`, a shell) [default: status,show,sofia,version,uptime,global_getvar,uuid_dump,uuid_exists,uuid_getvar,hupall,reloadxml,sofia_contact].
    #[arg(long, env = "SWITCHY_API_ALLOW", value_delimiter = ',')]
    api_allow: Vec<String>,
    /// Open REST connections at most; more are closed as they arrive.
    #[arg(long, env = "SWITCHY_HTTP_MAX_CONNECTIONS", default_value_t = 512)]
    http_max_connections: usize,
    /// A REST request's headers (and the next request on a kept-alive connection) must arrive within this many seconds.
    #[arg(long, env = "SWITCHY_HTTP_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    http_header_timeout_secs: u64,
    /// Directory with ca.pem, controller.pem and controller.key.
    #[arg(long, env = "SWITCHY_TLS_DIR", default_value = "/etc/switchy")]
    tls_dir: PathBuf,
    /// File holding the REST bearer token (SWITCHY_API_TOKEN takes precedence).
    #[arg(long, env = "SWITCHY_API_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Channels older than this many seconds are reaped.
    #[arg(long, env = "SWITCHY_MAX_CHANNEL_AGE_SECS", default_value_t = 14_400)]
    max_channel_age_secs: u64,
    /// Live sessions tracked per node at most; more are counted, not tracked.
    #[arg(long, env = "SWITCHY_MAX_SESSIONS_PER_NODE", default_value_t = 100_000)]
    max_sessions_per_node: usize,
    /// Sessions of a node whose agent has been gone this many seconds are closed out.
    #[arg(long, env = "SWITCHY_NODE_GONE_GRACE_SECS", default_value_t = 120)]
    node_gone_grace_secs: u64,
    /// bgapi jobs time out after this many seconds.
    #[arg(long, env = "SWITCHY_JOB_TIMEOUT_SECS", default_value_t = 60)]
    job_timeout_secs: u64,
    /// Variable carrying the call id, stamped on every originate.
    #[arg(
        long,
        env = "SWITCHY_TRACKING_HEADER",
        default_value = "sip_h_X-switchy-orig-uuid"
    )]
    tracking_header: String,
    /// What the tracker follows on every node, which decides the events
    /// each FreeSWITCH serializes per call: minimal (each leg's end), live
    /// (also creation, answer, bridges, for the live session views) or full
    /// (every channel event). Apps and routes add what they listen to.
    #[arg(long, env = "SWITCHY_TRACKING", value_enum, default_value_t = Tracking::Live)]
    tracking: Tracking,
    /// Revoked agent certificates: one SHA-256 fingerprint per line (`ca fingerprint FILE.pem`; # comments).
    /// Re-read on SIGHUP; agents on it are disconnected and refused.
    #[arg(long, env = "SWITCHY_REVOKED")]
    revoked: Option<PathBuf>,
    /// Routes file (TOML, see deploy/routes.example.toml): parked channels
    /// are routed centrally. Reloaded on SIGHUP and POST /api/v1/routes/reload.
    #[arg(long, env = "SWITCHY_ROUTES")]
    routes: Option<PathBuf>,
    /// Built-in app to load, `NAME[:param=value;param=value]` (repeatable);
    /// sessions name it in their `switchy_app` variable. The first is the
    /// default app when there are no routes.
    #[arg(long = "app", value_name = "NAME[:PARAMS]")]
    apps: Vec<String>,
    /// CDR database: every finished call gets a row (sqlite://FILE or
    /// postgres://…); none when unset.
    #[arg(long, env = "SWITCHY_DB")]
    db: Option<String>,
    /// Serve SignalWire RELAY here (wss; see docs/relay.md): SDK apps control the calls routes hand them with `relay = "CONTEXT"` [default: off].
    #[arg(long, env = "SWITCHY_RELAY_LISTEN")]
    relay_listen: Option<SocketAddr>,
    /// RELAY's certificate (PEM; e.g. `ca issue --name relay --san HOST`).
    #[arg(long, env = "SWITCHY_RELAY_TLS_CERT", requires = "relay_tls_key")]
    relay_tls_cert: Option<PathBuf>,
    /// The key of --relay-tls-cert (PEM).
    #[arg(long, env = "SWITCHY_RELAY_TLS_KEY", requires = "relay_tls_cert")]
    relay_tls_key: Option<PathBuf>,
    /// Serve RELAY as plain ws, without TLS: a development option (the SDKs expect wss).
    #[arg(long, env = "SWITCHY_RELAY_PLAIN_WS")]
    relay_plain_ws: bool,
    /// A RELAY project and its token, `PROJECT:TOKEN` (repeatable; the config's [[relay.projects]] holds SHA-256 digests instead).
    #[arg(
        long = "relay-project",
        env = "SWITCHY_RELAY_PROJECT",
        value_delimiter = ','
    )]
    relay_projects: Vec<String>,
    /// Dial string of RELAY phone devices; {to} is the number.
    #[arg(
        long,
        env = "SWITCHY_RELAY_PHONE",
        default_value = "sofia/gateway/relay/{to}"
    )]
    relay_phone: String,
    /// Text-to-speech for RELAY plays, `ENGINE[:VOICE]` (FreeSWITCH's speak, e.g. flite:kal) [default: none; tts plays are refused with a 400].
    #[arg(long, env = "SWITCHY_RELAY_TTS")]
    relay_tts: Option<String>,
    /// Directory on the FreeSWITCH hosts where RELAY recordings go.
    #[arg(long, env = "SWITCHY_RELAY_RECORD_DIR", default_value = "/tmp")]
    relay_record_dir: String,
    /// Seconds a route waits for the RELAY client it offered a call to (then the call is the client's).
    #[arg(long, default_value_t = 10)]
    relay_offer_timeout_secs: u64,
    /// `[[relay.projects]]` of the config: (project, token SHA-256).
    #[arg(skip)]
    relay_digests: Vec<(String, String)>,
}

/// `[relay]` of the config.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct RelayFile {
    listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    phone: Option<String>,
    tts: Option<String>,
    record_dir: Option<String>,
    #[serde(default)]
    projects: Vec<RelayProjectFile>,
}

/// `[[relay.projects]]`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RelayProjectFile {
    project: String,
    /// SHA-256 of the token, hex (`printf %s TOKEN | sha256sum`).
    token_sha256: String,
}

/// `--config` keys (all optional).
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct ServeFile {
    listen: Option<SocketAddr>,
    http: Option<SocketAddr>,
    tls_dir: Option<PathBuf>,
    token_file: Option<PathBuf>,
    max_channel_age_secs: Option<u64>,
    job_timeout_secs: Option<u64>,
    tracking_header: Option<String>,
    routes: Option<PathBuf>,
    /// CDR database URL (used by the CDR store).
    db: Option<String>,
    /// RELAY.
    relay: Option<RelayFile>,
}

/// Fills values the user left at their default from the config file.
fn merge(mut s: Serve, m: &ArgMatches) -> anyhow::Result<Serve> {
    let Some(path) = s.config.clone() else {
        return Ok(s);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
    let f: ServeFile = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("invalid config {}: {e}", path.display()))?;
    let defaulted = |id: &str| m.value_source(id) == Some(ValueSource::DefaultValue);
    if let Some(v) = f.listen.filter(|_| defaulted("listen")) {
        s.listen = v;
    }
    if let Some(v) = f.http.filter(|_| defaulted("http")) {
        s.http = v;
    }
    if let Some(v) = f.tls_dir.filter(|_| defaulted("tls_dir")) {
        s.tls_dir = v;
    }
    if s.token_file.is_none() {
        s.token_file = f.token_file;
    }
    if let Some(v) = f
        .max_channel_age_secs
        .filter(|_| defaulted("max_channel_age_secs"))
    {
        s.max_channel_age_secs = v;
    }
    if let Some(v) = f.job_timeout_secs.filter(|_| defaulted("job_timeout_secs")) {
        s.job_timeout_secs = v;
    }
    if let Some(v) = f.tracking_header.filter(|_| defaulted("tracking_header")) {
        s.tracking_header = v;
    }
    if s.routes.is_none() {
        s.routes = f.routes;
    }
    if s.db.is_none() {
        s.db = f.db;
    }
    if let Some(r) = f.relay {
        s.relay_listen = s.relay_listen.or(r.listen);
        if s.relay_tls_cert.is_none() {
            s.relay_tls_cert = r.tls_cert;
            s.relay_tls_key = r.tls_key;
        }
        if let Some(v) = r.phone.filter(|_| defaulted("relay_phone")) {
            s.relay_phone = v;
        }
        s.relay_tts = s.relay_tts.or(r.tts);
        if let Some(v) = r.record_dir.filter(|_| defaulted("relay_record_dir")) {
            s.relay_record_dir = v;
        }
        for p in r.projects {
            let d = p.token_sha256.to_ascii_lowercase();
            if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                anyhow::bail!(
                    "config {}: [[relay.projects]] {}: token_sha256 must be 64 hex digits (printf %s TOKEN | sha256sum)",
                    path.display(),
                    p.project
                );
            }
            s.relay_digests.push((p.project, d));
        }
    }
    Ok(s)
}

/// The RELAY settings of `serve`, checked (None: RELAY off).
fn relay_config(s: &Serve) -> anyhow::Result<Option<switchy_controller::relay::RelayConfig>> {
    use switchy_controller::relay::{
        Projects, RelayConfig, hub::HubConfig, media::Tts, token_digest,
    };
    let Some(listen) = s.relay_listen else {
        return Ok(None);
    };
    let tls = match (&s.relay_tls_cert, &s.relay_tls_key, s.relay_plain_ws) {
        (Some(c), Some(k), false) => {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot read {}: {e} (check --relay-tls-cert/--relay-tls-key)",
                        p.display()
                    )
                })
            };
            Some(switchy_link::tls::tcp_server_config(
                &read(c)?,
                &read(k)?,
                "RELAY",
                "--relay-tls-cert",
                &[b"http/1.1"],
            )?)
        }
        (_, _, true) => {
            tracing::warn!(%listen, "RELAY over plain ws (--relay-plain-ws): credentials cross the network in clear");
            None
        }
        _ => anyhow::bail!(
            "--relay-listen needs --relay-tls-cert and --relay-tls-key (the SDKs connect over wss; `switchy-controller ca issue --name relay --san HOST` makes them), or --relay-plain-ws for development"
        ),
    };
    let mut projects = s.relay_digests.clone();
    for pt in &s.relay_projects {
        let (p, t) = switchy_relay::auth::Allowed::parse_pair(pt)
            .map_err(|e| anyhow::anyhow!("--relay-project {e}"))?;
        projects.push((p, token_digest(&t)));
    }
    if projects.is_empty() {
        anyhow::bail!(
            "--relay-listen: no RELAY project may connect; give --relay-project PROJECT:TOKEN (or SWITCHY_RELAY_PROJECT), or [[relay.projects]] in the config"
        );
    }
    if !s.relay_phone.contains("{to}") {
        anyhow::bail!(
            "--relay-phone {:?} must contain {{to}} (the number)",
            s.relay_phone
        );
    }
    let tts = s.relay_tts.as_deref().map(|t| {
        let (engine, voice) = t.split_once(':').unwrap_or((t, ""));
        Tts {
            engine: engine.to_owned(),
            voice: voice.to_owned(),
        }
    });
    Ok(Some(RelayConfig {
        listen,
        tls,
        projects: Projects(projects),
        hub: HubConfig {
            tts,
            phone: s.relay_phone.clone(),
            offer_timeout: Duration::from_secs(s.relay_offer_timeout_secs.max(1)),
            record_dir: s.relay_record_dir.clone(),
        },
        max_sessions: 10_000,
    }))
}

/// `NAME[:k=v;k=v]` → (NAME, params).
fn parse_app_spec(spec: &str) -> anyhow::Result<(&str, switchy_controller::apps::builtin::Params)> {
    let (name, rest) = spec.split_once(':').unwrap_or((spec, ""));
    let mut params = switchy_controller::apps::builtin::Params::new();
    for kv in rest.split(';').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--app {spec}: parameter {kv:?} is not key=value"))?;
        params.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok((name, params))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let matches = Args::command().get_matches();
    let args = Args::from_arg_matches(&matches)?;
    // `run` keeps its screen clear: WARN and up unless -v; its logs go
    // above the panel, so never with colour codes there.
    let log = match &args.cmd {
        Cmd::Run(r) => switchy_telemetry::LogOptions {
            default_filter: run::log_filter(r.verbose).into(),
            ansi: switchy_telemetry::colour_on_stderr() && !run::panel_wanted(r),
        },
        _ => switchy_telemetry::LogOptions::default(),
    };
    let telemetry = switchy_telemetry::init_with("switchy-controller", log);
    match args.cmd {
        Cmd::Ca {
            cmd: CaCmd::Fingerprint { file },
        } => {
            let pem = std::fs::read(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let fps = switchy_controller::tls::pem_fingerprints(&pem);
            if fps.is_empty() {
                anyhow::bail!("no certificate in {}", file.display());
            }
            for f in fps {
                println!("{f}  {}", file.display());
            }
        }
        Cmd::Ca {
            cmd: CaCmd::Init { dir },
        } => {
            ca::init_dir(&dir)?;
            println!(
                "CA created in {}: now `switchy-controller ca issue --name controller --dir {}`",
                dir.display(),
                dir.display()
            );
        }
        Cmd::Ca {
            cmd:
                CaCmd::Issue {
                    name,
                    dir,
                    san,
                    days,
                    force,
                },
        } => {
            ca::issue_to_dir(&dir, &name, &san, days, force)?;
            println!("issued {0}.pem and {0}.key in {1}", name, dir.display());
        }
        Cmd::Run(r) => {
            let code = run::run(*r).await?;
            telemetry.shutdown().await;
            std::process::exit(code);
        }
        Cmd::Plot {
            db,
            out,
            run,
            list_runs,
        } => {
            if !list_runs && switchy_controller::plot::Format::of(&out).is_none() {
                anyhow::bail!(
                    "--out {}: name the file .svg or .png (e.g. report.png)",
                    out.display()
                );
            }
            let store = switchy_controller::cdr::CdrStore::open_existing(&db).await?;
            let runs = store.runs().await?;
            if list_runs {
                println!(
                    "{:<18} {:>8}  {:<20}  parameters",
                    "run", "calls", "first call (UTC)"
                );
                for r in &runs {
                    let first = r
                        .first_us
                        .and_then(|us| u64::try_from(us).ok())
                        .and_then(|us| std::time::UNIX_EPOCH.checked_add(Duration::from_micros(us)))
                        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                        .unwrap_or_default();
                    let name = if r.run_id.is_empty() {
                        "none"
                    } else {
                        &r.run_id
                    };
                    let info = switchy_controller::plot::RunInfo::from_params(
                        name,
                        r.started_us,
                        r.params.as_ref().unwrap_or(&serde_json::Value::Null),
                    );
                    let params = match (info.rate, info.limit) {
                        (Some(rate), Some(limit)) => format!("rate {rate} cps, limit {limit}"),
                        _ => "-".into(),
                    };
                    println!("{name:<18} {:>8}  {first:<20}  {params}", r.calls);
                }
                return Ok(());
            }
            let chosen = match run.as_str() {
                "latest" => runs
                    .iter()
                    .rev()
                    .find(|r| !r.run_id.is_empty())
                    .or(runs.last()),
                "none" => runs.iter().find(|r| r.run_id.is_empty()),
                id => runs.iter().find(|r| r.run_id == id),
            }
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no run {run:?} in {db}: `switchy-controller plot --db {db} --list-runs` lists them"
                )
            })?;
            let cdrs = store.of_run(&chosen.run_id).await?;
            let info = switchy_controller::plot::RunInfo::from_params(
                &chosen.run_id,
                chosen.started_us.or(chosen.first_us),
                chosen.params.as_ref().unwrap_or(&serde_json::Value::Null),
            );
            switchy_controller::plot::write(&cdrs, &info, &out)?;
            let others = runs.len().saturating_sub(1);
            println!(
                "wrote {} (run {}, {} calls{})",
                out.display(),
                if chosen.run_id.is_empty() {
                    "none"
                } else {
                    &chosen.run_id
                },
                cdrs.len(),
                if others > 0 {
                    format!("; {others} other runs in the database: --list-runs, --run ID")
                } else {
                    String::new()
                }
            );
        }
        Cmd::Cdr {
            cmd: CdrCmd::Export { db, format },
        } => {
            let store = switchy_controller::cdr::CdrStore::open_existing(&db).await?;
            let cdrs = store.all().await?;
            let text = match format.as_str() {
                "csv" => switchy_controller::cdr_export::to_csv(&cdrs),
                "ndjson" => switchy_controller::cdr_export::to_ndjson(&cdrs),
                "json" => serde_json::to_string_pretty(&cdrs)?,
                other => anyhow::bail!("--format {other}: use csv, ndjson or json"),
            };
            use std::io::Write;
            std::io::stdout().write_all(text.as_bytes())?;
        }
        Cmd::ListApps => {
            for b in switchy_controller::apps::builtin::CATALOG {
                println!("{}\n    {}\n", b.name, b.doc);
            }
            println!(
                "Load one with `serve --app NAME[:param=value;…]` or `run --app NAME[:WEIGHT]`."
            );
        }
        Cmd::Serve(s) => {
            let sub = matches
                .subcommand_matches("serve")
                .ok_or_else(|| anyhow::anyhow!("serve arguments missing"))?;
            let s = merge(*s, sub)?;
            let token = match std::env::var("SWITCHY_API_TOKEN") {
                Ok(t) => t,
                Err(_) => match &s.token_file {
                    Some(p) => std::fs::read_to_string(p)
                        .map_err(|e| {
                            anyhow::anyhow!("cannot read token file {}: {e}", p.display())
                        })?
                        .trim()
                        .to_owned(),
                    None => anyhow::bail!(
                        "no API token: set SWITCHY_API_TOKEN, --token-file or token_file in the config"
                    ),
                },
            };
            let relay = relay_config(&s)?;
            let config = ClusterConfig {
                tracking_var: s.tracking_header,
                tracking: s.tracking,
                max_channel_age: Duration::from_secs(s.max_channel_age_secs),
                job_timeout: Duration::from_secs(s.job_timeout_secs),
                max_sessions_per_node: s.max_sessions_per_node,
                node_gone_grace: Duration::from_secs(s.node_gone_grace_secs.max(1)),
                ..ClusterConfig::default()
            };
            let tls = match (&s.http_tls_cert, &s.http_tls_key) {
                (Some(c), Some(k)) => {
                    let read = |p: &PathBuf| {
                        std::fs::read(p).map_err(|e| {
                            anyhow::anyhow!(
                                "cannot read {}: {e} (check --http-tls-cert/--http-tls-key)",
                                p.display()
                            )
                        })
                    };
                    Some(switchy_controller::rest::serve::tls_config(
                        &read(c)?,
                        &read(k)?,
                    )?)
                }
                _ => None,
            };
            use switchy_controller::rest::serve::{RestLimits, Scope};
            // Tokens with narrower scopes (the main token is admin).
            let mut tokens = Vec::new();
            for (var, scope) in [
                ("SWITCHY_CONTROL_TOKEN", Scope::Control),
                ("SWITCHY_READ_TOKEN", Scope::Read),
            ] {
                if let Ok(t) = std::env::var(var)
                    && !t.trim().is_empty()
                {
                    tokens.push((scope, t.trim().to_owned()));
                }
            }
            let defaults = RestLimits::default();
            let api_allow = match s.api_allow.as_slice() {
                [] => defaults.api_allow.clone(),
                [one] if one == "*" => None,
                list => Some(list.iter().map(|c| c.trim().to_owned()).collect()),
            };
            let limits = RestLimits {
                max_connections: s.http_max_connections.max(1),
                header_timeout: Duration::from_secs(s.http_header_timeout_secs.max(1)),
                tls,
                tokens,
                api_allow,
                ..defaults
            };
            // What a flag or file can get wrong is refused before anything
            // listens: the routes, the apps, the CDR database.
            let routes = match &s.routes {
                Some(path) => Some((
                    path.clone(),
                    switchy_controller::Router::from_file(path)
                        .map_err(|e| anyhow::anyhow!("routes file refused: {e}"))?,
                )),
                None => None,
            };
            for spec in &s.apps {
                let (name, params) = parse_app_spec(spec)?;
                switchy_controller::apps::builtin::build(name, &params)?;
            }
            if let Some((path, router)) = &routes {
                let contexts = router.table().relay_contexts();
                if !contexts.is_empty() && relay.is_none() {
                    anyhow::bail!(
                        "routes file {}: routes hand calls to RELAY ({}) but RELAY is off: add --relay-listen",
                        path.display(),
                        contexts.join(", ")
                    );
                }
            }
            let store = match &s.db {
                Some(db) => Some(switchy_controller::cdr::CdrStore::connect(db).await?),
                None => None,
            };
            let mut c =
                Controller::prepare_from_dir(config, limits, s.listen, s.http, token, &s.tls_dir)
                    .await?;
            for spec in &s.apps {
                let (name, params) = parse_app_spec(spec)?;
                let app = switchy_controller::apps::builtin::build(name, &params)?;
                c.apps.load(name, vec![app]).await?;
            }
            let cdr_writer = store.map(|store| {
                tracing::info!(db = %store.url, "CDRs on");
                switchy_controller::cdr::CdrWriter::start(&c.cluster, store, Default::default())
            });
            let relay = match relay {
                Some(cfg) => Some(c.use_relay(cfg).await?),
                None => None,
            };
            if let Some((path, router)) = routes {
                tracing::info!(file = %path.display(), routes = router.table().len(), "central routing on");
                c.use_router(router).await?;
            }
            if let Some(p) = &s.revoked {
                let list = load_revoked(p)?;
                tracing::info!(revoked = list.len(), file = %p.display(), "revocation list loaded");
                c.cluster.set_revoked(list);
            }
            // Agents only once the CDR writer, the apps and the routes are
            // in place: nothing they send goes unrouted or unbilled.
            c.accept_agents().await?;
            tracing::info!(
                "agents: {} (QUIC), REST: http://{}",
                c.quic_addr,
                c.http_addr
            );
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            let stop = switchy_telemetry::shutdown_signal();
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    _ = hup.recv() => {
                        if s.routes.is_some() {
                            match c.reload_routes() {
                                Ok(n) => tracing::info!(routes = n, "SIGHUP: routes reloaded"),
                                Err(e) => tracing::error!(error = %e, "SIGHUP: routes file refused; the previous routes keep serving"),
                            }
                        }
                        if let Some(p) = &s.revoked {
                            match load_revoked(p) {
                                Ok(list) => {
                                    let n = list.len();
                                    let closed = c.cluster.set_revoked(list);
                                    tracing::info!(revoked = n, disconnected = closed, "SIGHUP: revocation list reloaded");
                                }
                                Err(e) => tracing::error!(error = %e, "SIGHUP: revocation list unreadable; the previous list stays"),
                            }
                        }
                    }
                }
            }
            tracing::info!(
                "stopping: agents disconnected (they keep what was not acknowledged), draining CDRs"
            );
            if let Some(r) = &relay {
                r.shutdown().await;
            }
            c.stop_agents();
            if let Some(w) = cdr_writer {
                let n = w.close().await;
                tracing::info!(written = n, "CDRs flushed");
            }
            drop(c);
        }
    }
    telemetry.shutdown().await;
    Ok(())
}

/// A revocation file: one fingerprint per line (anything after it, and
/// `#` comments, ignored).
fn load_revoked(p: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(p)
        .map_err(|e| anyhow::anyhow!("cannot read --revoked {}: {e}", p.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(f) = line.split_whitespace().next() else {
            continue;
        };
        let f = f.replace(':', "").to_ascii_lowercase();
        if f.len() != 64 || !f.bytes().all(|b| b.is_ascii_hexdigit()) {
            anyhow::bail!(
                "--revoked {} line {}: {f:?} is not a SHA-256 fingerprint (print one with `switchy-controller ca fingerprint FILE.pem`)",
                p.display(),
                i + 1
            );
        }
        out.push(f);
    }
    Ok(out)
}

//! Logging set-up for switchy's binaries: human-readable logs filtered by
//! `RUST_LOG` (default `info`), and, only when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set, spans exported over OTLP/HTTP. With no collector nothing hangs:
//! the exporter has a 2 s timeout and shutdown is bounded.
#![forbid(unsafe_code)]

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the OTLP pipeline alive; call [`Telemetry::shutdown`] at exit.
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the exporter (bounded by its timeout).
    pub async fn shutdown(self) {
        if let Some(p) = self.provider {
            let _ = tokio::task::spawn_blocking(move || {
                p.shutdown_with_timeout(Duration::from_secs(3))
            })
            .await;
        }
    }
}

/// How a binary's logs are written.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// The filter when `RUST_LOG` is not set (`info`, `warn`, …).
    pub default_filter: String,
    /// Colour codes: only when stderr is a terminal and `NO_COLOR` is not
    /// set, and never when the lines may be tapped into a screen
    /// ([`tap`]).
    pub ansi: bool,
}

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions {
            default_filter: "info".into(),
            ansi: colour_on_stderr(),
        }
    }
}

/// True when stderr is a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>).
pub fn colour_on_stderr() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber for `service`, logging `info` and up.
pub fn init(service: &'static str) -> Telemetry {
    init_with(service, LogOptions::default())
}

/// Where log lines go while a screen owns the terminal: each line is
/// offered to this channel instead of stderr. Logs are a best-effort view:
/// a line the screen cannot take at once is counted in [`TAP_DROPPED`]
/// and written to stderr after [`untap`].
static TAP: std::sync::Mutex<Option<std::sync::mpsc::SyncSender<String>>> =
    std::sync::Mutex::new(None);

/// Log lines a full tap could not take (see [`tap`]).
pub static TAP_DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sends every log line to `tx` until [`untap`] (a terminal screen draws
/// them above itself).
pub fn tap(tx: std::sync::mpsc::SyncSender<String>) {
    *TAP.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
}

/// Log lines go to stderr again.
pub fn untap() {
    *TAP.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

/// stderr, or the tap while one is set.
struct TapWriter;

impl std::io::Write for TapWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let g = TAP.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = g.as_ref() {
            let line = String::from_utf8_lossy(buf).trim_end().to_owned();
            if tx.try_send(line).is_err() {
                TAP_DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            return Ok(buf.len());
        }
        drop(g);
        std::io::stderr().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Installs the global subscriber for `service` with `opts`.
pub fn init_with(service: &'static str, opts: LogOptions) -> Telemetry {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| opts.default_filter.as_str().into())
        // The exporter's own HTTP stack must not trace itself.
        .add_directive("hyper=off".parse().expect("static directive"))
        .add_directive("reqwest=off".parse().expect("static directive"))
        .add_directive("h2=off".parse().expect("static directive"));
    // Logs are diagnostics: stderr, so stdout keeps only what a command
    // prints (summaries, tables); colour only on a terminal.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(|| TapWriter)
        .with_ansi(opts.ansi);
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    let Some(endpoint) = endpoint else {
        tracing_subscriber::registry().with(filter).with(fmt).init();
        return Telemetry { provider: None };
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_timeout(Duration::from_secs(2))
        .build();
    match exporter {
        Ok(exporter) => {
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(service)
                        .build(),
                )
                .build();
            let tracer = provider.tracer(service);
            tracing_subscriber::registry()
                .with(filter)
                .with(fmt)
                .with(tracing_opentelemetry::layer().with_tracer(tracer))
                .init();
            tracing::info!(endpoint = %endpoint, "exporting traces over OTLP/HTTP");
            Telemetry {
                provider: Some(provider),
            }
        }
        Err(e) => {
            tracing_subscriber::registry().with(filter).with(fmt).init();
            tracing::warn!(error = %e, "OTLP exporter not started; logging only (check OTEL_EXPORTER_OTLP_ENDPOINT)");
            Telemetry { provider: None }
        }
    }
}

/// Waits for SIGINT or SIGTERM (systemd's stop).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

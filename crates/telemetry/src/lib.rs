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

/// Installs the global subscriber for `service`.
pub fn init(service: &'static str) -> Telemetry {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info".into())
        // The exporter's own HTTP stack must not trace itself.
        .add_directive("hyper=off".parse().expect("static directive"))
        .add_directive("reqwest=off".parse().expect("static directive"))
        .add_directive("h2=off".parse().expect("static directive"));
    // Logs are diagnostics: stderr, so stdout keeps only what a command
    // prints (summaries, tables); colour only on a terminal.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
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

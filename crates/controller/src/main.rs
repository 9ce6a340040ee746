//! `switchy-controller`: the cluster's brain (serve), and its CA tools.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use switchy_controller::{ClusterConfig, Controller, ca};

/// Controls a cluster of FreeSWITCH nodes through their switchy-agents.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the controller: QUIC for agents, REST API.
    Serve(Serve),
    /// Cluster certificate authority.
    Ca {
        #[command(subcommand)]
        cmd: CaCmd,
    },
}

#[derive(Subcommand, Debug)]
enum CaCmd {
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
    },
}

#[derive(Parser, Debug)]
struct Serve {
    /// QUIC address agents connect to.
    #[arg(long, env = "SWITCHY_LISTEN", default_value = "0.0.0.0:4433")]
    listen: SocketAddr,
    /// REST API address.
    #[arg(long, env = "SWITCHY_HTTP", default_value = "127.0.0.1:9080")]
    http: SocketAddr,
    /// Directory with ca.pem, controller.pem and controller.key.
    #[arg(long, env = "SWITCHY_TLS_DIR", default_value = "/etc/switchy")]
    tls_dir: PathBuf,
    /// File holding the REST bearer token (or SWITCHY_API_TOKEN).
    #[arg(long, env = "SWITCHY_API_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Channels older than this many seconds are reaped.
    #[arg(long, env = "SWITCHY_MAX_CHANNEL_AGE_SECS", default_value_t = 14_400)]
    max_channel_age_secs: u64,
    /// bgapi jobs time out after this many seconds.
    #[arg(long, default_value_t = 60)]
    job_timeout_secs: u64,
    /// Variable carrying the call id, stamped on every originate.
    #[arg(long, default_value = "sip_h_X-switchy-orig-uuid")]
    tracking_header: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Args::parse().cmd {
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
            cmd: CaCmd::Issue { name, dir, san },
        } => {
            ca::issue_to_dir(&dir, &name, &san)?;
            println!("issued {0}.pem and {0}.key in {1}", name, dir.display());
        }
        Cmd::Serve(s) => {
            let token = match std::env::var("SWITCHY_API_TOKEN") {
                Ok(t) => t,
                Err(_) => match &s.token_file {
                    Some(p) => std::fs::read_to_string(p)
                        .map_err(|e| {
                            anyhow::anyhow!("cannot read token file {}: {e}", p.display())
                        })?
                        .trim()
                        .to_owned(),
                    None => anyhow::bail!("no API token: set SWITCHY_API_TOKEN or --token-file"),
                },
            };
            let config = ClusterConfig {
                tracking_var: s.tracking_header,
                max_channel_age: Duration::from_secs(s.max_channel_age_secs),
                job_timeout: Duration::from_secs(s.job_timeout_secs),
                ..ClusterConfig::default()
            };
            let c = Controller::start_from_dir(config, s.listen, s.http, token, &s.tls_dir).await?;
            tracing::info!(
                "agents: {} (QUIC), REST: http://{}",
                c.quic_addr,
                c.http_addr
            );
            tokio::signal::ctrl_c().await?;
        }
    }
    Ok(())
}

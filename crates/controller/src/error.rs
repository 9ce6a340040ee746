//! The controller library's typed errors (binaries wrap them in anyhow);
//! each message says what to do next.

use std::net::SocketAddr;
use std::path::PathBuf;

/// What an app callback (or a route handler) may fail with: any error,
/// most often a [`crate::cluster::CommandError`].
pub type AppError = Box<dyn std::error::Error + Send + Sync>;

/// A value or request refused, with what to fix (an Originator parameter,
/// a built-in app's parameter, a JSON patch).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// The controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No REST token.
    #[error("an API token is required: set --token-file or SWITCHY_API_TOKEN")]
    NoToken,
    /// The TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] switchy_link::TlsError),
    /// A TLS file of the directory could not be read.
    #[error("cannot read {}: {source} (create it with `switchy-controller ca init/issue --dir {}`)", path.display(), dir.display())]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// The TLS directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The agents' UDP port could not be bound.
    #[error("cannot listen for agents on {addr}: {source} (choose another --listen)")]
    ListenAgents {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The REST port could not be bound.
    #[error("cannot listen for REST on {addr}: {source} (choose another --http)")]
    ListenRest {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The CDR database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum CdrError {
    /// Neither SQLite nor PostgreSQL.
    #[error("CDR database URL {0:?} is neither sqlite://FILE nor postgres://…")]
    Url(String),
    /// Connecting failed.
    #[error("cannot open CDR database {url}: {source} ({hint})")]
    Open {
        /// The URL, password elided.
        url: String,
        /// Why.
        source: sqlx::Error,
        /// What to check, for this kind of database.
        hint: &'static str,
    },
    /// The embedded migrations failed.
    #[error("CDR migrations failed on {url}: {source}")]
    Migrate {
        /// The URL, password elided.
        url: String,
        /// Why.
        source: sqlx::migrate::MigrateError,
    },
    /// A command that only reads CDRs was pointed at a SQLite file that
    /// does not exist (it is not created).
    #[error(
        "no CDR database at {0}: check --db (a load test writes one: switchy-controller run --db sqlite://FILE)"
    )]
    Missing(String),
    /// A query failed.
    #[error(transparent)]
    Query(#[from] sqlx::Error),
}

/// A plot could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The database holds no CDR.
    #[error("no CDRs to plot: run a load test first (switchy-controller run … --db …)")]
    Empty,
    /// Drawing or writing the file failed.
    #[error("cannot draw the plot: {0}")]
    Draw(String),
}

impl<E: std::error::Error + Send + Sync> From<plotters::drawing::DrawingAreaErrorKind<E>>
    for PlotError
{
    fn from(e: plotters::drawing::DrawingAreaErrorKind<E>) -> Self {
        PlotError::Draw(e.to_string())
    }
}

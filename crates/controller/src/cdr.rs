//! The CDR store: one row per finished call in table `cdr`, written in
//! batches by one writer task, through sqlx's Any driver so SQLite (the
//! default, one file in WAL mode) and PostgreSQL share one code path.
//! Migrations are embedded. A CDR handed to the writer is never dropped
//! silently: [`CdrWriter::close`] flushes everything pending, and a failed
//! batch is retried, then logged with the rows it held.

use crate::cluster::{Cluster, ClusterEvent};
use crate::pipeline::Feed;
use crate::tracker::Finished;
use serde::Serialize;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// One finished call.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Cdr {
    /// Call id (the tracking header: the originating leg's UUID).
    pub call_id: String,
    /// Node of the first (caller) leg.
    pub node: String,
    /// App the call ran (`switchy_app`).
    pub app: Option<String>,
    /// Hangup cause of the caller leg (or a switchy cause).
    pub hangup_cause: String,
    /// The call failed (never answered, or refused).
    pub failed: bool,
    /// Caller leg UUID.
    pub caller_uuid: Option<String>,
    /// Caller id number.
    pub caller_num: Option<String>,
    /// Destination number.
    pub callee_num: Option<String>,
    /// Caller CHANNEL_CREATE, µs.
    pub caller_create: Option<i64>,
    /// Caller CHANNEL_ANSWER, µs.
    pub caller_answer: Option<i64>,
    /// When the Originator decided to launch the call, µs.
    pub caller_req_originate: Option<i64>,
    /// Caller CHANNEL_ORIGINATE, µs.
    pub caller_originate: Option<i64>,
    /// Caller CHANNEL_HANGUP, µs.
    pub caller_hangup: Option<i64>,
    /// When FreeSWITCH accepted the bgapi (the job launched), µs.
    pub job_launch: Option<i64>,
    /// Node of the callee leg.
    pub callee_node: Option<String>,
    /// Callee leg UUID.
    pub callee_uuid: Option<String>,
    /// Callee CHANNEL_CREATE, µs.
    pub callee_create: Option<i64>,
    /// Callee CHANNEL_ANSWER, µs.
    pub callee_answer: Option<i64>,
    /// Callee CHANNEL_HANGUP, µs.
    pub callee_hangup: Option<i64>,
    /// Live sessions on the cluster when the call was launched.
    pub active_sessions: i64,
    /// Concurrent calls of the Originator when the call was launched.
    pub erlangs: f64,
    /// Agent clock: the `bgapi originate` written to FreeSWITCH, µs.
    pub originate_sent_agent: Option<i64>,
    /// Agent clock: its BACKGROUND_JOB received, µs.
    pub originate_done_agent: Option<i64>,
    /// The app's verdict (`passed`, `failed: …`), if its app checks one.
    pub verdict: Option<String>,
}

/// Columns written per row.
const COLUMNS: usize = 24;

macro_rules! columns {
    () => {
        "call_id, node, app, hangup_cause, failed, caller_uuid, caller_num, callee_num, caller_create, caller_answer, caller_req_originate, caller_originate, caller_hangup, job_launch, callee_node, callee_uuid, callee_create, callee_answer, callee_hangup, active_sessions, erlangs, originate_sent_agent, originate_done_agent, verdict"
    };
}

/// A connected CDR database.
#[derive(Clone)]
pub struct CdrStore {
    pool: AnyPool,
    sqlite: bool,
    /// The URL (password elided).
    pub url: String,
    /// Extra time each row takes to insert (to test a slow store).
    insert_delay: Duration,
}

fn elide(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    }
}

impl CdrStore {
    /// Connects (`sqlite://file.db`, `sqlite::memory:`, `postgres://…`),
    /// creates the SQLite file if missing, enables WAL, and runs the
    /// embedded migrations.
    pub async fn connect(url: &str) -> anyhow::Result<CdrStore> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        if !sqlite && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            anyhow::bail!(
                "CDR database URL {:?} is neither sqlite://FILE nor postgres://…",
                elide(url)
            );
        }
        let full = if sqlite && !url.contains("memory") && !url.contains("mode=") {
            format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
        } else {
            url.to_owned()
        };
        let opts = AnyPoolOptions::new()
            .max_connections(if sqlite { 1 } else { 8 })
            .acquire_timeout(Duration::from_secs(10));
        let opts = if sqlite {
            opts.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA journal_mode=WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA synchronous=NORMAL")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            })
        } else {
            opts
        };
        let pool = opts.connect(&full).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot open CDR database {}: {e} (check --db; sqlite://switchy.db needs a writable directory)",
                elide(url)
            )
        })?;
        let m = if sqlite {
            sqlx::migrate!("./migrations/sqlite")
        } else {
            sqlx::migrate!("./migrations/postgres")
        };
        m.run(&pool)
            .await
            .map_err(|e| anyhow::anyhow!("CDR migrations failed on {}: {e}", elide(url)))?;
        Ok(CdrStore {
            pool,
            sqlite,
            url: elide(url),
            insert_delay: Duration::ZERO,
        })
    }

    /// Makes every row take `d` longer to insert: a slow store, for tests
    /// and rehearsals of backpressure.
    pub fn with_insert_delay(mut self, d: Duration) -> CdrStore {
        self.insert_delay = d;
        self
    }

    /// Inserts rows in one transaction (multi-row INSERTs); a row whose
    /// call already has one is skipped (one CDR per call). Returns the rows
    /// inserted.
    pub async fn insert(&self, rows: &[Cdr]) -> Result<u64, sqlx::Error> {
        if !self.insert_delay.is_zero() {
            tokio::time::sleep(self.insert_delay * rows.len() as u32).await;
        }
        let mut tx = self.pool.begin().await?;
        let mut inserted = 0;
        for chunk in rows.chunks(500) {
            // PostgreSQL needs `$N` (the Any QueryBuilder writes `?`, which
            // it refuses); SQLite gets plain `?`: it reads `$N` as named
            // parameters and looks each one up by name.
            let mut sql = String::with_capacity(64 + chunk.len() * 160);
            sql.push_str(concat!("INSERT INTO cdr (", columns!(), ") VALUES "));
            for r in 0..chunk.len() {
                sql.push_str(if r == 0 { "(" } else { ",(" });
                for c in 0..COLUMNS {
                    if c > 0 {
                        sql.push(',');
                    }
                    if self.sqlite {
                        sql.push('?');
                    } else {
                        sql.push_str(&format!("${}", r * COLUMNS + c + 1));
                    }
                }
                sql.push(')');
            }
            sql.push_str(" ON CONFLICT (call_id) DO NOTHING");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for c in chunk {
                q = q
                    .bind(c.call_id.clone())
                    .bind(c.node.clone())
                    .bind(c.app.clone())
                    .bind(c.hangup_cause.clone())
                    .bind(c.failed as i64)
                    .bind(c.caller_uuid.clone())
                    .bind(c.caller_num.clone())
                    .bind(c.callee_num.clone())
                    .bind(c.caller_create)
                    .bind(c.caller_answer)
                    .bind(c.caller_req_originate)
                    .bind(c.caller_originate)
                    .bind(c.caller_hangup)
                    .bind(c.job_launch)
                    .bind(c.callee_node.clone())
                    .bind(c.callee_uuid.clone())
                    .bind(c.callee_create)
                    .bind(c.callee_answer)
                    .bind(c.callee_hangup)
                    .bind(c.active_sessions)
                    .bind(c.erlangs)
                    .bind(c.originate_sent_agent)
                    .bind(c.originate_done_agent)
                    .bind(c.verdict.clone());
            }
            inserted += q.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Number of rows.
    pub async fn count(&self) -> Result<i64, sqlx::Error> {
        sqlx::query("SELECT COUNT(*) FROM cdr")
            .fetch_one(&self.pool)
            .await?
            .try_get::<i64, _>(0)
    }

    /// Every row, oldest call first.
    pub async fn all(&self) -> Result<Vec<Cdr>, sqlx::Error> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM cdr ORDER BY COALESCE(caller_req_originate, caller_create), id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Cdr {
                    call_id: r.try_get(0)?,
                    node: r.try_get(1)?,
                    app: r.try_get(2)?,
                    hangup_cause: r.try_get(3)?,
                    failed: r.try_get::<i64, _>(4)? != 0,
                    caller_uuid: r.try_get(5)?,
                    caller_num: r.try_get(6)?,
                    callee_num: r.try_get(7)?,
                    caller_create: r.try_get(8)?,
                    caller_answer: r.try_get(9)?,
                    caller_req_originate: r.try_get(10)?,
                    caller_originate: r.try_get(11)?,
                    caller_hangup: r.try_get(12)?,
                    job_launch: r.try_get(13)?,
                    callee_node: r.try_get(14)?,
                    callee_uuid: r.try_get(15)?,
                    callee_create: r.try_get(16)?,
                    callee_answer: r.try_get(17)?,
                    callee_hangup: r.try_get(18)?,
                    active_sessions: r.try_get(19)?,
                    erlangs: r.try_get(20)?,
                    originate_sent_agent: r.try_get(21)?,
                    originate_done_agent: r.try_get(22)?,
                    verdict: r.try_get(23)?,
                })
            })
            .collect()
    }

    /// Deletes every row (tests, `run --fresh`).
    pub async fn clear(&self) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM cdr").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// What the Originator knew about a call when it launched it.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// App.
    pub app: Option<String>,
    /// Decision time, µs.
    pub req_us: i64,
    /// bgapi accepted, µs.
    pub job_us: Option<i64>,
    /// Cluster sessions at launch.
    pub active_sessions: i64,
    /// Originator's concurrent calls at launch.
    pub erlangs: f64,
    /// Agent clock: the bgapi written to FreeSWITCH, µs.
    pub sent_agent_us: Option<i64>,
    /// Agent clock: its BACKGROUND_JOB received, µs.
    pub done_agent_us: Option<i64>,
}

/// Launch facts by call id, shared by the Originator and the CDR builder.
pub type Launches = Arc<Mutex<HashMap<String, Launch>>>;

/// Counters of the writer.
#[derive(Debug, Default)]
pub struct CdrCounters {
    /// Rows handed to the writer.
    pub queued: AtomicU64,
    /// Rows committed.
    pub written: AtomicU64,
    /// Rows that could not be written after retries (logged in full).
    pub failed: AtomicU64,
    /// Rows not written because their call already had a CDR (re-built
    /// from events re-sent after a controller restart).
    pub duplicates: AtomicU64,
}

/// Builds CDRs from the cluster's finished sessions and writes them in
/// batches.
pub struct CdrWriter {
    tx: Option<mpsc::Sender<Cdr>>,
    /// Counters.
    pub counters: Arc<CdrCounters>,
    writer: Option<tokio::task::JoinHandle<()>>,
    builder: tokio::task::JoinHandle<()>,
    /// Tells the builder to take what is queued and stop.
    drain: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Rows queued for the store before the builder waits for it (and so the
/// cluster, and the agents, wait too); as many finished legs are queued
/// for the builder.
pub const WRITER_QUEUE: usize = 8192;

fn opt(v: u64) -> Option<i64> {
    (v > 0).then_some(v as i64)
}

/// Turns the legs of one call into its CDR.
pub fn build_cdr(legs: &[Finished], launch: Option<&Launch>) -> Option<Cdr> {
    // The caller is the outbound leg created first (the originated one);
    // for inbound calls, the first leg.
    let caller = legs
        .iter()
        .filter(|f| f.session.direction == "outbound")
        .min_by_key(|f| f.session.created_us)
        .or_else(|| legs.iter().min_by_key(|f| f.session.created_us))?;
    let callee = legs
        .iter()
        .filter(|f| f.session.uuid != caller.session.uuid)
        .min_by_key(|f| f.session.created_us);
    let s = &caller.session;
    let app = launch
        .and_then(|l| l.app.clone())
        .or_else(|| s.variable("switchy_app").map(str::to_owned));
    let answered = s.answered_us > 0 || callee.is_some_and(|c| c.session.answered_us > 0);
    Some(Cdr {
        call_id: s.call.clone(),
        node: s.node.clone(),
        app,
        hangup_cause: caller.cause.clone(),
        failed: !answered,
        caller_uuid: Some(s.uuid.clone()),
        caller_num: (!s.cid_num.is_empty()).then(|| s.cid_num.clone()),
        callee_num: (!s.dest.is_empty()).then(|| s.dest.clone()),
        caller_create: opt(s.created_us),
        caller_answer: opt(s.answered_us),
        caller_req_originate: launch.map(|l| l.req_us),
        caller_originate: opt(s.originate_us),
        caller_hangup: opt(s.hangup_us),
        job_launch: launch.and_then(|l| l.job_us),
        callee_node: callee.map(|c| c.session.node.clone()),
        callee_uuid: callee.map(|c| c.session.uuid.clone()),
        callee_create: callee.and_then(|c| opt(c.session.created_us)),
        callee_answer: callee.and_then(|c| opt(c.session.answered_us)),
        callee_hangup: callee.and_then(|c| opt(c.session.hangup_us)),
        active_sessions: launch.map_or(0, |l| l.active_sessions),
        erlangs: launch.map_or(0.0, |l| l.erlangs),
        originate_sent_agent: launch.and_then(|l| l.sent_agent_us),
        originate_done_agent: launch.and_then(|l| l.done_agent_us),
        verdict: None,
    })
}

/// Where the Originator sends the CDR of a call that never got a channel.
#[derive(Clone)]
pub struct CdrSink {
    tx: mpsc::Sender<Cdr>,
    counters: Arc<CdrCounters>,
}

impl CdrSink {
    /// Queues a row, waiting while the store is behind.
    pub async fn push(&self, c: Cdr) {
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(c).await.is_err() {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("CDR writer already closed: a failed call's CDR was not stored");
        }
    }
}

impl CdrWriter {
    /// A handle to queue rows directly.
    pub fn sink(&self) -> Option<CdrSink> {
        self.tx.as_ref().map(|tx| CdrSink {
            tx: tx.clone(),
            counters: self.counters.clone(),
        })
    }

    /// Starts building CDRs from `cluster`'s finished calls into `store`.
    pub fn start(cluster: &Cluster, store: CdrStore, launches: Launches) -> CdrWriter {
        Self::start_with_queue(cluster, store, launches, WRITER_QUEUE)
    }

    /// As [`CdrWriter::start`], with `queue` rows (and as many finished
    /// legs) held before the cluster waits for the store.
    pub fn start_with_queue(
        cluster: &Cluster,
        store: CdrStore,
        launches: Launches,
        queue: usize,
    ) -> CdrWriter {
        let counters = Arc::new(CdrCounters::default());
        let (tx, mut rx) = mpsc::channel::<Cdr>(queue.max(1));
        let c2 = counters.clone();
        let writer = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(4096);
            loop {
                let Some(first) = rx.recv().await else { break };
                batch.push(first);
                while batch.len() < 4096 {
                    match rx.try_recv() {
                        Ok(c) => batch.push(c),
                        Err(_) => break,
                    }
                }
                write_batch(&store, &mut batch, &c2).await;
                // Let a burst accumulate into the next batch.
                if batch.is_empty() && rx.is_empty() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            write_batch(&store, &mut batch, &c2).await;
        });
        let mut events = cluster.subscribe("cdr", Feed::Ends, queue);
        let cluster2 = cluster.clone();
        let tx2 = tx.clone();
        let c3 = counters.clone();
        let (drain, mut drain_rx) = tokio::sync::oneshot::channel::<()>();
        let builder = tokio::spawn(async move {
            let mut pending: HashMap<String, Vec<Finished>> = HashMap::new();
            let mut draining = false;
            loop {
                let ev = if draining {
                    match events.try_recv() {
                        Ok(ev) => ev,
                        Err(_) => break,
                    }
                } else {
                    tokio::select! {
                        biased;
                        ev = events.recv() => match ev {
                            Some(ev) => ev,
                            None => break,
                        },
                        _ = &mut drain_rx => {
                            draining = true;
                            continue;
                        }
                    }
                };
                let ClusterEvent::Finished(f) = ev else {
                    continue;
                };
                let call = f.session.call.clone();
                let ended = f.call_ended;
                pending.entry(call.clone()).or_default().push((*f).clone());
                if ended && let Some(legs) = pending.remove(&call) {
                    let launch = launches
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&call);
                    if let Some(mut cdr) = build_cdr(&legs, launch.as_ref()) {
                        if let Some(v) = cluster2.take_verdict(&call) {
                            cdr.failed |= !v.passed();
                            cdr.verdict = Some(v.to_string());
                        }
                        c3.queued.fetch_add(1, Ordering::Relaxed);
                        if tx2.send(cdr).await.is_err() {
                            c3.queued.fetch_sub(1, Ordering::Relaxed);
                            tracing::error!(call = %call, "CDR writer gone: this call's CDR was not stored");
                        }
                    }
                }
            }
        });
        CdrWriter {
            tx: Some(tx),
            counters,
            writer: Some(writer),
            builder,
            drain: Some(drain),
        }
    }

    /// Rows queued but not yet committed.
    pub fn pending(&self) -> u64 {
        let c = &self.counters;
        c.queued.load(Ordering::Relaxed).saturating_sub(
            c.written.load(Ordering::Relaxed)
                + c.failed.load(Ordering::Relaxed)
                + c.duplicates.load(Ordering::Relaxed),
        )
    }

    /// Stops building and flushes every queued row; returns rows written.
    /// Sinks handed out must be dropped first (the Originator's are, when
    /// it is dropped).
    pub async fn close(mut self) -> u64 {
        // The builder takes every end already published, then stops.
        if let Some(d) = self.drain.take() {
            let _ = d.send(());
        }
        let _ = (&mut self.builder).await;
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            let _ = w.await;
        }
        self.counters.written.load(Ordering::Relaxed)
    }
}

async fn write_batch(store: &CdrStore, batch: &mut Vec<Cdr>, c: &CdrCounters) {
    if batch.is_empty() {
        return;
    }
    for attempt in 0..5u32 {
        match store.insert(batch).await {
            Ok(n) => {
                c.written.fetch_add(n, Ordering::Relaxed);
                let dup = batch.len() as u64 - n.min(batch.len() as u64);
                if dup > 0 {
                    c.duplicates.fetch_add(dup, Ordering::Relaxed);
                    tracing::info!(rows = dup, "CDRs skipped: their calls already have one");
                }
                batch.clear();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, rows = batch.len(), attempt, "CDR batch not written; retrying");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
        }
    }
    c.failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
    for row in batch.drain(..) {
        tracing::error!(cdr = ?row, "CDR could not be written to {}: kept in this log", store.url);
    }
}

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
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// The Originator run that launched it (`switchy_originator`).
    pub run_id: Option<String>,
    /// Caller id name.
    pub caller_name: Option<String>,
    /// Dialplan context (the inbound leg's, else the caller's).
    pub context: Option<String>,
    /// Codec the caller leg read.
    pub codec: Option<String>,
    /// The caller leg's SIP Call-ID.
    pub sip_call_id: Option<String>,
    /// Final SIP status: 200 when answered, else the caller leg's
    /// `sip_term_status` / `sip_invite_failure_status`.
    pub sip_status: Option<i64>,
    /// Q.850 cause code (`hangup_cause_q850`).
    pub q850: Option<i64>,
    /// Caller's first ringing or early media, µs (FreeSWITCH's clock).
    pub caller_progress: Option<i64>,
    /// Caller create → hangup, s.
    pub duration_s: Option<f64>,
    /// Caller answer → hangup (billable time), s; 0 when never answered.
    pub billsec_s: Option<f64>,
}

/// Columns written per row.
const COLUMNS: usize = 34;

macro_rules! columns {
    () => {
        "call_id, node, app, hangup_cause, failed, caller_uuid, caller_num, callee_num, caller_create, caller_answer, caller_req_originate, caller_originate, caller_hangup, job_launch, callee_node, callee_uuid, callee_create, callee_answer, callee_hangup, active_sessions, erlangs, originate_sent_agent, originate_done_agent, verdict, run_id, caller_name, context, codec, sip_call_id, sip_status, q850, caller_progress, duration_s, billsec_s"
    };
}

/// The CDR table's columns, in order (exports follow it).
pub const CDR_COLUMNS: &str = columns!();

/// Columns of a stored leg.
const LEG_COLUMNS: usize = 13;

macro_rules! leg_columns {
    () => {
        "uuid, call_id, node, direction, cid_num, dest, app, cause, created_us, originate_us, answered_us, hangup_us, details"
    };
}

/// One ended leg, as much of it as its call's CDR needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Leg {
    /// `Unique-ID`.
    pub uuid: String,
    /// The call it belongs to.
    pub call: String,
    /// Node id.
    pub node: String,
    /// `inbound` / `outbound`.
    pub direction: String,
    /// Caller id number.
    pub cid_num: String,
    /// Destination number.
    pub dest: String,
    /// `switchy_app`, if set.
    pub app: Option<String>,
    /// How it ended.
    pub cause: String,
    /// CHANNEL_CREATE, µs (0: unknown).
    pub created_us: u64,
    /// CHANNEL_ORIGINATE, µs.
    pub originate_us: u64,
    /// CHANNEL_ANSWER, µs.
    pub answered_us: u64,
    /// CHANNEL_HANGUP, µs.
    pub hangup_us: u64,
    /// What else its CDR reports.
    pub details: LegDetails,
}

/// The Q.850 code of a FreeSWITCH hangup cause name (FreeSWITCH's own
/// table, `switch_channel_cause_q850`), for a call whose leg never
/// reported `hangup_cause_q850`.
pub fn q850_of(cause: &str) -> Option<u16> {
    Some(match cause {
        "UNALLOCATED_NUMBER" => 1,
        "NO_ROUTE_TRANSIT_NET" => 2,
        "NO_ROUTE_DESTINATION" => 3,
        "CHANNEL_UNACCEPTABLE" => 6,
        "NORMAL_CLEARING" => 16,
        "USER_BUSY" => 17,
        "NO_USER_RESPONSE" => 18,
        "NO_ANSWER" => 19,
        "SUBSCRIBER_ABSENT" => 20,
        "CALL_REJECTED" => 21,
        "NUMBER_CHANGED" => 22,
        "DESTINATION_OUT_OF_ORDER" => 27,
        "INVALID_NUMBER_FORMAT" => 28,
        "FACILITY_REJECTED" => 29,
        "NORMAL_UNSPECIFIED" => 31,
        "NORMAL_CIRCUIT_CONGESTION" => 34,
        "NETWORK_OUT_OF_ORDER" => 38,
        "NORMAL_TEMPORARY_FAILURE" => 41,
        "SWITCH_CONGESTION" => 42,
        "REQUESTED_CHAN_UNAVAIL" => 44,
        "BEARERCAPABILITY_NOTAVAIL" => 58,
        "SERVICE_UNAVAILABLE" => 63,
        "BEARERCAPABILITY_NOTIMPL" => 65,
        "FACILITY_NOT_IMPLEMENTED" => 69,
        "SERVICE_NOT_IMPLEMENTED" => 79,
        "INCOMPATIBLE_DESTINATION" => 88,
        "RECOVERY_ON_TIMER_EXPIRE" => 102,
        "ORIGINATOR_CANCEL" => 487,
        "MANDATORY_IE_MISSING" => 96,
        "PROTOCOL_ERROR" => 111,
        "INTERWORKING" => 127,
        _ => return None,
    })
}

/// A leg's CDR details beyond its times (stored as JSON with a pending
/// leg).
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct LegDetails {
    /// `Caller-Caller-ID-Name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_name: Option<String>,
    /// `Caller-Context`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// `read_codec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
    /// `sip_call_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_call_id: Option<String>,
    /// Final SIP status (200 when answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_status: Option<u16>,
    /// `hangup_cause_q850`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q850: Option<u16>,
    /// First ringing or early media, µs (0: none).
    #[serde(default)]
    pub progress_us: u64,
    /// `switchy_originator`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

impl LegDetails {
    /// From a finished session's last events.
    pub fn of(s: &crate::tracker::Session) -> LegDetails {
        let text = |v: Option<&str>| v.filter(|v| !v.is_empty()).map(str::to_owned);
        let num = |v: Option<&str>| {
            v.and_then(|v| v.trim().parse::<u16>().ok())
                .filter(|n| *n > 0)
        };
        let us = |h: &str| s.header(h).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let progress = [
            us("Caller-Channel-Progress-Time"),
            us("Caller-Channel-Progress-Media-Time"),
        ]
        .into_iter()
        .filter(|t| *t > 0)
        .min()
        .unwrap_or(0);
        let sip_status = if s.answered_us > 0 {
            Some(200)
        } else {
            num(s.variable("sip_term_status"))
                .or_else(|| num(s.variable("sip_invite_failure_status")))
        };
        LegDetails {
            caller_name: text(s.header("Caller-Caller-ID-Name")),
            context: text(s.header("Caller-Context")),
            codec: text(s.variable("read_codec")),
            sip_call_id: text(s.variable("sip_call_id")),
            sip_status,
            q850: num(s.variable("hangup_cause_q850"))
                .or_else(|| s.hangup_cause.as_deref().and_then(q850_of)),
            progress_us: progress,
            run_id: text(s.variable("switchy_originator")),
        }
    }
}

impl From<&Finished> for Leg {
    fn from(f: &Finished) -> Leg {
        let s = &f.session;
        Leg {
            uuid: s.uuid.clone(),
            call: s.call.clone(),
            node: s.node.clone(),
            direction: s.direction.clone(),
            cid_num: s.cid_num.clone(),
            dest: s.dest.clone(),
            app: s.variable("switchy_app").map(str::to_owned),
            cause: f.cause.clone(),
            created_us: s.created_us,
            originate_us: s.originate_us,
            answered_us: s.answered_us,
            hangup_us: s.hangup_us,
            details: LegDetails::of(s),
        }
    }
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
    /// As [`CdrStore::connect`], for commands that only read CDRs: a
    /// SQLite file that does not exist is an error, not created empty.
    pub async fn open_existing(url: &str) -> Result<CdrStore, crate::CdrError> {
        if let Some(rest) = url.strip_prefix("sqlite:")
            && !url.contains("memory")
        {
            let path = rest.trim_start_matches("//");
            let path = path.split('?').next().unwrap_or(path);
            if !std::path::Path::new(path).exists() {
                return Err(crate::CdrError::Missing(path.to_owned()));
            }
        }
        Self::connect(url).await
    }

    /// Connects (`sqlite://file.db`, `sqlite::memory:`, `postgres://…`),
    /// creates the SQLite file if missing, enables WAL, and runs the
    /// embedded migrations.
    pub async fn connect(url: &str) -> Result<CdrStore, crate::CdrError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        if !sqlite && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(crate::CdrError::Url(elide(url)));
        }
        let full = if sqlite && !url.contains("memory") && !url.contains("mode=") {
            format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
        } else {
            url.to_owned()
        };
        let opts = AnyPoolOptions::new()
            .max_connections(if sqlite { 1 } else { 8 })
            // An unreachable server is reported within seconds, not after
            // a long silence.
            .acquire_timeout(Duration::from_secs(if sqlite { 10 } else { 5 }));
        if !sqlite {
            tracing::info!(db = %elide(url), "connecting to PostgreSQL (up to 5 s)");
        }
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
        let pool = opts
            .connect(&full)
            .await
            .map_err(|source| crate::CdrError::Open {
                url: elide(url),
                source,
                hint: if sqlite {
                    "check --db: sqlite://switchy.db needs a writable directory"
                } else {
                    "check --db: is PostgreSQL running and reachable at that host and port, and do the URL's user, password and database exist?"
                },
            })?;
        let m = if sqlite {
            sqlx::migrate!("./migrations/sqlite")
        } else {
            sqlx::migrate!("./migrations/postgres")
        };
        m.run(&pool)
            .await
            .map_err(|source| crate::CdrError::Migrate {
                url: elide(url),
                source,
            })?;
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
        Ok(self.commit(rows, &[]).await?.inserted)
    }

    /// In one transaction: stores `legs` (ended legs of calls still up),
    /// inserts `rows` as [`CdrStore::insert`] does, completes a stored CDR
    /// that a row brings a missing leg of ([`merge_cdr`]), and deletes the
    /// stored legs of the calls those rows close.
    pub async fn commit(&self, rows: &[Cdr], legs: &[Leg]) -> Result<Committed, sqlx::Error> {
        if !self.insert_delay.is_zero() {
            tokio::time::sleep(self.insert_delay * rows.len() as u32).await;
        }
        let mut tx = self.pool.begin().await?;
        for chunk in legs.chunks(500) {
            let mut sql = String::with_capacity(64 + chunk.len() * 80);
            sql.push_str(concat!(
                "INSERT INTO cdr_leg (",
                leg_columns!(),
                ") VALUES "
            ));
            self.placeholders(&mut sql, chunk.len(), LEG_COLUMNS);
            sql.push_str(" ON CONFLICT (uuid) DO NOTHING");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for l in chunk {
                q = q
                    .bind(l.uuid.clone())
                    .bind(l.call.clone())
                    .bind(l.node.clone())
                    .bind(l.direction.clone())
                    .bind(l.cid_num.clone())
                    .bind(l.dest.clone())
                    .bind(l.app.clone())
                    .bind(l.cause.clone())
                    .bind(l.created_us as i64)
                    .bind(l.originate_us as i64)
                    .bind(l.answered_us as i64)
                    .bind(l.hangup_us as i64)
                    .bind(serde_json::to_string(&l.details).unwrap_or_default());
            }
            q.execute(&mut *tx).await?;
        }
        let mut inserted = 0;
        let mut merged = 0;
        for chunk in rows.chunks(500) {
            let mut sql = String::with_capacity(64 + chunk.len() * 160);
            sql.push_str(concat!("INSERT INTO cdr (", columns!(), ") VALUES "));
            self.placeholders(&mut sql, chunk.len(), COLUMNS);
            sql.push_str(" ON CONFLICT (call_id) DO NOTHING");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for c in chunk {
                q = bind_row(q, c);
            }
            let n = q.execute(&mut *tx).await?.rows_affected();
            inserted += n;
            if (n as usize) < chunk.len() {
                // Some calls have a CDR already: built from events re-sent
                // after a restart (the same row), or from the legs one node
                // re-sent before another node's (a part of the call).
                for c in chunk {
                    let sql = concat!("SELECT ", columns!(), " FROM cdr WHERE call_id = ?");
                    let sql = if self.sqlite {
                        sql.to_owned()
                    } else {
                        sql.replace('?', "$1")
                    };
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(c.call_id.clone())
                        .fetch_one(&mut *tx)
                        .await?;
                    let old = decode_row(&row)?;
                    if old == *c {
                        continue;
                    }
                    if let Some(m) = merge_cdr(&old, c) {
                        let mut sql = String::from("UPDATE cdr SET ");
                        for (i, col) in columns!().split(", ").enumerate() {
                            if i > 0 {
                                sql.push_str(", ");
                            }
                            if self.sqlite {
                                sql.push_str(&format!("{col} = ?"));
                            } else {
                                sql.push_str(&format!("{col} = ${}", i + 1));
                            }
                        }
                        if self.sqlite {
                            sql.push_str(" WHERE call_id = ?");
                        } else {
                            sql.push_str(&format!(" WHERE call_id = ${}", COLUMNS + 1));
                        }
                        bind_row(sqlx::query(sqlx::AssertSqlSafe(sql)), &m)
                            .bind(c.call_id.clone())
                            .execute(&mut *tx)
                            .await?;
                        merged += 1;
                    }
                }
            }
            // The legs kept for these calls are in their CDRs now.
            let mut sql = String::from("DELETE FROM cdr_leg WHERE call_id IN ");
            self.placeholders(&mut sql, 1, chunk.len());
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for c in chunk {
                q = q.bind(c.call_id.clone());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(Committed { inserted, merged })
    }

    /// Appends `rows` tuples of `cols` placeholders: `(?,?),(?,?)` for
    /// SQLite, `($1,$2),($3,$4)` for PostgreSQL (the Any QueryBuilder
    /// writes `?`, which PostgreSQL refuses; SQLite reads `$N` as named
    /// parameters and looks each one up by name).
    fn placeholders(&self, sql: &mut String, rows: usize, cols: usize) {
        use std::fmt::Write;
        for r in 0..rows {
            sql.push_str(if r == 0 { "(" } else { ",(" });
            for c in 0..cols {
                if c > 0 {
                    sql.push(',');
                }
                if self.sqlite {
                    sql.push('?');
                } else {
                    let _ = write!(sql, "${}", r * cols + c + 1);
                }
            }
            sql.push(')');
        }
    }

    /// The stored legs of calls still waiting for their last leg (after
    /// dropping those whose call has a CDR already).
    pub async fn pending_legs(&self) -> Result<Vec<Leg>, sqlx::Error> {
        sqlx::query("DELETE FROM cdr_leg WHERE call_id IN (SELECT call_id FROM cdr)")
            .execute(&self.pool)
            .await?;
        let rows = sqlx::query(concat!("SELECT ", leg_columns!(), " FROM cdr_leg"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let us = |i: usize| r.try_get::<i64, _>(i).map(|v| v.max(0) as u64);
                Ok(Leg {
                    uuid: r.try_get(0)?,
                    call: r.try_get(1)?,
                    node: r.try_get(2)?,
                    direction: r.try_get(3)?,
                    cid_num: r.try_get(4)?,
                    dest: r.try_get(5)?,
                    app: r.try_get(6)?,
                    cause: r.try_get(7)?,
                    created_us: us(8)?,
                    originate_us: us(9)?,
                    answered_us: us(10)?,
                    hangup_us: us(11)?,
                    // Legs stored before the column existed have none.
                    details: r
                        .try_get::<Option<String>, _>(12)?
                        .and_then(|d| serde_json::from_str(&d).ok())
                        .unwrap_or_default(),
                })
            })
            .collect()
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
        rows.iter().map(decode_row).collect()
    }

    /// Records a run's parameters (`run` at start; a second call with
    /// the same id keeps the first).
    pub async fn record_run(
        &self,
        run_id: &str,
        started_us: i64,
        params: &serde_json::Value,
    ) -> Result<(), sqlx::Error> {
        let sql = if self.sqlite {
            "INSERT INTO run (run_id, started_us, params) VALUES (?, ?, ?) ON CONFLICT (run_id) DO NOTHING"
        } else {
            "INSERT INTO run (run_id, started_us, params) VALUES ($1, $2, $3) ON CONFLICT (run_id) DO NOTHING"
        };
        sqlx::query(sql)
            .bind(run_id.to_owned())
            .bind(started_us)
            .bind(params.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The runs the CDRs name, oldest first: (run id, "" for CDRs with
    /// none; first call µs; calls; recorded parameters).
    pub async fn runs(&self) -> Result<Vec<StoredRun>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT COALESCE(c.run_id, ''), MIN(COALESCE(c.caller_req_originate, c.caller_create)), COUNT(*), MAX(r.params), MAX(r.started_us) \
             FROM cdr c LEFT JOIN run r ON r.run_id = c.run_id GROUP BY COALESCE(c.run_id, '') ORDER BY 2",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredRun {
                    run_id: r.try_get(0)?,
                    first_us: r.try_get::<Option<i64>, _>(1)?,
                    calls: r.try_get(2)?,
                    params: r
                        .try_get::<Option<String>, _>(3)?
                        .and_then(|p| serde_json::from_str(&p).ok()),
                    started_us: r.try_get::<Option<i64>, _>(4)?,
                })
            })
            .collect()
    }

    /// The CDRs of one run (`""`: those with no run id), oldest first.
    pub async fn of_run(&self, run_id: &str) -> Result<Vec<Cdr>, sqlx::Error> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM cdr WHERE COALESCE(run_id, '') = ? ORDER BY COALESCE(caller_req_originate, caller_create), id"
        );
        let sql = if self.sqlite {
            sql.to_owned()
        } else {
            sql.replace('?', "$1")
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(run_id.to_owned())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_row).collect()
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

/// A run as the store knows it ([`CdrStore::runs`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRun {
    /// Run id; empty for CDRs that name none.
    pub run_id: String,
    /// Its first call's launch (or create), µs.
    pub first_us: Option<i64>,
    /// CDRs.
    pub calls: i64,
    /// The parameters `run` recorded, if it did.
    pub params: Option<serde_json::Value>,
    /// When it started, µs, if recorded.
    pub started_us: Option<i64>,
}

/// What one [`CdrStore::commit`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// New rows.
    pub inserted: u64,
    /// Stored rows completed with a leg they lacked.
    pub merged: u64,
}

fn bind_row<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    c: &Cdr,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    q.bind(c.call_id.clone())
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
        .bind(c.verdict.clone())
        .bind(c.run_id.clone())
        .bind(c.caller_name.clone())
        .bind(c.context.clone())
        .bind(c.codec.clone())
        .bind(c.sip_call_id.clone())
        .bind(c.sip_status)
        .bind(c.q850)
        .bind(c.caller_progress)
        .bind(c.duration_s)
        .bind(c.billsec_s)
}

fn decode_row(r: &sqlx::any::AnyRow) -> Result<Cdr, sqlx::Error> {
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
        run_id: r.try_get(24)?,
        caller_name: r.try_get(25)?,
        context: r.try_get(26)?,
        codec: r.try_get(27)?,
        sip_call_id: r.try_get(28)?,
        sip_status: r.try_get(29)?,
        q850: r.try_get(30)?,
        caller_progress: r.try_get(31)?,
        duration_s: r.try_get(32)?,
        billsec_s: r.try_get(33)?,
    })
}

/// One leg as a CDR row holds it.
#[derive(Clone)]
struct RowLeg {
    uuid: String,
    node: String,
    create: Option<i64>,
    answer: Option<i64>,
    hangup: Option<i64>,
}

fn row_legs(c: &Cdr) -> Vec<RowLeg> {
    let mut v = Vec::with_capacity(2);
    if let Some(u) = &c.caller_uuid {
        v.push(RowLeg {
            uuid: u.clone(),
            node: c.node.clone(),
            create: c.caller_create,
            answer: c.caller_answer,
            hangup: c.caller_hangup,
        });
    }
    if let Some(u) = &c.callee_uuid {
        v.push(RowLeg {
            uuid: u.clone(),
            node: c.callee_node.clone().unwrap_or_default(),
            create: c.callee_create,
            answer: c.callee_answer,
            hangup: c.callee_hangup,
        });
    }
    v
}

/// The CDR of one call from two rows built from different legs of it
/// (each node re-sent its legs' events after a controller restart, and the
/// tracker saw one node's before the other's); None when `new` adds no
/// leg to `old`. The caller is the leg the Originator launched (it has
/// launch times or a CHANNEL_ORIGINATE), else the one created first.
pub fn merge_cdr(old: &Cdr, new: &Cdr) -> Option<Cdr> {
    let have = row_legs(old);
    let extra: Vec<RowLeg> = row_legs(new)
        .into_iter()
        .filter(|l| !have.iter().any(|h| h.uuid == l.uuid))
        .collect();
    if extra.is_empty() || have.len() >= 2 {
        return None;
    }
    let launched = |c: &Cdr| {
        c.caller_req_originate.is_some() || c.job_launch.is_some() || c.caller_originate.is_some()
    };
    // Which row's caller is the call's caller.
    let new_leads = match (launched(old), launched(new)) {
        (true, false) => false,
        (false, true) => true,
        _ => match (old.caller_create, new.caller_create) {
            (Some(a), Some(b)) => b < a,
            _ => false,
        },
    };
    let (base, other) = if new_leads { (new, old) } else { (old, new) };
    let base_caller = base.caller_uuid.clone();
    let callee = row_legs(old)
        .into_iter()
        .chain(row_legs(new))
        .filter(|l| Some(&l.uuid) != base_caller.as_ref())
        .min_by_key(|l| l.create.unwrap_or(i64::MAX));
    let mut m = base.clone();
    if let Some(c) = callee {
        m.callee_uuid = Some(c.uuid);
        m.callee_node = Some(c.node);
        m.callee_create = c.create;
        m.callee_answer = c.answer;
        m.callee_hangup = c.hangup;
    }
    m.app = base.app.clone().or_else(|| other.app.clone());
    m.caller_num = base.caller_num.clone().or_else(|| other.caller_num.clone());
    m.callee_num = base.callee_num.clone().or_else(|| other.callee_num.clone());
    m.caller_req_originate = base.caller_req_originate.or(other.caller_req_originate);
    m.job_launch = base.job_launch.or(other.job_launch);
    m.originate_sent_agent = base.originate_sent_agent.or(other.originate_sent_agent);
    m.originate_done_agent = base.originate_done_agent.or(other.originate_done_agent);
    if m.active_sessions == 0 {
        m.active_sessions = other.active_sessions;
    }
    if m.erlangs == 0.0 {
        m.erlangs = other.erlangs;
    }
    m.verdict = base.verdict.clone().or_else(|| other.verdict.clone());
    m.run_id = base.run_id.clone().or_else(|| other.run_id.clone());
    m.caller_name = base
        .caller_name
        .clone()
        .or_else(|| other.caller_name.clone());
    m.codec = base.codec.clone().or_else(|| other.codec.clone());
    m.sip_call_id = base
        .sip_call_id
        .clone()
        .or_else(|| other.sip_call_id.clone());
    // The inbound leg's context is the call's: the callee's when the
    // caller was originated.
    m.context = if base.caller_req_originate.is_some() || base.caller_originate.is_some() {
        other.context.clone().or_else(|| base.context.clone())
    } else {
        base.context.clone().or_else(|| other.context.clone())
    };
    let answered = m.caller_answer.is_some() || m.callee_answer.is_some();
    let verdict_failed = m.verdict.as_deref().is_some_and(|v| v != "passed");
    m.failed = !answered || verdict_failed;
    Some(m)
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
    /// Transactions that failed and were tried again.
    pub retries: AtomicU64,
    /// Stored CDRs completed with a leg that came later (re-sent by
    /// another node after a controller restart).
    pub merged: AtomicU64,
    /// Rows handed to the writer by outcome (`/metrics`).
    pub outcomes: Mutex<BTreeMap<Outcome, OutcomeTotals>>,
}

/// What a call's CDR says about how it went, for `/metrics`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Outcome {
    /// Caller's node.
    pub node: String,
    /// Final SIP status (`none`).
    pub sip_status: String,
    /// Hangup cause.
    pub cause: String,
}

/// Totals of one [`Outcome`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OutcomeTotals {
    /// Calls.
    pub calls: u64,
    /// Of them answered.
    pub answered: u64,
    /// Their billable seconds.
    pub billsec: f64,
}

impl CdrCounters {
    /// Counts a row handed to the writer.
    pub fn count(&self, c: &Cdr) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        let key = Outcome {
            node: c.node.clone(),
            sip_status: c.sip_status.map_or("none".into(), |s| s.to_string()),
            cause: c.hangup_cause.clone(),
        };
        let mut m = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
        let t = m.entry(key).or_default();
        t.calls += 1;
        if !c.failed {
            t.answered += 1;
            t.billsec += c.billsec_s.unwrap_or(0.0);
        }
    }
}

/// Builds CDRs from the cluster's finished sessions and writes them in
/// batches.
pub struct CdrWriter {
    tx: Option<mpsc::Sender<Item>>,
    /// Counters.
    pub counters: Arc<CdrCounters>,
    writer: Option<tokio::task::JoinHandle<()>>,
    builder: tokio::task::JoinHandle<()>,
    /// Tells the builder to take what is queued and stop.
    drain: Option<tokio::sync::oneshot::Sender<()>>,
    /// Set by [`CdrWriter::close`]: a failing store is no longer retried
    /// without end.
    closing: Arc<AtomicBool>,
}

/// Rows queued for the store before the builder waits for it (and so the
/// cluster, and the agents, wait too); as many finished legs are queued
/// for the builder.
pub const WRITER_QUEUE: usize = 8192;

fn opt(v: u64) -> Option<i64> {
    (v > 0).then_some(v as i64)
}

/// Turns the legs of one call into its CDR.
pub fn build_cdr(legs: &[Leg], launch: Option<&Launch>) -> Option<Cdr> {
    // The caller is the outbound leg created first (the originated one);
    // for inbound calls, the first leg.
    let caller = legs
        .iter()
        .filter(|l| l.direction == "outbound")
        .min_by_key(|l| l.created_us)
        .or_else(|| legs.iter().min_by_key(|l| l.created_us))?;
    let callee = legs
        .iter()
        .filter(|l| l.uuid != caller.uuid)
        .min_by_key(|l| l.created_us);
    let app = launch
        .and_then(|l| l.app.clone())
        .or_else(|| caller.app.clone());
    let answered = caller.answered_us > 0 || callee.is_some_and(|c| c.answered_us > 0);
    let d = &caller.details;
    let inbound = legs
        .iter()
        .filter(|l| l.direction == "inbound")
        .min_by_key(|l| l.created_us);
    let secs = |a: u64, b: u64| (a > 0 && b >= a).then(|| (b - a) as f64 / 1e6);
    Some(Cdr {
        call_id: caller.call.clone(),
        node: caller.node.clone(),
        app,
        hangup_cause: caller.cause.clone(),
        failed: !answered,
        caller_uuid: Some(caller.uuid.clone()),
        caller_num: (!caller.cid_num.is_empty()).then(|| caller.cid_num.clone()),
        callee_num: (!caller.dest.is_empty()).then(|| caller.dest.clone()),
        caller_create: opt(caller.created_us),
        caller_answer: opt(caller.answered_us),
        caller_req_originate: launch.map(|l| l.req_us),
        caller_originate: opt(caller.originate_us),
        caller_hangup: opt(caller.hangup_us),
        job_launch: launch.and_then(|l| l.job_us),
        callee_node: callee.map(|c| c.node.clone()),
        callee_uuid: callee.map(|c| c.uuid.clone()),
        callee_create: callee.and_then(|c| opt(c.created_us)),
        callee_answer: callee.and_then(|c| opt(c.answered_us)),
        callee_hangup: callee.and_then(|c| opt(c.hangup_us)),
        active_sessions: launch.map_or(0, |l| l.active_sessions),
        erlangs: launch.map_or(0.0, |l| l.erlangs),
        originate_sent_agent: launch.and_then(|l| l.sent_agent_us),
        originate_done_agent: launch.and_then(|l| l.done_agent_us),
        verdict: None,
        run_id: d
            .run_id
            .clone()
            .or_else(|| callee.and_then(|c| c.details.run_id.clone())),
        caller_name: d.caller_name.clone(),
        context: inbound
            .and_then(|l| l.details.context.clone())
            .or_else(|| d.context.clone()),
        codec: d.codec.clone(),
        sip_call_id: d.sip_call_id.clone(),
        sip_status: d.sip_status.map(i64::from),
        q850: d.q850.map(i64::from),
        caller_progress: opt(d.progress_us),
        duration_s: secs(caller.created_us, caller.hangup_us),
        billsec_s: if caller.answered_us > 0 {
            secs(caller.answered_us, caller.hangup_us)
        } else {
            caller.hangup_us.gt(&0).then_some(0.0)
        },
    })
}

/// What the builder hands the writer, in the pipeline's order.
#[derive(Debug)]
enum Item {
    /// A call's CDR (boxed, as the leg: queue slots stay small).
    Row(Box<Cdr>),
    /// A leg that ended while its call goes on.
    Leg(Box<Leg>),
    /// Everything the pipeline published up to this mark is above.
    Mark(u64),
}

/// Where the Originator sends the CDR of a call that never got a channel.
#[derive(Clone)]
pub struct CdrSink {
    tx: mpsc::Sender<Item>,
    counters: Arc<CdrCounters>,
}

impl CdrSink {
    /// Queues a row, waiting while the store is behind.
    pub async fn push(&self, c: Cdr) {
        self.counters.count(&c);
        if self.tx.send(Item::Row(Box::new(c))).await.is_err() {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("CDR writer already closed: a failed call's CDR was not stored");
        }
    }
}

/// Items the writer commits in one transaction at most.
const BATCH: usize = 4096;

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
    ///
    /// The writer is the cluster's durable consumer: an agent's events are
    /// acknowledged only once the CDRs and ended legs they produced are
    /// committed, so a controller killed at any moment loses none (the
    /// agents re-send the rest to the next one, which first reloads the
    /// stored legs of calls still up).
    pub fn start_with_queue(
        cluster: &Cluster,
        store: CdrStore,
        launches: Launches,
        queue: usize,
    ) -> CdrWriter {
        let counters = Arc::new(CdrCounters::default());
        let closing = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = mpsc::channel::<Item>(queue.max(1));
        cluster.set_cdr_counters(counters.clone());
        let (mut events, durability) = cluster.subscribe_durable("cdr", Feed::Ends, queue);
        let c2 = counters.clone();
        let store2 = store.clone();
        let closing2 = closing.clone();
        let writer = tokio::spawn(async move {
            let mut batch = Batch::default();
            while let Some(first) = rx.recv().await {
                batch.take(first);
                while batch.items < BATCH {
                    match rx.try_recv() {
                        Ok(i) => batch.take(i),
                        Err(_) => break,
                    }
                }
                let wrote = batch.write(&store2, &c2, &closing2).await;
                if let Some(m) = batch.mark.take() {
                    durability.advance(m);
                }
                // Let a burst accumulate into the next transaction.
                if wrote && rx.is_empty() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            batch.write(&store2, &c2, &closing2).await;
            if let Some(m) = batch.mark.take() {
                durability.advance(m);
            }
        });
        let cluster2 = cluster.clone();
        let tx2 = tx.clone();
        let c3 = counters.clone();
        let (drain, mut drain_rx) = tokio::sync::oneshot::channel::<()>();
        let builder = tokio::spawn(async move {
            // Ended legs of calls still up, by call (reloaded from the store:
            // they were committed before a previous controller stopped).
            let mut pending: HashMap<String, Vec<Leg>> = HashMap::new();
            match store.pending_legs().await {
                Ok(legs) => {
                    for l in legs {
                        pending.entry(l.call.clone()).or_default().push(l);
                    }
                    if !pending.is_empty() {
                        tracing::info!(
                            calls = pending.len(),
                            "reloaded the ended legs of calls still up"
                        );
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not reload the stored legs of calls still up: their CDRs lack those legs")
                }
            }
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
                let item = match ev {
                    ClusterEvent::Mark(m) => Item::Mark(m),
                    ClusterEvent::Finished(f) => {
                        let leg = Leg::from(&*f);
                        let call = leg.call.clone();
                        let legs = pending.entry(call.clone()).or_default();
                        // A leg seen again (events re-sent after a restart)
                        // counts once.
                        let fresh = !legs.iter().any(|l| l.uuid == leg.uuid);
                        if fresh {
                            legs.push(leg.clone());
                        }
                        if !f.call_ended {
                            if !fresh {
                                continue;
                            }
                            Item::Leg(Box::new(leg))
                        } else {
                            let legs = pending.remove(&call).unwrap_or_default();
                            let launch = launches
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&call);
                            let Some(mut cdr) = build_cdr(&legs, launch.as_ref()) else {
                                continue;
                            };
                            if let Some(v) = cluster2.take_verdict(&call) {
                                cdr.failed |= !v.passed();
                                cdr.verdict = Some(v.to_string());
                            }
                            c3.count(&cdr);
                            Item::Row(Box::new(cdr))
                        }
                    }
                    ClusterEvent::Event(..) => continue,
                };
                let row = matches!(item, Item::Row(_));
                if tx2.send(item).await.is_err() {
                    if row {
                        c3.queued.fetch_sub(1, Ordering::Relaxed);
                    }
                    tracing::error!("CDR writer gone: CDRs are no longer stored");
                    break;
                }
            }
        });
        CdrWriter {
            tx: Some(tx),
            counters,
            writer: Some(writer),
            builder,
            drain: Some(drain),
            closing,
        }
    }

    /// Stops as a killed process would (tests of crash recovery): what is
    /// queued and not committed is lost here, and, because it was never
    /// acknowledged, re-sent by the agents to the next controller.
    pub fn crash(mut self) {
        self.builder.abort();
        if let Some(w) = self.writer.take() {
            w.abort();
        }
    }

    /// Rows queued but not yet committed.
    pub fn pending(&self) -> u64 {
        let c = &self.counters;
        c.queued.load(Ordering::Relaxed).saturating_sub(
            c.written.load(Ordering::Relaxed)
                + c.failed.load(Ordering::Relaxed)
                + c.duplicates.load(Ordering::Relaxed)
                + c.merged.load(Ordering::Relaxed),
        )
    }

    /// Stops building and flushes every queued row; returns rows written.
    /// Sinks handed out must be dropped first (the Originator's are, when
    /// it is dropped).
    pub async fn close(mut self) -> u64 {
        self.closing.store(true, Ordering::SeqCst);
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

/// What the writer commits next.
#[derive(Default)]
struct Batch {
    rows: Vec<Cdr>,
    legs: Vec<Leg>,
    mark: Option<u64>,
    items: usize,
}

impl Batch {
    fn take(&mut self, item: Item) {
        self.items += 1;
        match item {
            Item::Row(r) => self.rows.push(*r),
            Item::Leg(l) => self.legs.push(*l),
            Item::Mark(m) => self.mark = Some(m),
        }
    }

    /// Commits rows and legs; true if there were any. While the writer
    /// runs a failing store is retried without end (the cluster waits,
    /// its events stay unacknowledged in the agents); once closing, five
    /// attempts, then the rows go to the log.
    async fn write(&mut self, store: &CdrStore, c: &CdrCounters, closing: &AtomicBool) -> bool {
        self.items = 0;
        if self.rows.is_empty() && self.legs.is_empty() {
            return false;
        }
        let mut attempt = 0u32;
        loop {
            match store.commit(&self.rows, &self.legs).await {
                Ok(done) => {
                    let n = done.inserted;
                    c.written.fetch_add(n, Ordering::Relaxed);
                    if done.merged > 0 {
                        c.merged.fetch_add(done.merged, Ordering::Relaxed);
                        tracing::info!(
                            rows = done.merged,
                            "CDRs completed with a leg re-sent by another node"
                        );
                    }
                    let dup =
                        self.rows.len() as u64 - (n + done.merged).min(self.rows.len() as u64);
                    if dup > 0 {
                        c.duplicates.fetch_add(dup, Ordering::Relaxed);
                        tracing::info!(rows = dup, "CDRs skipped: their calls already have one");
                    }
                    self.rows.clear();
                    self.legs.clear();
                    return true;
                }
                Err(e) if !closing.load(Ordering::SeqCst) || attempt < 5 => {
                    c.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, rows = self.rows.len(), legs = self.legs.len(), attempt, "CDR batch not written to {}; retrying (the cluster waits meanwhile)", store.url);
                    tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
                    attempt += 1;
                }
                Err(e) => {
                    c.failed
                        .fetch_add(self.rows.len() as u64, Ordering::Relaxed);
                    tracing::error!(error = %e, "CDR store {} failed while closing", store.url);
                    for row in self.rows.drain(..) {
                        tracing::error!(cdr = ?row, "CDR could not be written: kept in this log");
                    }
                    for leg in self.legs.drain(..) {
                        tracing::error!(leg = ?leg, "ended leg could not be written: kept in this log");
                    }
                    return true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::Session;

    fn finished(uuid: &str, direction: &str, created: u64, answered: u64, ended: bool) -> Finished {
        Finished {
            session: Session {
                uuid: uuid.into(),
                node: "fs1".into(),
                direction: direction.into(),
                call: "call-1".into(),
                created_us: created,
                answered_us: answered,
                hangup_us: created + 1_000,
                ..Default::default()
            },
            cause: "NORMAL_CLEARING".into(),
            call_ended: ended,
        }
    }

    /// A controller that died with a call half ended comes back with its
    /// ended leg: the next one builds the call's CDR from both legs.
    #[tokio::test]
    async fn an_ended_leg_survives_a_restart_of_the_writer() {
        let path = std::env::temp_dir().join(format!("switchy-legs-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let url = format!("sqlite://{}", path.display());
        let store = CdrStore::connect(&url).await.unwrap();
        let cluster = Cluster::new(Default::default());
        // First life: the caller leg ends, the callee is still up.
        let w = CdrWriter::start(&cluster, store.clone(), Launches::default());
        cluster
            .close_out(|_| vec![finished("A", "outbound", 100, 200, false)])
            .await;
        let mark = cluster.pipeline().position();
        tokio::time::timeout(
            Duration::from_secs(10),
            cluster.pipeline().wait_durable(mark),
        )
        .await
        .expect("the leg was not committed");
        w.crash();
        assert_eq!(store.pending_legs().await.unwrap().len(), 1);
        assert_eq!(store.count().await.unwrap(), 0);
        // Second life: the callee ends.
        let cluster = Cluster::new(Default::default());
        let w = CdrWriter::start(&cluster, store.clone(), Launches::default());
        cluster
            .close_out(|_| vec![finished("B", "inbound", 150, 210, true)])
            .await;
        w.close().await;
        let rows = store.all().await.unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        let r = &rows[0];
        assert_eq!(
            (r.caller_uuid.as_deref(), r.callee_uuid.as_deref(), r.failed),
            (Some("A"), Some("B"), false)
        );
        assert!(store.pending_legs().await.unwrap().is_empty());
        store.close().await;
        let _ = std::fs::remove_file(&path);
    }
}

//! `run --stats-file FILE --stats-every 1s`: a CSV row per interval with
//! interval and cumulative columns, as SIPp's `-trace_stat` writes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;
use switchy_controller::cdr_stats;
use switchy_controller::originator::Status;

/// The header row.
pub const HEADER: &str = "time_utc,elapsed_s,rate_target,rate_now,offered_int,offered_cum,answered_int,answered_cum,failed_int,failed_cum,live,limit,setup_p50_ms,setup_p99_ms,asr_int_pct,asr_cum_pct,ner_int_pct,ner_cum_pct,failures_cum";

/// The open file and what the previous row counted.
pub struct StatsFile {
    out: std::io::BufWriter<std::fs::File>,
    offered: u64,
    answered: u64,
    failed: u64,
    failures: BTreeMap<String, u64>,
}

fn pct(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v:.2}"))
}

impl StatsFile {
    /// Creates (truncates) `path` and writes the header.
    pub fn create(path: &Path) -> anyhow::Result<StatsFile> {
        let f = std::fs::File::create(path).map_err(|e| {
            anyhow::anyhow!("--stats-file {}: cannot create it: {e}", path.display())
        })?;
        let mut out = std::io::BufWriter::new(f);
        writeln!(out, "{HEADER}")?;
        Ok(StatsFile {
            out,
            offered: 0,
            answered: 0,
            failed: 0,
            failures: BTreeMap::new(),
        })
    }

    /// One row for the interval since the last one.
    pub fn row(&mut self, s: &Status, at: SystemTime) -> std::io::Result<()> {
        let line = self.line(s, at);
        writeln!(self.out, "{line}")?;
        self.out.flush()
    }

    fn line(&mut self, s: &Status, at: SystemTime) -> String {
        let d = |now: u64, before: u64| now.saturating_sub(before);
        let (oi, ai, fi) = (
            d(s.offered, self.offered),
            d(s.answered, self.answered),
            d(s.failed, self.failed),
        );
        let interval: BTreeMap<String, u64> = s
            .failures
            .iter()
            .map(|(c, n)| (c.clone(), d(*n, self.failures.get(c).copied().unwrap_or(0))))
            .filter(|(_, n)| *n > 0)
            .collect();
        let ki = cdr_stats::live_kpis(ai, &interval);
        let kc = cdr_stats::live_kpis(s.answered, &s.failures);
        // Causes are FreeSWITCH's names (no comma or quote); one field.
        let failures = s
            .failures
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        let line = format!(
            "{},{:.3},{},{:.1},{oi},{},{ai},{},{fi},{},{},{},{:.3},{:.3},{},{},{},{},{}",
            humantime::format_rfc3339_millis(at),
            s.elapsed_s,
            s.config.rate,
            s.current_cps,
            s.offered,
            s.answered,
            s.failed,
            s.active,
            s.config.limit,
            s.setup_recent.p50_ms,
            s.setup_recent.p99_ms,
            pct(ki.asr_pct),
            pct(kc.asr_pct),
            pct(ki.ner_pct),
            pct(kc.ner_pct),
            failures.replace([',', '"', '\n'], "_"),
        );
        self.offered = s.offered;
        self.answered = s.answered;
        self.failed = s.failed;
        self.failures = s.failures.clone();
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_have_interval_and_cumulative_columns() {
        let path = std::env::temp_dir().join(format!("switchy-stats-{}.csv", std::process::id()));
        let mut f = StatsFile::create(&path).expect("create");
        let mut s = Status {
            offered: 10,
            answered: 9,
            failed: 1,
            ..Status::default()
        };
        s.failures.insert("USER_BUSY".into(), 1);
        s.config.rate = 10.0;
        f.row(&s, SystemTime::UNIX_EPOCH).expect("row");
        s.offered = 30;
        s.answered = 19;
        s.failed = 11;
        s.failures.insert("NO_ROUTE_DESTINATION".into(), 10);
        f.row(&s, SystemTime::UNIX_EPOCH).expect("row");
        let text = std::fs::read_to_string(&path).expect("read");
        let _ = std::fs::remove_file(&path);
        let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
        let cols = HEADER.split(',').count();
        assert!(rows.iter().all(|r| r.len() == cols), "{text}");
        let col = |r: usize, name: &str| {
            let i = HEADER.split(',').position(|h| h == name).expect("column");
            rows[r][i]
        };
        assert_eq!(col(1, "time_utc"), "1970-01-01T00:00:00.000Z");
        assert_eq!(col(2, "offered_int"), "20");
        assert_eq!(col(2, "offered_cum"), "30");
        assert_eq!(col(2, "answered_int"), "10");
        assert_eq!(col(2, "failed_int"), "10");
        // The interval: 10 answered of 20 ended; NER counts no busy one.
        assert_eq!(col(2, "asr_int_pct"), "50.00");
        assert_eq!(col(2, "ner_int_pct"), "50.00");
        // Cumulative: 19 of 30; the busy one counts for NER.
        assert_eq!(col(2, "asr_cum_pct"), "63.33");
        assert_eq!(col(2, "ner_cum_pct"), "66.67");
        assert_eq!(
            col(2, "failures_cum"),
            "NO_ROUTE_DESTINATION=10 USER_BUSY=1"
        );
    }
}

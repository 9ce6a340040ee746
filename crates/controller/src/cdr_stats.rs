//! Call metrics from CDRs (the seed's `call_metrics`): per-call latencies
//! and duration, call rate, concurrency (erlangs), failures, with
//! percentiles; plus per-second series for plots.

use crate::cdr::Cdr;
use serde::Serialize;
use std::collections::BTreeMap;

/// Percentiles of one latency, ms.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Pcts {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 95th.
    pub p95: f64,
    /// 99th.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

/// Percentiles of `v` (sorted in place).
pub fn pcts(v: &mut [f64]) -> Pcts {
    if v.is_empty() {
        return Pcts::default();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    Pcts {
        n: v.len(),
        p50: at(0.5),
        p90: at(0.9),
        p95: at(0.95),
        p99: at(0.99),
        max: v[v.len() - 1],
    }
}

/// The metrics of a set of CDRs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Calls.
    pub calls: usize,
    /// Answered calls.
    pub answered: usize,
    /// Failed calls.
    pub failed: usize,
    /// Failures by hangup cause.
    pub failures: BTreeMap<String, usize>,
    /// Calls by app.
    pub apps: BTreeMap<String, usize>,
    /// Offered calls / span of launch times, calls/s.
    pub achieved_rate: f64,
    /// Most calls up at once (from CDR intervals).
    pub max_erlangs: f64,
    /// Mean calls up over the run.
    pub mean_erlangs: f64,
    /// callee CHANNEL_ANSWER → caller CHANNEL_ANSWER, ms.
    pub answer_latency_ms: Pcts,
    /// caller CHANNEL_CREATE → caller CHANNEL_ANSWER, ms.
    pub call_setup_latency_ms: Pcts,
    /// caller CHANNEL_CREATE → callee CHANNEL_CREATE (the INVITE's trip), ms.
    pub invite_latency_ms: Pcts,
    /// Originator decision → caller CHANNEL_ORIGINATE, ms.
    pub originate_latency_ms: Pcts,
    /// caller answered → caller hung up (billable time), s, FreeSWITCH's
    /// clock.
    pub call_duration_s: Pcts,
    /// `bgapi originate` written → its BACKGROUND_JOB received (the caller
    /// leg answered), ms, on the agent's own clock (µs resolution): the
    /// setup latency free of FreeSWITCH's 20 ms event-clock steps.
    pub call_setup_agent_ms: Pcts,
    /// App verdicts by app: (passed, failed).
    pub verdicts: BTreeMap<String, (usize, usize)>,
    /// Failed verdicts whose call ended before the app's check finished.
    pub verdicts_cut_short: usize,
    /// The telecom KPIs over every call.
    pub kpis: Kpis,
    /// The same per node (the caller leg's).
    pub per_node: BTreeMap<String, Kpis>,
}

/// The figures a load test is judged by.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Kpis {
    /// Calls.
    pub calls: usize,
    /// Answered.
    pub answered: usize,
    /// Answer-seizure ratio, %.
    pub asr_pct: Option<f64>,
    /// Network effectiveness ratio (ITU-T E.411: user busy, no answer and
    /// rejects count as the network's success), %.
    pub ner_pct: Option<f64>,
    /// Average call duration (billable seconds of answered calls), s.
    pub acd_s: Option<f64>,
    /// Post-dial delay: caller created → first ringing or early media, ms
    /// (FreeSWITCH's clock).
    pub pdd_ms: Pcts,
    /// Calls by final SIP status (`none`: no SIP response).
    pub sip_status: BTreeMap<String, usize>,
    /// Calls by Q.850 cause code and name, `16 NORMAL_CLEARING`.
    pub q850: BTreeMap<String, usize>,
}

/// KPIs of `cdrs`.
pub fn kpis<'a>(cdrs: impl IntoIterator<Item = &'a Cdr>) -> Kpis {
    let mut k = Kpis::default();
    let (mut user, mut billsec, mut pdd) = (0usize, Vec::new(), Vec::new());
    for c in cdrs {
        k.calls += 1;
        if !c.failed {
            k.answered += 1;
            billsec.extend(c.billsec_s);
        } else if USER_CAUSES.contains(&c.hangup_cause.as_str()) {
            user += 1;
        }
        pdd.extend(ms(c.caller_create, c.caller_progress));
        let sip = c.sip_status.map_or("none".to_owned(), |s| s.to_string());
        *k.sip_status.entry(sip).or_default() += 1;
        let q = match c.q850 {
            Some(q) => format!("{q} {}", c.hangup_cause),
            None => format!("- {}", c.hangup_cause),
        };
        *k.q850.entry(q).or_default() += 1;
    }
    if k.calls > 0 {
        k.asr_pct = Some(100.0 * k.answered as f64 / k.calls as f64);
        k.ner_pct = Some(100.0 * (k.answered + user) as f64 / k.calls as f64);
    }
    if !billsec.is_empty() {
        k.acd_s = Some(billsec.iter().sum::<f64>() / billsec.len() as f64);
    }
    k.pdd_ms = pcts(&mut pdd);
    k
}

/// Hangup causes that are the called user's doing, not the network's:
/// ITU-T E.411's network effectiveness ratio (NER) counts them as the
/// network's success (busy, no answer, rejected by the user).
pub const USER_CAUSES: &[&str] = &[
    "USER_BUSY",
    "NO_USER_RESPONSE",
    "NO_ANSWER",
    "CALL_REJECTED",
];

/// The ratios a load test is judged by, from counters (the live panel).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LiveKpis {
    /// Answer-seizure ratio: answered / attempts, %.
    pub asr_pct: Option<f64>,
    /// Network effectiveness ratio: (answered + user-caused failures) /
    /// attempts, %.
    pub ner_pct: Option<f64>,
}

/// ASR and NER from the answered count and the failures by cause (`None`
/// before the first attempt ends).
pub fn live_kpis<N: Copy + Into<u64>>(answered: u64, failures: &BTreeMap<String, N>) -> LiveKpis {
    let failed: u64 = failures.values().map(|n| (*n).into()).sum();
    let user: u64 = failures
        .iter()
        .filter(|(c, _)| USER_CAUSES.contains(&c.as_str()))
        .map(|(_, n)| (*n).into())
        .sum();
    let attempts = answered + failed;
    if attempts == 0 {
        return LiveKpis::default();
    }
    let pct = |n: u64| Some(100.0 * n as f64 / attempts as f64);
    LiveKpis {
        asr_pct: pct(answered),
        ner_pct: pct(answered + user),
    }
}

pub(crate) fn ms(a: Option<i64>, b: Option<i64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b >= a => Some((b - a) as f64 / 1000.0),
        _ => None,
    }
}

pub(crate) fn start_of(c: &Cdr) -> Option<i64> {
    c.caller_req_originate.or(c.caller_create)
}

/// Computes the summary.
pub fn summarize(cdrs: &[Cdr]) -> Summary {
    let mut by_node: BTreeMap<&str, Vec<&Cdr>> = BTreeMap::new();
    for c in cdrs {
        by_node.entry(c.node.as_str()).or_default().push(c);
    }
    let mut s = Summary {
        calls: cdrs.len(),
        kpis: kpis(cdrs),
        per_node: by_node
            .into_iter()
            .map(|(n, v)| (n.to_owned(), kpis(v)))
            .collect(),
        ..Default::default()
    };
    let (mut ans, mut setup, mut inv, mut orig, mut dur) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut setup_agent = Vec::new();
    let mut starts = Vec::new();
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for c in cdrs {
        if c.failed {
            s.failed += 1;
            *s.failures.entry(c.hangup_cause.clone()).or_default() += 1;
        } else {
            s.answered += 1;
        }
        if let Some(a) = &c.app {
            *s.apps.entry(a.clone()).or_default() += 1;
        }
        ans.extend(ms(c.callee_answer, c.caller_answer));
        setup.extend(ms(c.caller_create, c.caller_answer));
        inv.extend(ms(c.caller_create, c.callee_create));
        orig.extend(ms(c.caller_req_originate, c.caller_originate));
        dur.extend(ms(c.caller_answer, c.caller_hangup).map(|v| v / 1000.0));
        setup_agent.extend(ms(c.originate_sent_agent, c.originate_done_agent));
        if let Some(v) = &c.verdict {
            let e = s
                .verdicts
                .entry(c.app.clone().unwrap_or_default())
                .or_default();
            if v == "passed" {
                e.0 += 1;
            } else {
                e.1 += 1;
                s.verdicts_cut_short += usize::from(v.starts_with("failed: cut short"));
            }
        }
        if let Some(t) = start_of(c) {
            starts.push(t);
            let end = c.caller_hangup.or(c.callee_hangup).unwrap_or(t).max(t);
            edges.push((t, 1));
            edges.push((end, -1));
        }
    }
    starts.sort_unstable();
    if let (Some(a), Some(b)) = (starts.first(), starts.last())
        && b > a
    {
        // n launches span n-1 gaps.
        s.achieved_rate = (starts.len() - 1) as f64 / ((b - a) as f64 / 1e6);
    }
    edges.sort_unstable();
    let (mut cur, mut max, mut area, mut last) = (0i64, 0i64, 0f64, None::<i64>);
    for (t, d) in &edges {
        if let Some(l) = last {
            area += cur as f64 * (t - l) as f64;
        }
        cur += *d as i64;
        max = max.max(cur);
        last = Some(*t);
    }
    s.max_erlangs = max as f64;
    if let (Some((t0, _)), Some((t1, _))) = (edges.first(), edges.last())
        && t1 > t0
    {
        s.mean_erlangs = area / (t1 - t0) as f64;
    }
    s.answer_latency_ms = pcts(&mut ans);
    s.call_setup_latency_ms = pcts(&mut setup);
    s.invite_latency_ms = pcts(&mut inv);
    s.originate_latency_ms = pcts(&mut orig);
    s.call_duration_s = pcts(&mut dur);
    s.call_setup_agent_ms = pcts(&mut setup_agent);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cdr(start_s: i64, dur_s: i64, failed: bool) -> Cdr {
        let t = start_s * 1_000_000;
        Cdr {
            call_id: format!("c{start_s}"),
            caller_req_originate: Some(t),
            caller_create: Some(t + 1000),
            callee_create: Some(t + 3000),
            callee_answer: (!failed).then_some(t + 10_000),
            caller_answer: (!failed).then_some(t + 12_000),
            caller_hangup: Some(t + dur_s * 1_000_000),
            failed,
            originate_sent_agent: Some(t + 200),
            originate_done_agent: (!failed).then_some(t + 12_700),
            verdict: Some(
                if failed {
                    "failed: cut short"
                } else {
                    "passed"
                }
                .into(),
            ),
            app: Some("DtmfChecker".into()),
            hangup_cause: if failed {
                "USER_BUSY"
            } else {
                "NORMAL_CLEARING"
            }
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn summary_numbers() {
        let cdrs: Vec<Cdr> = (0..10).map(|i| cdr(i, 3, i == 9)).collect();
        let s = summarize(&cdrs);
        assert_eq!((s.calls, s.answered, s.failed), (10, 9, 1));
        assert_eq!(s.failures.get("USER_BUSY"), Some(&1));
        assert!((s.achieved_rate - 1.0).abs() < 1e-9);
        assert_eq!(s.max_erlangs, 3.0);
        assert_eq!(s.answer_latency_ms.p50, 2.0);
        assert_eq!(s.call_setup_latency_ms.p50, 11.0);
        assert_eq!(s.invite_latency_ms.p99, 2.0);
        assert_eq!(s.call_setup_agent_ms.p50, 12.5);
        assert_eq!(s.call_setup_agent_ms.n, 9);
        // Billable time: answer → hangup.
        assert!((s.call_duration_s.p50 - 2.988).abs() < 1e-9);
        assert_eq!(s.verdicts.get("DtmfChecker"), Some(&(9, 1)));
        assert_eq!(s.verdicts_cut_short, 1);
        let per = crate::plot::per_second(&cdrs);
        assert_eq!(per[0].rate, 1.0);
        assert_eq!(per[5].erlangs, 3.0);
        assert!(crate::cdr_export::to_csv(&cdrs).lines().count() == 11);
    }
}

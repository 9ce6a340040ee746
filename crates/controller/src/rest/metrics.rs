//! `GET /metrics`: Prometheus text.

use super::*;

/// The standard process_* metrics (Linux /proc; nothing elsewhere).
fn process_metrics() -> String {
    let mut out = String::new();
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return out;
    };
    // Fields after the command name, which may hold spaces: it ends at
    // the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return out;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    // After ')': state is field 3, so field N is f[N - 3].
    const TICKS: f64 = 100.0;
    if let (Some(u), Some(s)) = (num(14 - 3), num(15 - 3)) {
        out.push_str(&format!("# HELP process_cpu_seconds_total User and system CPU time spent, s.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {:.2}\n", (u + s) / TICKS));
    }
    if let Some(rss) = num(24 - 3) {
        out.push_str(&format!("# HELP process_resident_memory_bytes Resident memory size, bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}\n", rss * 4096.0));
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
    });
    if let (Some(start), Some(boot)) = (num(22 - 3), boot) {
        out.push_str(&format!("# HELP process_start_time_seconds Start time of the process since the Unix epoch, s.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {:.2}\n", boot + start / TICKS));
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.push_str(&format!("# HELP process_open_fds Open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds {}\n", fds.count()));
    }
    out
}

/// A label value in Prometheus' text format.
pub(crate) fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(super) async fn metrics(State(api): State<Api>) -> Response {
    let c = api.cluster.counters();
    let nodes = api.cluster.nodes();
    let (sessions, calls) = api.cluster.with_tracker(|t| (t.len(), t.calls().count()));
    let mut s = String::new();
    let mut billsec = String::new();
    let mut put = |name: &str, help: &str, kind: &str, lines: Vec<(String, u64)>| {
        s.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in lines {
            s.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    put(
        "switchy_nodes",
        "Nodes known to the controller.",
        "gauge",
        vec![(String::new(), nodes.len() as u64)],
    );
    put(
        "switchy_node_up",
        "1 when the node's agent is connected and its ESL is up.",
        "gauge",
        nodes
            .iter()
            .map(|n| (format!("{{node=\"{}\"}}", n.id), (n.ready()) as u64))
            .collect(),
    );
    put(
        "switchy_node_events_total",
        "Events received per node.",
        "counter",
        nodes
            .iter()
            .map(|n| (format!("{{node=\"{}\"}}", n.id), n.events))
            .collect(),
    );
    put(
        "switchy_agent_dropped_events_total",
        "Events the agent dropped with a full buffer.",
        "counter",
        nodes
            .iter()
            .map(|n| (format!("{{node=\"{}\"}}", n.id), n.agent_dropped))
            .collect(),
    );
    put(
        "switchy_events_total",
        "Events received.",
        "counter",
        vec![(String::new(), c.events.load(Ordering::Relaxed))],
    );
    put(
        "switchy_duplicate_events_total",
        "Re-sent events ignored after a reconnect.",
        "counter",
        vec![(String::new(), c.duplicates.load(Ordering::Relaxed))],
    );
    if let Some(cdr) = api.cluster.cdr_counters() {
        let outcomes = cdr
            .outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let label = |o: &crate::cdr::Outcome| {
            format!(
                "{{node=\"{}\",sip_status=\"{}\",cause=\"{}\"}}",
                esc(&o.node),
                esc(&o.sip_status),
                esc(&o.cause)
            )
        };
        put(
            "switchy_cdr_calls_total",
            "Calls by caller node, final SIP status and hangup cause (from their CDRs; ASR = answered / calls).",
            "counter",
            outcomes.iter().map(|(o, t)| (label(o), t.calls)).collect(),
        );
        put(
            "switchy_cdr_answered_total",
            "Answered calls by caller node, final SIP status and hangup cause.",
            "counter",
            outcomes
                .iter()
                .map(|(o, t)| (label(o), t.answered))
                .collect(),
        );
        billsec.push_str("# HELP switchy_cdr_billsec_seconds_total Billable seconds of answered calls (ACD = this / answered).\n# TYPE switchy_cdr_billsec_seconds_total counter\n");
        for (o, t) in &outcomes {
            billsec.push_str(&format!(
                "switchy_cdr_billsec_seconds_total{} {:.3}\n",
                label(o),
                t.billsec
            ));
        }
        for (name, help, v) in [
            (
                "switchy_cdr_queued_total",
                "CDRs handed to the writer.",
                &cdr.queued,
            ),
            ("switchy_cdr_written_total", "CDRs committed.", &cdr.written),
            (
                "switchy_cdr_duplicates_total",
                "CDRs not written because their call had one (re-built from re-sent events).",
                &cdr.duplicates,
            ),
            (
                "switchy_cdr_merged_total",
                "Stored CDRs completed with a leg re-sent later by another node (after a controller restart).",
                &cdr.merged,
            ),
            (
                "switchy_cdr_failed_total",
                "CDRs the store refused at shutdown (kept in the log).",
                &cdr.failed,
            ),
            (
                "switchy_cdr_write_retries_total",
                "CDR transactions that failed and were retried (the cluster waits meanwhile).",
                &cdr.retries,
            ),
        ] {
            put(
                name,
                help,
                "counter",
                vec![(String::new(), v.load(Ordering::Relaxed))],
            );
        }
    }
    put(
        "switchy_pipeline_undurable_batches",
        "Batches published but not yet committed by the CDR writer (their agents wait for the Ack).",
        "gauge",
        vec![(String::new(), api.cluster.pipeline().undurable())],
    );
    let untracked = api.cluster.with_tracker(|t| (*t.untracked).clone());
    put(
        "switchy_tracker_untracked_sessions_total",
        "New channels not tracked because the node's (or the cluster's) session limit was reached.",
        "counter",
        untracked
            .into_iter()
            .map(|(n, v)| (format!("{{node=\"{n}\"}}"), v))
            .collect(),
    );
    let corrections = api.cluster.with_tracker(|t| (*t.corrections).clone());
    put(
        "switchy_tracker_corrections_total",
        "Legs the tracker corrected without a hangup event: resync_closed (FreeSWITCH no longer has it), resync_added and resync_linked (learned from a snapshot, linked to its call), node_restarted, node_gone (agent gone past the grace period), reaped.",
        "counter",
        [
            "resync_closed",
            "resync_added",
            "resync_linked",
            "node_restarted",
            "node_gone",
            "reaped",
        ]
        .iter()
        .map(|k| {
            (
                format!("{{kind=\"{k}\"}}"),
                corrections.get(k).copied().unwrap_or(0),
            )
        })
        .collect(),
    );
    let consumers = api.cluster.pipeline().consumers();
    put(
        "switchy_pipeline_queued_events",
        "Events queued for each lossless consumer (CDRs, the Originator, apps).",
        "gauge",
        consumers
            .iter()
            .map(|c| (format!("{{consumer=\"{}\"}}", c.name), c.queued as u64))
            .collect(),
    );
    put(
        "switchy_pipeline_delivered_events_total",
        "Events handed to each lossless consumer.",
        "counter",
        consumers
            .iter()
            .map(|c| {
                (
                    format!("{{consumer=\"{}\"}}", c.name),
                    c.stats.delivered.load(Ordering::Relaxed),
                )
            })
            .collect(),
    );
    put(
        "switchy_pipeline_backpressure_waits_total",
        "Times the event pipeline waited for a full consumer (backpressure: nothing is dropped).",
        "counter",
        consumers
            .iter()
            .map(|c| {
                (
                    format!("{{consumer=\"{}\"}}", c.name),
                    c.stats.waits.load(Ordering::Relaxed),
                )
            })
            .collect(),
    );
    put(
        "switchy_pipeline_backpressure_wait_ms_total",
        "Time the event pipeline spent waiting for each consumer, ms.",
        "counter",
        consumers
            .iter()
            .map(|c| {
                (
                    format!("{{consumer=\"{}\"}}", c.name),
                    c.stats.waited_us.load(Ordering::Relaxed) / 1000,
                )
            })
            .collect(),
    );
    put(
        "switchy_observer_lagged_events_total",
        "Events best-effort observers (live views) missed.",
        "counter",
        vec![(String::new(), api.cluster.pipeline().observer_lagged())],
    );
    put(
        "switchy_sessions",
        "Live sessions.",
        "gauge",
        vec![(String::new(), sessions as u64)],
    );
    put(
        "switchy_calls",
        "Live calls.",
        "gauge",
        vec![(String::new(), calls as u64)],
    );
    put(
        "switchy_commands_total",
        "Commands sent to nodes.",
        "counter",
        vec![(String::new(), c.commands.load(Ordering::Relaxed))],
    );
    put(
        "switchy_command_errors_total",
        "Commands that failed.",
        "counter",
        vec![(String::new(), c.command_errors.load(Ordering::Relaxed))],
    );
    put(
        "switchy_agents_refused_total",
        "Agent connections refused.",
        "counter",
        vec![(String::new(), c.refused.load(Ordering::Relaxed))],
    );
    for (name, help, kind, v) in [
        (
            "switchy_rest_connections_open",
            "REST connections open.",
            "gauge",
            &api.stats.open,
        ),
        (
            "switchy_rest_connections_rejected_total",
            "REST connections closed at once: the connection limit was reached.",
            "counter",
            &api.stats.rejected,
        ),
        (
            "switchy_rest_auth_failures_total",
            "REST requests with a wrong or missing token.",
            "counter",
            &api.stats.auth_failures,
        ),
        (
            "switchy_rest_auth_throttled_total",
            "REST requests refused (429) because their client failed to authenticate too often.",
            "counter",
            &api.stats.auth_throttled,
        ),
    ] {
        put(
            name,
            help,
            kind,
            vec![(String::new(), v.load(Ordering::Relaxed))],
        );
    }
    put(
        "switchy_agent_refusals_total",
        "Agent connections refused, by reason (tls, no_name, version, identity, duplicate_identity, revoked).",
        "counter",
        crate::cluster::RefusalKind::ALL
            .iter()
            .zip(c.refused_by.iter())
            .map(|(k, v)| {
                (
                    format!("{{reason=\"{}\"}}", k.label()),
                    v.load(Ordering::Relaxed),
                )
            })
            .collect(),
    );
    s.push_str("# HELP switchy_node_idle_cpu_percent Host idle CPU as the node's FreeSWITCH reports it (api status).\n# TYPE switchy_node_idle_cpu_percent gauge\n");
    for n in &nodes {
        if let Some(l) = &n.load {
            s.push_str(&format!(
                "switchy_node_idle_cpu_percent{{node=\"{}\"}} {}\n",
                n.id,
                l.idle_cpu_pct()
            ));
        }
    }
    s.push_str("# HELP switchy_node_freeswitch_cpu_percent CPU of the node's FreeSWITCH process, % of one core (read by its agent).\n# TYPE switchy_node_freeswitch_cpu_percent gauge\n");
    for n in &nodes {
        if let Some(c) = n.load.as_ref().and_then(|l| l.fs_cpu_pct()) {
            s.push_str(&format!(
                "switchy_node_freeswitch_cpu_percent{{node=\"{}\"}} {c}\n",
                n.id
            ));
        }
    }
    s.push_str("# HELP switchy_app_verdicts_total Calls an app checked, by its final verdict (a call cut short before its check finished fails).\n# TYPE switchy_app_verdicts_total counter\n");
    for ((app, passed), v) in api.cluster.verdict_counts() {
        s.push_str(&format!(
            "switchy_app_verdicts_total{{app=\"{app}\",verdict=\"{}\"}} {v}\n",
            if passed { "passed" } else { "failed" }
        ));
    }
    for (metric, help, buckets, sum) in [
        (
            "switchy_relay_latency_seconds",
            "FreeSWITCH event time to tracker update.",
            &c.latency_buckets,
            &c.latency_sum_us,
        ),
        (
            "switchy_relay_agent_latency_seconds",
            "Agent receipt of an event to tracker update (switchy's own part of the relay latency).",
            &c.agent_latency_buckets,
            &c.agent_latency_sum_us,
        ),
    ] {
        s.push_str(&format!(
            "# HELP {metric} {help}\n# TYPE {metric} histogram\n"
        ));
        let mut cum = 0;
        for (i, ub) in LATENCY_BUCKETS.iter().enumerate() {
            cum += buckets[i].load(Ordering::Relaxed);
            let le = if *ub == u64::MAX {
                "+Inf".to_string()
            } else {
                format!("{}", *ub as f64 / 1e6)
            };
            s.push_str(&format!("{metric}_bucket{{le=\"{le}\"}} {cum}\n"));
        }
        s.push_str(&format!(
            "{metric}_sum {}\n",
            sum.load(Ordering::Relaxed) as f64 / 1e6
        ));
        s.push_str(&format!("{metric}_count {cum}\n"));
    }
    let o = api
        .originator
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(o) = o {
        let st = o.status();
        for (name, help, kind, v) in [
            (
                "switchy_originator_offered_total",
                "Calls launched.",
                "counter",
                st.offered as f64,
            ),
            (
                "switchy_originator_answered_total",
                "Calls answered.",
                "counter",
                st.answered as f64,
            ),
            (
                "switchy_originator_failed_total",
                "Calls failed.",
                "counter",
                st.failed as f64,
            ),
            (
                "switchy_originator_jobs_recovered_total",
                "Originates whose BACKGROUND_JOB was lost (an ESL outage) and whose answer a resync showed.",
                "counter",
                st.jobs_recovered as f64,
            ),
            (
                "switchy_originator_active_calls",
                "Calls up now.",
                "gauge",
                st.active as f64,
            ),
            (
                "switchy_originator_rate_target",
                "Requested calls/s.",
                "gauge",
                st.config.rate,
            ),
            (
                "switchy_originator_rate_current",
                "Calls launched in the last second.",
                "gauge",
                st.current_cps,
            ),
            (
                "switchy_originator_late_launches_total",
                "Launches more than 50 ms behind schedule.",
                "counter",
                st.late_launches as f64,
            ),
        ] {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        }
        s.push_str("# HELP switchy_originator_bottleneck_seconds_total Seconds the requested rate was not met, by the party diagnosed.\n# TYPE switchy_originator_bottleneck_seconds_total counter\n");
        for (party, (n, _)) in &st.bottleneck_secs {
            let party = party.replace('"', "'");
            s.push_str(&format!(
                "switchy_originator_bottleneck_seconds_total{{party=\"{party}\"}} {n}\n"
            ));
        }
        s.push_str("# HELP switchy_originator_failures_total Failed calls by hangup cause.\n# TYPE switchy_originator_failures_total counter\n");
        for (cause, n) in &st.failures {
            s.push_str(&format!(
                "switchy_originator_failures_total{{cause=\"{}\"}} {n}\n",
                esc(cause)
            ));
        }
        let k = crate::cdr_stats::live_kpis(st.answered, &st.failures);
        for (name, help, v) in [
            (
                "switchy_originator_asr_ratio",
                "Answer-seizure ratio of the run so far: answered / (answered + failed).",
                k.asr_pct,
            ),
            (
                "switchy_originator_ner_ratio",
                "Network effectiveness ratio (ITU-T E.411) of the run so far: user busy, no answer and rejects count as successes.",
                k.ner_pct,
            ),
        ] {
            if let Some(v) = v {
                s.push_str(&format!(
                    "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {:.6}\n",
                    v / 100.0
                ));
            }
        }
    }
    s.push_str(&billsec);
    if let Some(r) = api.relay.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
        s.push_str(&r.stats.prometheus());
    }
    s.push_str(&format!(
        "# HELP switchy_build_info The running build (value 1).\n# TYPE switchy_build_info gauge\nswitchy_build_info{{version=\"{}\",component=\"controller\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    ));
    s.push_str("# HELP switchy_node_agent_buffered_events Events buffered at the node's agent (controller away or slow), as last reported.\n# TYPE switchy_node_agent_buffered_events gauge\n");
    for n in &nodes {
        s.push_str(&format!(
            "switchy_node_agent_buffered_events{{node=\"{}\"}} {}\n",
            esc(&n.id),
            n.agent_buffered
        ));
    }
    if let Some(cdr) = api.cluster.cdr_counters() {
        let done = cdr.written.load(Ordering::Relaxed)
            + cdr.duplicates.load(Ordering::Relaxed)
            + cdr.merged.load(Ordering::Relaxed)
            + cdr.failed.load(Ordering::Relaxed);
        s.push_str(&format!(
            "# HELP switchy_cdr_writer_behind CDRs handed to the writer and not yet committed (the cluster waits when it grows).\n# TYPE switchy_cdr_writer_behind gauge\nswitchy_cdr_writer_behind {}\n",
            cdr.queued.load(Ordering::Relaxed).saturating_sub(done)
        ));
    }
    s.push_str(&process_metrics());
    ([("content-type", "text/plain; version=0.0.4")], s).into_response()
}

//! Who is the bottleneck when a load test falls short: switchy's own CPU,
//! an agent that cannot relay fast enough, a node's FreeSWITCH (or its
//! host) out of CPU, or a far end that answers slowly. A pure function of
//! the signals the Originator samples every second, so every rule is
//! tested without a cluster.

use serde::Serialize;

/// What one node looks like this second.
#[derive(Clone, Debug, Default)]
pub struct NodeSignal {
    /// Node id.
    pub id: String,
    /// Host idle CPU as FreeSWITCH reports it (`status`), %.
    pub idle_cpu_pct: Option<f64>,
    /// FreeSWITCH's own CPU, % of one core (the agent reads its /proc).
    pub fs_cpu_pct: Option<f64>,
    /// Cores of the node's host.
    pub cores: u32,
    /// Events waiting at the node's agent (its read lag).
    pub agent_buffered: u64,
}

/// What the Originator saw this second.
#[derive(Clone, Debug, Default)]
pub struct Signals {
    /// Requested calls/s.
    pub rate: f64,
    /// Launches ran behind schedule.
    pub late: bool,
    /// Originates sent whose job (answer) has not come back.
    pub jobs_outstanding: u64,
    /// Originate send → job p99 of the last 1,000 calls, ms.
    pub job_p99_ms: f64,
    /// switchy's process CPU, % of one core.
    pub switchy_cpu_pct: Option<f64>,
    /// Cores of switchy's host.
    pub switchy_cores: u32,
    /// The nodes originated from.
    pub nodes: Vec<NodeSignal>,
}

/// The party that holds the load test back.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "party", rename_all = "snake_case")]
pub enum Diagnosis {
    /// switchy's process uses (nearly) every core.
    SwitchyCpu {
        /// % of one core.
        cpu_pct: f64,
        /// Cores.
        cores: u32,
    },
    /// A node's FreeSWITCH uses (nearly) its host's CPU, or leaves it
    /// none.
    FreeSwitchSaturated {
        /// Node.
        node: String,
        /// Host idle CPU, %.
        idle_cpu_pct: Option<f64>,
        /// FreeSWITCH CPU, % of one core.
        fs_cpu_pct: Option<f64>,
        /// Cores.
        cores: u32,
    },
    /// A node's agent has events waiting it cannot relay fast enough.
    AgentLag {
        /// Node.
        node: String,
        /// Events waiting.
        buffered: u64,
    },
    /// Answers come slowly while nobody is short of CPU: FreeSWITCH's
    /// queues or the destination.
    SlowAnswers {
        /// Originate → answer p99, ms.
        p99_ms: f64,
        /// Waiting originates.
        outstanding: u64,
    },
    /// Launches run late while no CPU is short (the host schedules
    /// switchy late).
    LateLaunches,
}

impl Diagnosis {
    /// Who, without the figures: the key seconds are counted under.
    pub fn party(&self) -> String {
        match self {
            Diagnosis::SwitchyCpu { .. } => "switchy is short of CPU".into(),
            Diagnosis::FreeSwitchSaturated { node, .. } => {
                format!("FreeSWITCH {node} is saturated")
            }
            Diagnosis::AgentLag { node, .. } => format!("the agent of {node} lags"),
            Diagnosis::SlowAnswers { .. } => "originates wait for their answer".into(),
            Diagnosis::LateLaunches => "launches run late".into(),
        }
    }
}

impl std::fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:.0} %"));
        match self {
            Diagnosis::SwitchyCpu { cpu_pct, cores } => write!(
                f,
                "switchy is short of CPU (its process uses {cpu_pct:.0} % of {cores} cores): run the controller on another host or lower the rate"
            ),
            Diagnosis::FreeSwitchSaturated {
                node,
                idle_cpu_pct,
                fs_cpu_pct,
                cores,
            } => write!(
                f,
                "FreeSWITCH {node} is saturated (idle CPU {}, FreeSWITCH {} of {cores} cores): this is the node's ceiling",
                pct(*idle_cpu_pct),
                pct(*fs_cpu_pct)
            ),
            Diagnosis::AgentLag { node, buffered } => write!(
                f,
                "the agent of {node} cannot relay its events fast enough ({buffered} waiting)"
            ),
            Diagnosis::SlowAnswers {
                p99_ms,
                outstanding,
            } => write!(
                f,
                "originates wait for their answer (p99 {p99_ms:.0} ms, {outstanding} waiting) while no CPU is short: FreeSWITCH's queues or the destination"
            ),
            Diagnosis::LateLaunches => f.write_str(
                "launches run behind schedule while no CPU is short: the host schedules switchy late",
            ),
        }
    }
}

/// Share of the cores above which a process counts as CPU-bound.
const BUSY: f64 = 0.85;
/// Host idle CPU under which a node counts as saturated, %.
const IDLE_FLOOR: f64 = 10.0;
/// Agent backlog that counts as read lag, events.
const AGENT_LAG: u64 = 10_000;

/// The bottleneck, when the requested rate is not being met; None when it
/// is (or nothing explains the shortfall yet).
pub fn diagnose(s: &Signals) -> Option<Diagnosis> {
    let backlog = s.jobs_outstanding as f64 > s.rate.max(10.0);
    let slow = s.job_p99_ms > 1000.0;
    if !(s.late || backlog || slow) {
        return None;
    }
    let switchy = s.switchy_cpu_pct.unwrap_or(0.0);
    let switchy_busy = switchy >= BUSY * 100.0 * f64::from(s.switchy_cores.max(1));
    // A saturated FreeSWITCH: its own CPU near its cores, or its host
    // without idle CPU while switchy is not the one using it.
    let fs_saturated = s.nodes.iter().find(|n| {
        let own = n
            .fs_cpu_pct
            .is_some_and(|c| c >= BUSY * 100.0 * f64::from(n.cores.max(1)));
        let host = n.idle_cpu_pct.is_some_and(|i| i < IDLE_FLOOR)
            && n.fs_cpu_pct.is_none_or(|c| c >= switchy);
        own || host
    });
    if let Some(n) = fs_saturated
        && !(switchy_busy && n.fs_cpu_pct.is_some_and(|c| c < switchy))
    {
        return Some(Diagnosis::FreeSwitchSaturated {
            node: n.id.clone(),
            idle_cpu_pct: n.idle_cpu_pct,
            fs_cpu_pct: n.fs_cpu_pct,
            cores: n.cores,
        });
    }
    if switchy_busy {
        return Some(Diagnosis::SwitchyCpu {
            cpu_pct: switchy,
            cores: s.switchy_cores,
        });
    }
    if let Some(n) = s.nodes.iter().find(|n| n.agent_buffered > AGENT_LAG) {
        return Some(Diagnosis::AgentLag {
            node: n.id.clone(),
            buffered: n.agent_buffered,
        });
    }
    if backlog || slow {
        return Some(Diagnosis::SlowAnswers {
            p99_ms: s.job_p99_ms,
            outstanding: s.jobs_outstanding,
        });
    }
    Some(Diagnosis::LateLaunches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(idle: f64, fs: f64) -> NodeSignal {
        NodeSignal {
            id: "fs1".into(),
            idle_cpu_pct: Some(idle),
            fs_cpu_pct: Some(fs),
            cores: 2,
            agent_buffered: 0,
        }
    }

    fn falling_short(nodes: Vec<NodeSignal>, switchy: f64) -> Signals {
        Signals {
            rate: 100.0,
            late: false,
            jobs_outstanding: 400,
            job_p99_ms: 3000.0,
            switchy_cpu_pct: Some(switchy),
            switchy_cores: 2,
            nodes,
        }
    }

    #[test]
    fn no_shortfall_no_bottleneck() {
        let mut s = falling_short(vec![node(1.0, 190.0)], 10.0);
        s.jobs_outstanding = 5;
        s.job_p99_ms = 40.0;
        assert_eq!(
            diagnose(&s),
            None,
            "a busy FreeSWITCH that keeps up is no bottleneck"
        );
    }

    #[test]
    fn names_freeswitch_when_it_uses_the_cpu() {
        let d = diagnose(&falling_short(vec![node(2.0, 185.0)], 12.0)).unwrap();
        assert!(matches!(d, Diagnosis::FreeSwitchSaturated { .. }), "{d:?}");
        assert_eq!(d.party(), "FreeSWITCH fs1 is saturated");
        assert!(
            d.to_string()
                .starts_with("FreeSWITCH fs1 is saturated (idle CPU 2 %"),
            "{d}"
        );
    }

    #[test]
    fn names_switchy_when_it_uses_the_cpu() {
        // The host has no idle CPU, but switchy is the one using it.
        let d = diagnose(&falling_short(vec![node(1.0, 20.0)], 180.0)).unwrap();
        assert!(matches!(d, Diagnosis::SwitchyCpu { .. }), "{d:?}");
        let mut late = falling_short(vec![node(60.0, 30.0)], 175.0);
        late.jobs_outstanding = 0;
        late.job_p99_ms = 10.0;
        late.late = true;
        assert!(matches!(
            diagnose(&late),
            Some(Diagnosis::SwitchyCpu { .. })
        ));
    }

    #[test]
    fn agent_lag_slow_answers_and_late_launches() {
        let mut n = node(70.0, 30.0);
        n.agent_buffered = 50_000;
        assert!(matches!(
            diagnose(&falling_short(vec![n], 20.0)),
            Some(Diagnosis::AgentLag { .. })
        ));
        assert!(matches!(
            diagnose(&falling_short(vec![node(70.0, 30.0)], 20.0)),
            Some(Diagnosis::SlowAnswers { .. })
        ));
        let mut late = falling_short(vec![node(70.0, 30.0)], 20.0);
        late.jobs_outstanding = 0;
        late.job_p99_ms = 10.0;
        late.late = true;
        assert_eq!(diagnose(&late), Some(Diagnosis::LateLaunches));
    }
}

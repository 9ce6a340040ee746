//! What a simulated node's work would cost a real FreeSWITCH, and what
//! happens when it has more work than CPU.
//!
//! FreeSWITCH spends CPU on every leg (SIP signalling, its state machine,
//! its core database), on every second of an answered leg's media, on every
//! event it copies and serializes for each subscriber (mod_event_socket:
//! every channel variable, percent-encoded, in the listener's thread) and
//! on every command (read one byte at a time, then run). The [`Meter`]
//! counts all of it on every node (events and bytes serialized per call
//! are in the control plane's metrics); with a [`CostModel`] it also
//! charges it against the node's cores. Work beyond the cores is a
//! backlog: SIP signalling between legs (INVITE, answer, BYE) waits that
//! long, so setup latency grows as on an overloaded FreeSWITCH, and past
//! `max_backlog_ms` new calls are refused (`NORMAL_TEMPORARY_FAILURE`),
//! as FreeSWITCH refuses sessions when it runs out of idle CPU.
//!
//! The default figures are calibrated on a real FreeSWITCH 1.11.3 on a
//! 2-core machine (docs/benchmarks.md, "mock-relay's cost model").

use serde::{Deserialize, Serialize};
use std::time::Instant;

/// CPU costs of a simulated FreeSWITCH, µs of one core.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CostModel {
    /// Cores the node has.
    pub cores: f64,
    /// One leg: created, signalled, hung up, reported.
    pub per_leg_us: f64,
    /// One second of an answered leg's media.
    pub per_leg_second_us: f64,
    /// One event serialized for one subscriber.
    pub per_event_us: f64,
    /// … plus this per KiB of the event's text.
    pub per_event_kib_us: f64,
    /// One command received and run.
    pub per_command_us: f64,
    /// … plus this per byte of it (FreeSWITCH reads commands byte by byte).
    pub per_command_byte_us: f64,
    /// Backlog beyond which new calls are refused, ms.
    pub max_backlog_ms: u64,
}

impl Default for CostModel {
    /// FreeSWITCH 1.11.3 self-calls on a 2-core machine (see the module
    /// doc for where the figures come from).
    fn default() -> Self {
        CostModel {
            cores: 2.0,
            per_leg_us: 3_400.0,
            per_leg_second_us: 1_983.0,
            per_event_us: 20.0,
            per_event_kib_us: 29.6,
            per_command_us: 40.0,
            per_command_byte_us: 0.6,
            max_backlog_ms: 5_000,
        }
    }
}

/// What a node has done, and (with a model) its CPU debt.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Meter {
    /// Events serialized (once per subscriber that got them).
    pub events: u64,
    /// Their bytes.
    pub event_bytes: u64,
    /// Commands received.
    pub commands: u64,
    /// Their bytes.
    pub command_bytes: u64,
    /// Legs created.
    pub legs: u64,
    /// Seconds of answered legs ended.
    pub leg_seconds: f64,
    /// CPU charged, µs (0 without a model).
    pub charged_us: f64,
    /// Calls refused for backlog.
    pub refused: u64,
    #[serde(skip)]
    debt_us: f64,
    #[serde(skip)]
    at: Option<Instant>,
}

impl Meter {
    fn charge(&mut self, model: Option<&CostModel>, us: f64) {
        if let Some(m) = model {
            self.settle(m);
            self.debt_us += us;
            self.charged_us += us;
        }
    }

    /// Works the debt off at `cores` µs per µs since the last look.
    fn settle(&mut self, m: &CostModel) {
        let now = Instant::now();
        if let Some(at) = self.at {
            let paid = now.duration_since(at).as_secs_f64() * 1e6 * m.cores.max(0.01);
            self.debt_us = (self.debt_us - paid).max(0.0);
        }
        self.at = Some(now);
    }

    /// An event of `bytes` serialized for one subscriber.
    pub fn event(&mut self, model: Option<&CostModel>, bytes: usize) {
        self.events += 1;
        self.event_bytes += bytes as u64;
        let us = model.map_or(0.0, |m| {
            m.per_event_us + bytes as f64 / 1024.0 * m.per_event_kib_us
        });
        self.charge(model, us);
    }

    /// A command of `bytes` received.
    pub fn command(&mut self, model: Option<&CostModel>, bytes: usize) {
        self.commands += 1;
        self.command_bytes += bytes as u64;
        let us = model.map_or(0.0, |m| {
            m.per_command_us + bytes as f64 * m.per_command_byte_us
        });
        self.charge(model, us);
    }

    /// A leg created.
    pub fn leg(&mut self, model: Option<&CostModel>) {
        self.legs += 1;
        let us = model.map_or(0.0, |m| m.per_leg_us);
        self.charge(model, us);
    }

    /// An answered leg ended after `secs` of media.
    pub fn media(&mut self, model: Option<&CostModel>, secs: f64) {
        self.leg_seconds += secs;
        let us = model.map_or(0.0, |m| secs * m.per_leg_second_us);
        self.charge(model, us);
    }

    /// How long work waits now: the debt spread over the cores.
    pub fn backlog(&mut self, model: Option<&CostModel>) -> std::time::Duration {
        let Some(m) = model else {
            return std::time::Duration::ZERO;
        };
        self.settle(m);
        std::time::Duration::from_secs_f64(self.debt_us / m.cores.max(0.01) / 1e6)
    }

    /// True when a new call must be refused for backlog (counted).
    pub fn refuse(&mut self, model: Option<&CostModel>) -> bool {
        let max = model.map(|m| m.max_backlog_ms);
        match max {
            Some(ms) if self.backlog(model).as_millis() as u64 > ms => {
                self.refused += 1;
                true
            }
            _ => false,
        }
    }

    /// CPU a call would take at these per-leg counts, µs: the capacity
    /// of the node is `cores × 1e6 / this` calls/s.
    pub fn per_call_us(&self, calls: u64) -> f64 {
        if calls == 0 {
            0.0
        } else {
            self.charged_us / calls as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_always_charges_with_a_model_and_works_debt_off() {
        let mut m = Meter::default();
        m.event(None, 2048);
        m.command(None, 100);
        assert_eq!((m.events, m.event_bytes, m.commands), (1, 2048, 1));
        assert_eq!(m.charged_us, 0.0);
        assert_eq!(m.backlog(None), std::time::Duration::ZERO);
        let model = CostModel {
            cores: 1.0,
            per_event_us: 100.0,
            per_event_kib_us: 50.0,
            max_backlog_ms: 1,
            ..CostModel::default()
        };
        m.event(Some(&model), 2048);
        assert_eq!(m.charged_us, 200.0);
        // 2 s of work on one core: a backlog of about 2 s, and refusals.
        m.media(Some(&model), 2_000_000.0 / model.per_leg_second_us);
        let b = m.backlog(Some(&model)).as_secs_f64();
        assert!((1.9..=2.01).contains(&b), "{b}");
        assert!(m.refuse(Some(&model)));
        assert_eq!(m.refused, 1);
    }
}

//! The resolved set of event templates: the captured ones plus the event
//! kinds a capture did not contain, derived from captured ones the way
//! FreeSWITCH lays them out (section 9 of the ESL reference).

use crate::template::{self, TValue, Template, TemplateError};
use std::collections::HashMap;
use std::sync::Arc;

/// All templates, looked up by event, direction and channel state.
#[derive(Debug)]
pub struct Templates {
    map: HashMap<String, Arc<Template>>,
}

fn key(e: &str, d: &str, s: &str) -> String {
    format!("{e} {d} {s}")
}

impl Templates {
    /// Loads the compiled-in templates and derives the missing kinds.
    pub fn load() -> Result<Templates, TemplateError> {
        let parsed = template::parse(template::EVENTS_TMPL)?;
        let mut map: HashMap<String, Arc<Template>> = parsed
            .into_iter()
            .map(|((e, d, s), t)| (key(&e, &d, &s), Arc::new(t)))
            .collect();
        let get =
            |map: &HashMap<String, Arc<Template>>, k: &str| -> Result<Template, TemplateError> {
                map.get(k)
                    .map(|t| (**t).clone())
                    .ok_or_else(|| TemplateError {
                        line: 0,
                        reason: format!("missing base template {k}"),
                    })
            };
        for dir in ["inbound", "outbound"] {
            let state = if dir == "inbound" {
                "CS_EXECUTE"
            } else {
                "CS_CONSUME_MEDIA"
            };
            let answer = get(&map, &key("CHANNEL_ANSWER", dir, state))?;
            for e in ["CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA"] {
                map.insert(key(e, dir, "*"), Arc::new(answer.derive(e, &[], false)));
            }
            let park = get(&map, &key("CHANNEL_PARK", dir, "CS_EXECUTE"))?;
            for e in ["CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE"] {
                let mut t = park.derive(e, &[], false);
                // Bridge-A/B before the channel data, Other-Leg before variables.
                let seq = t
                    .headers
                    .iter()
                    .position(|h| h.name == "Event-Sequence")
                    .unwrap_or(0)
                    + 1;
                t.insert(seq, "Bridge-A-Unique-ID", TValue::Var("bridge_a"));
                t.insert(seq + 1, "Bridge-B-Unique-ID", TValue::Var("bridge_b"));
                let at = t.first_variable().unwrap_or(t.headers.len());
                t.insert(at, "Other-Type", TValue::Lit("originatee"));
                t.insert(at + 1, "Other-Leg-Unique-ID", TValue::Var("bridge_b"));
                map.insert(key(e, dir, "*"), Arc::new(t));
            }
            let exec = get(&map, &key("CHANNEL_EXECUTE", dir, "CS_EXECUTE"))?;
            let app_headers = [
                "Application",
                "Application-Data",
                "Application-UUID",
                "Application-UUID-Name",
            ];
            for (e, tail) in [
                ("PLAYBACK_START", &["Playback-File-Path"][..]),
                (
                    "PLAYBACK_STOP",
                    &["Playback-File-Path", "Playback-Status"][..],
                ),
                ("RECORD_START", &["Record-File-Path"][..]),
                (
                    "RECORD_STOP",
                    &["Record-File-Path", "Record-Completion-Cause"][..],
                ),
                (
                    "MEDIA_BUG_START",
                    &["Media-Bug-Function", "Media-Bug-Target"][..],
                ),
                (
                    "MEDIA_BUG_STOP",
                    &["Media-Bug-Function", "Media-Bug-Target"][..],
                ),
            ] {
                let mut t = exec.derive(e, &app_headers, false);
                for h in tail {
                    let var = h.to_ascii_lowercase().replace('-', "_");
                    t.push(h, TValue::Var(&var));
                }
                map.insert(key(e, dir, "*"), Arc::new(t));
            }
            let state_t = get(&map, &key("CHANNEL_STATE", dir, "CS_EXECUTE"))?;
            let mut dtmf = state_t.derive("DTMF", &[], true);
            dtmf.push("DTMF-Digit", TValue::Var("dtmf_digit"));
            dtmf.push("DTMF-Duration", TValue::Lit("2000"));
            dtmf.push("DTMF-Source", TValue::Lit("RTP"));
            map.insert(key("DTMF", dir, "*"), Arc::new(dtmf));
            // RECV_INFO (a SIP INFO, e.g. the display update a bridged
            // self-call's legs send each other): the SIP headers after the
            // core ones, then the channel data without variables.
            let mut info = state_t.derive("RECV_INFO", &[], true);
            let seq = info
                .headers
                .iter()
                .position(|h| h.name == "Event-Sequence")
                .map_or(0, |i| i + 1);
            for (i, (h, v)) in [
                ("SIP-Content-Type", TValue::Lit("message/update_display")),
                ("SIP-From-User", TValue::Var("cid_num")),
                ("SIP-From-Host", TValue::Var("network_addr")),
                ("SIP-To-User", TValue::Var("dest")),
                ("SIP-To-Host", TValue::Var("network_addr")),
                ("SIP-Contact-User", TValue::Var("cid_num")),
                ("SIP-Contact-Host", TValue::Var("network_addr")),
            ]
            .into_iter()
            .enumerate()
            {
                info.insert(seq + i, h, v);
            }
            map.insert(key("RECV_INFO", dir, "*"), Arc::new(info));
        }
        let api = get(&map, &key("API", "-", "-"))?;
        let core: Vec<&str> = api
            .headers
            .iter()
            .map(|h| h.name.as_str())
            .filter(|n| n.starts_with("API-"))
            .collect();
        // The scheduler's events (sched_hangup): core headers, then the task.
        for e in ["ADD_SCHEDULE", "DEL_SCHEDULE"] {
            let mut t = api.derive(e, &core, false);
            for (h, v) in [
                ("Task-ID", "task_id"),
                ("Task-Desc", "task_desc"),
                ("Task-Group", "task_group"),
                ("Task-Runtime", "task_runtime"),
            ] {
                t.push(h, TValue::Var(v));
            }
            map.insert(key(e, "-", "-"), Arc::new(t));
        }
        let mut hb = api.derive("HEARTBEAT", &core, false);
        for (h, v) in [
            ("Event-Info", TValue::Lit("System Ready")),
            ("Up-Time", TValue::Var("up_time")),
            ("FreeSWITCH-Version", TValue::Lit("1.11.3-dev 64bit")),
            ("Uptime-msec", TValue::Var("uptime_msec")),
            ("Session-Count", TValue::Var("session_count")),
            ("Max-Sessions", TValue::Var("max_sessions")),
            ("Session-Per-Sec", TValue::Var("sps")),
            ("Session-Per-Sec-Last", TValue::Var("sps_last")),
            ("Session-Per-Sec-Max", TValue::Var("sps_last")),
            ("Session-Per-Sec-FiveMin", TValue::Var("sps_last")),
            ("Session-Since-Startup", TValue::Var("since_startup")),
            ("Session-Peak-Max", TValue::Var("peak")),
            ("Session-Peak-FiveMin", TValue::Var("peak")),
            ("Idle-CPU", TValue::Lit("99.000000")),
        ] {
            hb.push(h, v);
        }
        map.insert(key("HEARTBEAT", "-", "-"), Arc::new(hb));
        let mut rs = api.derive("RE_SCHEDULE", &core, false);
        for (h, v) in [
            ("Task-ID", TValue::Lit("1")),
            ("Task-Desc", TValue::Lit("heartbeat")),
            ("Task-Group", TValue::Lit("core")),
            ("Task-Runtime", TValue::Var("task_runtime")),
        ] {
            rs.push(h, v);
        }
        map.insert(key("RE_SCHEDULE", "-", "-"), Arc::new(rs));
        Ok(Templates { map })
    }

    /// The template for an event of a leg in a state, falling back to the
    /// same event in any state, then to the other direction.
    pub fn get(&self, event: &str, dir: &str, state: &str) -> Option<&Arc<Template>> {
        if let Some(t) = self.map.get(&key(event, dir, state)) {
            return Some(t);
        }
        if let Some(t) = self.map.get(&key(event, dir, "*")) {
            return Some(t);
        }
        let other = if dir == "inbound" {
            "outbound"
        } else {
            "inbound"
        };
        let prefix_same = format!("{event} {dir} ");
        let prefix_other = format!("{event} {other} ");
        let plain = |k: &String| !k.contains('#') && !k.contains('!');
        let mut best: Option<(&String, &Arc<Template>)> = None;
        for (k, t) in &self.map {
            if k.starts_with(&prefix_same)
                && best.is_none_or(|(bk, _)| !bk.starts_with(&prefix_same) || k < bk)
            {
                best = Some((k, t));
            }
        }
        if best.is_none() {
            for (k, t) in &self.map {
                if plain(k) && k.starts_with(&prefix_other) && best.is_none_or(|(bk, _)| k < bk) {
                    best = Some((k, t));
                }
            }
        }
        best.map(|(_, t)| t)
            .or_else(|| self.map.get(&key(event, "-", "-")))
    }

    /// The template of exactly this key, no fallback.
    pub fn get_exact(&self, event: &str, dir: &str, state: &str) -> Option<&Arc<Template>> {
        self.map.get(&key(event, dir, state))
    }

    /// Every event name a template exists for.
    pub fn event_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.map.values().map(|t| t.event.clone()).collect();
        v.sort();
        v.dedup();
        v
    }
}

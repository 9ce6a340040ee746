//! Channel simulation: originate (with forking and failover), the inbound
//! leg of a looped-back call, answer, bridge, media applications, DTMF,
//! hangup, in FreeSWITCH's event order (section 10 of the ESL reference).

use crate::config::ExternalOutcome;
use crate::dial::{self, Destination, Endpoint};
use crate::node::{Channel, Dir, Invite, Node, Originate, PeerMsg, Timer, new_uuid};
use crate::util;
use std::collections::VecDeque;
use std::time::Duration;
use switchy_protocol::esl::{ClientCommand, server};
use tokio::sync::oneshot;

impl Node {
    fn new_channel(&mut self, uuid: String, dir: Dir, name: String) -> Channel {
        self.since_startup += 1;
        let created_seq = self.since_startup;
        Channel {
            uuid,
            dir,
            name,
            state: "CS_NEW",
            call_state: "DOWN",
            orig_call_state: "DOWN",
            answer_state: "ringing",
            hangup_cause: None,
            dest: String::new(),
            cid_name: String::new(),
            cid_num: "0000000000".into(),
            context: "default".into(),
            profile: String::new(),
            req_uri: String::new(),
            call_id: new_uuid(),
            network_addr: self.info.ip.clone(),
            created_us: util::now_us(),
            answered_us: 0,
            progress_us: 0,
            progress_media_us: 0,
            hangup_us: 0,
            bridged_us: 0,
            app: None,
            app_data: None,
            app_uuid: None,
            last_app: None,
            last_app_data: None,
            vars: Vec::new(),
            peer_node: None,
            external: false,
            unreachable: None,
            bridged: None,
            bridge_owner: false,
            other_leg: None,
            playback_started_us: 0,
            early_won: false,
            originate: None,
            parked: false,
            recordings: Vec::new(),
            playback: None,
            generation: 0,
            created_seq,
            dialplan_app: None,
        }
    }

    fn insert_channel(&mut self, c: Channel) {
        self.meter.leg(self.knobs.cost.as_ref());
        self.dialogs
            .insert((c.call_id.clone(), c.dir), c.uuid.clone());
        self.channels.insert(c.uuid.clone(), c);
        self.peak = self.peak.max(self.channels.len());
    }

    pub(crate) fn set_state(&mut self, uuid: &str, state: &'static str) {
        if let Some(c) = self.channels.get_mut(uuid) {
            c.state = state;
        }
        self.emit("CHANNEL_STATE", Some(uuid), &[], &[], None);
    }

    pub(crate) fn set_call_state(&mut self, uuid: &str, cs: &'static str) {
        if let Some(c) = self.channels.get_mut(uuid) {
            // As switch_channel_set_callstate: no event when unchanged.
            if c.call_state == cs {
                return;
            }
            c.orig_call_state = c.call_state;
            c.call_state = cs;
        }
        self.emit("CHANNEL_CALLSTATE", Some(uuid), &[], &[], None);
    }

    /// `originate` from `api` (blocking `conn`) or `bgapi` (`job`).
    pub(crate) fn api_originate(
        &mut self,
        conn: Option<u64>,
        job: Option<String>,
        args: &str,
        done: Option<oneshot::Sender<bool>>,
    ) {
        let scenario = self.cluster.scenarios.take("originate", self.info.index);
        let parsed = match dial::parse_originate(args) {
            Ok(p) => p,
            Err(usage) => {
                self.finish_originate_text(conn, job.as_deref(), args, &usage, done);
                return;
            }
        };
        let timeout_s = parsed
            .dial
            .globals
            .iter()
            .find(|(k, _)| k == "originate_timeout")
            .and_then(|(_, v)| v.parse().ok())
            .or(parsed.timeout)
            .unwrap_or(self.knobs.originate_timeout_s);
        let id = self.next_id;
        self.next_id += 1;
        let o = Originate {
            conn,
            done,
            job,
            api_arg: args.to_owned(),
            groups: parsed.dial.groups.into_iter().collect(),
            globals: parsed.dial.globals,
            dest: Some(parsed.dest),
            bridge_from: None,
            cid_name: parsed.cid_name,
            cid_num: parsed.cid_num,
            legs: Vec::new(),
            last_cause: "NORMAL_CLEARING".into(),
            answer_after_ms: scenario.as_ref().and_then(|s| s.answer_after_ms),
            forced_cause: scenario.as_ref().and_then(|s| s.hangup_cause.clone()),
        };
        self.originates.insert(id, o);
        self.schedule(Duration::from_secs(timeout_s), Timer::OriginateTimeout(id));
        self.next_group(id);
    }

    fn finish_originate_text(
        &mut self,
        conn: Option<u64>,
        job: Option<&str>,
        args: &str,
        text: &str,
        done: Option<oneshot::Sender<bool>>,
    ) {
        self.api_event("originate", args);
        match (conn, job) {
            (Some(id), _) => {
                let mut f = Vec::new();
                server::encode_api_response(text.as_bytes(), &mut f);
                self.journal(
                    id,
                    "out",
                    "api_response",
                    text.trim_end().to_owned(),
                    None,
                    text.to_owned(),
                );
                if let Some(c) = self.conns.get_mut(&id) {
                    c.reply_and_release(&f);
                }
            }
            (None, Some(job)) => self.background_job(job, "originate", args, text),
            _ => {}
        }
        if let Some(d) = done {
            let _ = d.send(false);
        }
    }

    /// Starts the next failover group, or fails the originate.
    fn next_group(&mut self, id: u64) {
        loop {
            let Some(o) = self.originates.get_mut(&id) else {
                return;
            };
            let Some(group) = o.groups.pop_front() else {
                let cause = o.last_cause.clone();
                self.fail_originate(id, &cause);
                return;
            };
            let mut started = 0;
            for leg in group {
                if self.start_leg(id, leg) {
                    started += 1;
                }
            }
            if started > 0 {
                return;
            }
        }
    }

    fn fail_originate(&mut self, id: u64, cause: &str) {
        let Some(o) = self.originates.remove(&id) else {
            return;
        };
        if let Some(from) = &o.bridge_from {
            // The bridge application failed: it hangs the caller up with the
            // cause, then ends (and the park it ran in).
            let from = from.clone();
            if self.hangup_start(&from, util::cause(cause)) {
                self.exec_complete(&from, cause);
                self.resume_park(&from);
                self.hangup_finish(&from, true);
            }
            return;
        }
        let text = format!("-ERR {cause}\n");
        self.finish_originate_text(o.conn, o.job.as_deref(), &o.api_arg, &text, o.done);
    }

    /// Creates one outbound leg; false when it failed at once (no channel).
    fn start_leg(&mut self, id: u64, leg: dial::Leg) -> bool {
        let endpoint = dial::parse_endpoint(&leg.endpoint);
        let Some(o) = self.originates.get_mut(&id) else {
            return false;
        };
        if let Some(cause) = o.forced_cause.take() {
            o.last_cause = cause;
            return false;
        }
        let fail = |o: &mut Originate, c: &str| {
            o.last_cause = c.to_owned();
            false
        };
        let mut unreachable = None;
        let (target, profile, user, req_host) = match &endpoint {
            Endpoint::Error(c) => return fail(o, util::cause(c)),
            Endpoint::Unknown(_) => return fail(o, "CHAN_NOT_IMPLEMENTED"),
            Endpoint::Sofia {
                profile,
                user,
                host,
                port,
                fs_path,
            } => {
                if !self.info.profiles.iter().any(|(p, _)| p == profile) {
                    // FreeSWITCH made the session before it looked the
                    // profile up: it reports the destroy of a channel it
                    // never announced.
                    let ghost = new_uuid();
                    let ch = self.new_channel(
                        ghost.clone(),
                        Dir::Outbound,
                        format!("sofia/{profile}/{user}"),
                    );
                    self.channels.insert(ghost.clone(), ch);
                    self.emit("CHANNEL_DESTROY", Some(&ghost), &[], &[], None);
                    self.set_state(&ghost, "CS_DESTROY");
                    self.channels.remove(&ghost);
                    let o = self.originates.get_mut(&id).expect("originate exists");
                    return fail(o, "INVALID_PROFILE");
                }
                let (h, p) = fs_path.clone().unwrap_or((host.clone(), *port));
                let target = self.cluster.node_by_sip(&h, p.unwrap_or(5060));
                if target.is_none() && self.cluster.infos.iter().any(|n| n.ip == h) {
                    // A mock node's address where no profile listens.
                    unreachable = Some("NORMAL_TEMPORARY_FAILURE");
                }
                let req = match port {
                    Some(p) => format!("{host}:{p}"),
                    None => host.clone(),
                };
                (target, profile.clone(), user.clone(), req)
            }
            Endpoint::Gateway { gateway, number } => {
                (None, "external".to_owned(), number.clone(), gateway.clone())
            }
            Endpoint::Local(user) => (
                Some((self.info.index, "internal".to_owned())),
                "internal".to_owned(),
                user.clone(),
                self.info.ip.clone(),
            ),
        };
        if self.channels.len() >= self.knobs.max_sessions || !self.sps_allow() {
            let o = self.originates.get_mut(&id).expect("originate exists");
            return fail(o, "SWITCH_CONGESTION");
        }
        let Some(o) = self.originates.get(&id) else {
            return false;
        };
        let mut vars: Vec<(String, String)> = o.globals.clone();
        vars.extend(leg.vars.iter().cloned());
        let uuid = vars
            .iter()
            .rev()
            .find(|(k, _)| k == "origination_uuid")
            .map(|(_, v)| v.clone())
            .filter(|u| !self.channels.contains_key(u))
            .unwrap_or_else(new_uuid);
        let cid_name = vars
            .iter()
            .rev()
            .find(|(k, _)| k == "origination_caller_id_name")
            .map(|(_, v)| v.clone())
            .or(o.cid_name.clone())
            .unwrap_or_default();
        let cid_num = vars
            .iter()
            .rev()
            .find(|(k, _)| k == "origination_caller_id_number")
            .map(|(_, v)| v.clone())
            .or(o.cid_num.clone())
            .unwrap_or_else(|| "0000000000".into());
        let mut c = self.new_channel(
            uuid.clone(),
            Dir::Outbound,
            format!("sofia/{profile}/{user}@{req_host}"),
        );
        c.dest = user.clone();
        c.cid_name = cid_name.clone();
        c.cid_num = cid_num.clone();
        c.profile = profile.clone();
        c.req_uri = format!("{user}@{req_host}");
        c.vars = vars.clone();
        c.originate = Some(id);
        c.peer_node = target.as_ref().map(|(n, _)| *n);
        c.external = target.is_none();
        c.unreachable = unreachable;
        let call_id = c.call_id.clone();
        c.state = "CS_NONE";
        self.insert_channel(c);
        if let Some(o) = self.originates.get_mut(&id) {
            o.legs.push(uuid.clone());
        }
        self.emit("CHANNEL_OUTGOING", Some(&uuid), &[], &[], None);
        self.set_state(&uuid, "CS_INIT");
        self.emit("CHANNEL_CREATE", Some(&uuid), &[], &[], None);
        self.emit("CHANNEL_ORIGINATE", Some(&uuid), &[], &[], None);
        self.set_state(&uuid, "CS_ROUTING");
        self.set_state(&uuid, "CS_CONSUME_MEDIA");
        match target {
            Some((node, target_profile)) => {
                // Headers that reach the far leg: X-, P-, K- headers.
                let passed: Vec<(String, String)> = vars
                    .iter()
                    .filter(|(k, _)| {
                        k.starts_with("sip_h_X-")
                            || k.starts_with("sip_h_P-")
                            || k.starts_with("sip_h_K-")
                    })
                    .cloned()
                    .collect();
                let invite = Invite {
                    call_id,
                    from_node: Some(self.info.index),
                    user: user.clone(),
                    req_uri: format!("{user}@{req_host}"),
                    profile: target_profile,
                    cid_name,
                    cid_num,
                    vars: passed,
                    network_addr: self.info.ip.clone(),
                    context: "public".into(),
                    hangup_after_ms: None,
                };
                self.send_peer(node, PeerMsg::Invite(Box::new(invite)));
            }
            None => {
                let ring = Duration::from_millis(self.knobs.ring_ms);
                if unreachable.is_some() || self.knobs.external != ExternalOutcome::NoAnswer {
                    self.schedule(ring, Timer::External(uuid.clone()));
                }
            }
        }
        if let Some(ms) = self.originates.get(&id).and_then(|o| o.answer_after_ms) {
            self.schedule(Duration::from_millis(ms), Timer::ScenarioAnswer(uuid));
        }
        true
    }

    /// An INVITE arrives: the inbound leg enters the park dialplan.
    pub(crate) fn invite(&mut self, inv: Invite) {
        let over_limit = self.channels.len() >= self.knobs.max_sessions
            || !self.sps_allow()
            || self.meter.refuse(self.knobs.cost.as_ref());
        let refused =
            self.knobs.failure_ratio > 0.0 && self.rng.next_f64() < self.knobs.failure_ratio;
        if over_limit || refused {
            let cause = if over_limit {
                "NORMAL_TEMPORARY_FAILURE".to_owned()
            } else {
                util::cause(&self.knobs.failure_cause).to_owned()
            };
            if let Some(n) = inv.from_node {
                self.send_peer(
                    n,
                    PeerMsg::Rejected {
                        call_id: inv.call_id,
                        cause,
                    },
                );
            }
            return;
        }
        let uuid = new_uuid();
        let mut c = self.new_channel(
            uuid.clone(),
            Dir::Inbound,
            format!("sofia/{}/{}@{}", inv.profile, inv.cid_num, inv.network_addr),
        );
        c.call_id = inv.call_id.clone();
        c.dest = inv.user.clone();
        c.cid_name = inv.cid_name.clone();
        c.cid_num = inv.cid_num.clone();
        c.profile = inv.profile.clone();
        c.req_uri = inv.req_uri.clone();
        c.context = inv.context.clone();
        c.network_addr = inv.network_addr.clone();
        c.peer_node = inv.from_node;
        c.external = inv.from_node.is_none();
        c.vars = inv.vars.clone();
        // A self-call's inbound leg carries the park dialplan's `^(.*)$`
        // match on the FreeSWITCH of tests/fidelity (see the knob).
        if inv.from_node.is_some() && self.knobs.early_media_on_answer {
            let dp_match = format!("ARRAY::{}|:{}", inv.user, inv.user);
            c.set_var("DP_MATCH", &dp_match);
        }
        self.insert_channel(c);
        self.emit("CHANNEL_STATE", Some(&uuid), &[], &[], None);
        self.emit_codecs(&uuid);
        self.set_state(&uuid, "CS_INIT");
        self.emit("CHANNEL_CREATE", Some(&uuid), &[], &[], None);
        if let Some(c) = self.channels.get_mut(&uuid) {
            c.state = "CS_ROUTING";
        }
        self.set_call_state(&uuid, "RINGING");
        self.emit("CHANNEL_STATE", Some(&uuid), &[], &[], None);
        self.set_state(&uuid, "CS_EXECUTE");
        self.start_park(&uuid);
        if let Some(ms) = self.knobs.auto_answer_ms {
            self.schedule(Duration::from_millis(ms), Timer::AutoAnswer(uuid.clone()));
        }
        if let Some(ms) = inv.hangup_after_ms {
            self.schedule(Duration::from_millis(ms), Timer::RemoteHangup(uuid));
        }
    }

    /// The two CODEC events (read codec, then write codec).
    fn emit_codecs(&mut self, uuid: &str) {
        self.emit("CODEC", Some(uuid), &[], &[], None);
        self.variant = Some("#2");
        self.emit("CODEC", Some(uuid), &[], &[], None);
        self.variant = None;
    }

    /// Runs the `park` application.
    pub(crate) fn start_park(&mut self, uuid: &str) {
        if let Some(c) = self.channels.get_mut(uuid) {
            c.app = Some("park".into());
            c.app_data = None;
            c.app_uuid = Some(new_uuid());
            c.parked = true;
            c.last_app = Some("park".into());
            c.last_app_data = None;
        }
        self.emit("CHANNEL_EXECUTE", Some(uuid), &[], &[], None);
        self.emit("CHANNEL_PARK", Some(uuid), &[], &[], None);
    }

    /// Ends the running application (UNPARK if parked, EXECUTE_COMPLETE).
    pub(crate) fn app_complete(&mut self, uuid: &str, response: Option<&str>) {
        let Some(c) = self.channels.get(uuid) else {
            return;
        };
        if c.app.is_none() {
            if c.parked {
                // Parked by uuid_park from a bridge: no application ran.
                self.emit("CHANNEL_UNPARK", Some(uuid), &[], &[], None);
                if let Some(c) = self.channels.get_mut(uuid) {
                    c.parked = false;
                }
            }
            return;
        }
        if c.parked {
            self.emit("CHANNEL_UNPARK", Some(uuid), &[], &[], None);
        }
        let resp = response.unwrap_or("_none_").to_owned();
        self.emit(
            "CHANNEL_EXECUTE_COMPLETE",
            Some(uuid),
            &[],
            &[("Application-Response".into(), resp)],
            None,
        );
        if let Some(c) = self.channels.get_mut(uuid) {
            c.parked = false;
            c.app = None;
            c.app_data = None;
            c.app_uuid = None;
            c.playback = None;
            c.generation += 1;
        }
    }

    /// Marks a leg answered and fires its events.
    pub(crate) fn answer(&mut self, uuid: &str) -> bool {
        let Some(c) = self.channels.get_mut(uuid) else {
            return false;
        };
        if c.answered() || c.hangup_cause.is_some() {
            return c.answered();
        }
        if c.early_won {
            // Already past its originate on early media: FreeSWITCH
            // reports nothing more for the 200 OK.
            c.answered_us = util::now_us();
            c.answer_state = "answered";
            c.orig_call_state = c.call_state;
            c.call_state = "ACTIVE";
            return true;
        }
        // Answering the inbound leg of a self-call goes through early media
        // first on the FreeSWITCH of tests/fidelity (the caller sees only
        // the 200 OK; see the knob).
        if c.dir == Dir::Inbound
            && c.peer_node.is_some()
            && self.knobs.early_media_on_answer
            && c.progress_media_us == 0
        {
            c.progress_media_us = util::now_us();
            c.answer_state = "early";
            self.emit("CHANNEL_PROGRESS_MEDIA", Some(uuid), &[], &[], None);
            self.set_call_state(uuid, "EARLY");
        }
        let Some(c) = self.channels.get_mut(uuid) else {
            return false;
        };
        c.answered_us = util::now_us();
        c.answer_state = "answered";
        let (dir, peer, call_id, external) = (c.dir, c.peer_node, c.call_id.clone(), c.external);
        if dir == Dir::Outbound {
            self.emit_codecs(uuid);
        }
        self.emit("CHANNEL_ANSWER", Some(uuid), &[], &[], None);
        // The 200 OK's dialog data shows from the next event on.
        if let Some(c) = self.channels.get_mut(uuid) {
            sip_dialog_vars(c);
        }
        self.set_call_state(uuid, "ACTIVE");
        if dir == Dir::Outbound {
            // The callee of a bridge application reports its CALL_UPDATE
            // with the bridge (after CS_EXCHANGE_MEDIA).
            let of_bridge = self
                .channels
                .get(uuid)
                .and_then(|c| c.originate)
                .and_then(|id| self.originates.get(&id))
                .is_some_and(|o| o.bridge_from.is_some());
            if !of_bridge {
                self.emit("CALL_UPDATE", Some(uuid), &[], &[], None);
            }
            self.outbound_answered(uuid);
        } else if let Some(n) = peer {
            self.send_peer(n, PeerMsg::Answered { call_id });
        } else {
            let _ = external;
        }
        true
    }

    /// The outbound leg of an originate was answered: the originate wins.
    fn outbound_answered(&mut self, uuid: &str) {
        let Some(id) = self.channels.get_mut(uuid).and_then(|c| c.originate.take()) else {
            return;
        };
        let Some(o) = self.originates.remove(&id) else {
            return;
        };
        for other in o.legs.iter().filter(|l| *l != uuid) {
            if let Some(c) = self.channels.get_mut(other) {
                c.originate = None;
            }
            self.hangup(other, "LOSE_RACE", true);
        }
        if let Some(from) = o.bridge_from.clone() {
            self.bridge_legs(&from, uuid);
            return;
        }
        let text = format!("+OK {uuid}\n");
        self.finish_originate_text(o.conn, o.job.as_deref(), &o.api_arg, &text, o.done);
        self.set_state(uuid, "CS_EXECUTE");
        match o.dest {
            Some(Destination::App(app, arg)) => {
                if let Some(c) = self.channels.get_mut(uuid) {
                    c.dialplan_app = Some(c.generation);
                }
                self.run_app(uuid, &app, &arg, None)
            }
            Some(Destination::Exten(..)) | None => self.start_park(uuid),
        }
    }

    /// Hangs a channel up with the full event sequence of section 10.7;
    /// tells the SIP peer (BYE/CANCEL/refusal) when `notify`.
    pub(crate) fn hangup(&mut self, uuid: &str, cause: &'static str, notify: bool) {
        if !self.hangup_start(uuid, cause) {
            return;
        }
        self.hangup_finish(uuid, notify);
    }

    /// First half: CHANNEL_HANGUP. False when there is no such live channel.
    pub(crate) fn hangup_start(&mut self, uuid: &str, cause: &'static str) -> bool {
        let Some(c) = self.channels.get_mut(uuid) else {
            return false;
        };
        if c.hangup_cause.is_some() {
            return false;
        }
        c.hangup_cause = Some(cause);
        c.hangup_us = util::now_us();
        if let Some(other) = c.bridged.clone() {
            let (name, num) = (c.cid_name.clone(), c.cid_num.clone());
            c.set_var("last_bridge_to", &other);
            c.set_var("last_sent_callee_id_name", &name);
            c.set_var("last_sent_callee_id_number", &num);
        }
        let media_s = if c.answered_us > 0 {
            c.hangup_us.saturating_sub(c.answered_us) as f64 / 1e6
        } else {
            0.0
        };
        c.answer_state = "hangup";
        self.meter.media(self.knobs.cost.as_ref(), media_s);
        self.emit("CHANNEL_HANGUP", Some(uuid), &[], &[], None);
        true
    }

    /// Second half: the rest of the sequence, then the channel is gone.
    pub(crate) fn hangup_finish(&mut self, uuid: &str, notify: bool) {
        let Some(c) = self.channels.get(uuid) else {
            return;
        };
        let cause = c.hangup_cause.unwrap_or("NORMAL_CLEARING");
        let answered = c.answered();
        let (dir, peer, call_id, bridged, originate) = (
            c.dir,
            c.peer_node,
            c.call_id.clone(),
            c.bridged.clone(),
            c.originate,
        );
        if c.playback.is_some() {
            let file = c.playback.clone().unwrap_or_default();
            self.emit(
                "PLAYBACK_STOP",
                Some(uuid),
                &[
                    ("playback_file_path", file),
                    ("playback_status", "break".into()),
                ],
                &[],
                None,
            );
        }
        let uuid_bridged = self.uuid_bridged(uuid);
        let app_bridged = self.bridge_app_caller(uuid);
        if app_bridged {
            // The caller of a bridge application goes: it reports the
            // bridge's end, the application's, then its park's.
            self.bridge_app_unbridge(uuid);
            self.exec_complete(uuid, "_none_");
            self.resume_park(uuid);
        }
        if uuid_bridged {
            let owner = self.channels.get(uuid).is_some_and(|c| c.bridge_owner);
            if owner {
                self.uuid_bridge_end(uuid);
            } else if let Some(c) = self.channels.get_mut(uuid) {
                // The owner reports the end when it goes.
                c.app = None;
            }
        }
        self.app_complete(uuid, None);
        self.set_state(uuid, "CS_HANGUP");
        let recs = self
            .channels
            .get_mut(uuid)
            .map(|c| std::mem::take(&mut c.recordings))
            .unwrap_or_default();
        for r in recs {
            if let Some(c) = self.channels.get_mut(uuid) {
                c.set_var("record_completion_cause", "success");
                c.set_var("record_file_size", "44");
            }
            self.emit(
                "RECORD_STOP",
                Some(uuid),
                &[
                    ("record_file_path", r.clone()),
                    ("record_completion_cause", "success".into()),
                ],
                &[],
                None,
            );
            self.emit(
                "MEDIA_BUG_STOP",
                Some(uuid),
                &[
                    ("media_bug_function", "session_record".into()),
                    ("media_bug_target", r),
                ],
                &[],
                None,
            );
        }
        self.set_call_state(uuid, "HANGUP");
        self.set_state(uuid, "CS_REPORTING");
        self.emit("CHANNEL_HANGUP_COMPLETE", Some(uuid), &[], &[], None);
        self.emit("CHANNEL_DESTROY", Some(uuid), &[], &[], None);
        self.set_state(uuid, "CS_DESTROY");
        if let Some(c) = self.channels.remove(uuid) {
            self.dialogs.remove(&(c.call_id, c.dir));
        }
        if originate.is_some() {
            self.leg_failed_gone(originate, uuid, cause);
        }
        if notify && let Some(n) = peer {
            let peer_cause = if answered {
                "NORMAL_CLEARING"
            } else if dir == Dir::Outbound {
                "ORIGINATOR_CANCEL"
            } else {
                cause
            };
            if !answered && dir == Dir::Inbound {
                self.send_peer(
                    n,
                    PeerMsg::Rejected {
                        call_id,
                        cause: peer_cause.to_owned(),
                    },
                );
            } else {
                self.send_peer(
                    n,
                    PeerMsg::Bye {
                        call_id,
                        dir: dir.other(),
                        cause: peer_cause.to_owned(),
                    },
                );
            }
        }
        if let Some(other) = bridged {
            if uuid_bridged {
                // The bridge's end is the owner's to report; the survivor
                // has nothing left to run and hangs up (the owner back in
                // CS_EXECUTE first), as FreeSWITCH does.
                if self.channels.get(&other).is_some_and(|c| c.bridge_owner) {
                    self.uuid_bridge_end(&other);
                    self.set_state(&other, "CS_EXECUTE");
                } else if let Some(c) = self.channels.get_mut(&other) {
                    c.bridged = None;
                    c.app = None;
                }
                self.hangup(&other, "NORMAL_CLEARING", true);
            } else if app_bridged {
                // The callee of a bridge application hangs up after its
                // caller (no UNBRIDGE of its own).
                if let Some(c) = self.channels.get_mut(&other) {
                    c.bridged = None;
                }
                self.hangup(&other, "NORMAL_CLEARING", true);
            } else if self.bridge_app_caller(&other) {
                self.bridge_app_callee_gone(&other);
            } else {
                self.unbridge(uuid, &other);
            }
        }
    }

    /// True when `uuid` is the caller of a bridge application and bridged.
    fn bridge_app_caller(&self, uuid: &str) -> bool {
        self.channels.get(uuid).is_some_and(|c| {
            c.bridged.is_some() && c.bridge_owner && c.app.as_deref() == Some("bridge")
        })
    }

    /// CHANNEL_UNBRIDGE on a bridge application's caller.
    fn bridge_app_unbridge(&mut self, caller: &str) {
        let Some(c) = self.channels.get_mut(caller) else {
            return;
        };
        let Some(callee) = c.bridged.take() else {
            return;
        };
        c.bridge_owner = false;
        // What the BYE that ends it says, as sofia keeps it.
        let reason = "Q.850;cause=16;text=\"NORMAL_CLEARING\"";
        let vars: &[(&str, &str)] = if c.hangup_cause.is_some() {
            &[
                ("proto_specific_hangup_cause", "sip:200"),
                ("sip_hangup_disposition", "recv_bye"),
                ("sip_reason", reason),
                ("sip_term_cause", "16"),
                ("sip_term_status", "200"),
            ]
        } else {
            &[
                ("last_bridge_hangup_cause", "NORMAL_CLEARING"),
                ("last_bridge_proto_specific_hangup_cause", "sip:200"),
                ("sip_hangup_phrase", "OK"),
                ("sip_reason", reason),
            ]
        };
        for (k, v) in vars {
            c.set_var(k, v);
        }
        let cause = c.hangup_cause.unwrap_or("NORMAL_CLEARING");
        self.mark_unbridged(caller, &callee, cause, "originator");
        self.emit_unbridge(caller, &callee);
    }

    /// CHANNEL_UNBRIDGE on `a` (the leg that reported the bridge to `b`),
    /// with its Hangup-Cause when `a` is the one going.
    fn emit_unbridge(&mut self, a: &str, b: &str) {
        let tail: Vec<(String, String)> = self
            .channels
            .get(a)
            .and_then(|c| c.hangup_cause)
            .map(|h| ("Hangup-Cause".to_owned(), h.to_owned()))
            .into_iter()
            .collect();
        self.emit(
            "CHANNEL_UNBRIDGE",
            Some(a),
            &[("bridge_a", a.to_owned()), ("bridge_b", b.to_owned())],
            &tail,
            None,
        );
    }

    /// A bridge application's callee hung up first: the caller reports the
    /// bridge's end and the application's; then `hangup_after_bridge=true`
    /// hangs it up, `park_after_bridge=true` parks it, a park it ran in
    /// resumes (FreeSWITCH keeps such a caller parked), and otherwise its
    /// dialplan is over and it hangs up.
    fn bridge_app_callee_gone(&mut self, caller: &str) {
        self.bridge_app_unbridge(caller);
        let Some(c) = self.channels.get(caller) else {
            return;
        };
        let hangup_after = c.var("hangup_after_bridge").is_some_and(util_true);
        let park_after = c.var("park_after_bridge").is_some_and(util_true);
        let parked = c.parked;
        if hangup_after {
            if self.hangup_start(caller, "NORMAL_CLEARING") {
                self.exec_complete(caller, "_none_");
                self.resume_park(caller);
                self.hangup_finish(caller, true);
            }
            return;
        }
        self.exec_complete(caller, "_none_");
        if parked {
            self.resume_park(caller);
        } else if park_after {
            self.set_state(caller, "CS_PARK");
            self.start_park(caller);
        } else {
            self.hangup(caller, "NORMAL_CLEARING", true);
        }
    }

    /// After an application that ran inside a park: the park is the
    /// running application again.
    fn resume_park(&mut self, uuid: &str) {
        if let Some(c) = self.channels.get_mut(uuid)
            && c.parked
        {
            c.app = Some("park".into());
            c.app_data = None;
            c.app_uuid = Some(new_uuid());
        }
    }

    fn leg_failed_gone(&mut self, originate: Option<u64>, uuid: &str, cause: &str) {
        let Some(id) = originate else { return };
        let Some(o) = self.originates.get_mut(&id) else {
            return;
        };
        o.legs.retain(|l| l != uuid);
        o.last_cause = cause.to_owned();
        if o.legs.is_empty() {
            self.next_group(id);
        }
    }

    fn unbridge(&mut self, gone: &str, survivor: &str) {
        let Some(s) = self.channels.get_mut(survivor) else {
            return;
        };
        s.bridged = None;
        let park_after = s.var("park_after_bridge") == Some("true");
        self.emit(
            "CHANNEL_UNBRIDGE",
            Some(survivor),
            &[
                ("bridge_a", survivor.to_owned()),
                ("bridge_b", gone.to_owned()),
            ],
            &[],
            None,
        );
        if park_after {
            self.set_state(survivor, "CS_PARK");
            self.start_park(survivor);
        } else {
            self.hangup(survivor, "NORMAL_CLEARING", true);
        }
    }

    /// `other`'s caller profile as FreeSWITCH copies it into a bridged
    /// leg's events (`Other-Type`, then `Other-Leg-*` in its order; an
    /// outbound other leg has no Username, Dialplan, Orig-Caller-ID-Name or
    /// Callee-ID-Name).
    fn other_leg_profile(
        &self,
        other: &str,
        originatee: bool,
        full: bool,
    ) -> Option<Vec<(&'static str, String)>> {
        let o = self.channels.get(other)?;
        // A leg made by `originate` has a bare profile; an inbound leg, or
        // one a bridge dialled (it inherits its caller's), a full one.
        let inbound = o.dir == Dir::Inbound || full;
        let n = |v: u64| v.to_string();
        let mut v: Vec<(&'static str, String)> = vec![
            (
                "Other-Type",
                if originatee {
                    "originatee"
                } else {
                    "originator"
                }
                .into(),
            ),
            ("Other-Leg-Direction", o.dir.as_str().into()),
            ("Other-Leg-Logical-Direction", "inbound".into()),
        ];
        if inbound {
            v.push(("Other-Leg-Username", o.cid_num.clone()));
            v.push(("Other-Leg-Dialplan", "XML".into()));
        }
        v.push(("Other-Leg-Caller-ID-Name", o.cid_name.clone()));
        v.push(("Other-Leg-Caller-ID-Number", o.cid_num.clone()));
        if inbound {
            v.push(("Other-Leg-Orig-Caller-ID-Name", o.cid_num.clone()));
        }
        v.push(("Other-Leg-Orig-Caller-ID-Number", o.cid_num.clone()));
        if inbound {
            v.push(("Other-Leg-Callee-ID-Name", o.cid_num.clone()));
        }
        v.push(("Other-Leg-Callee-ID-Number", o.cid_num.clone()));
        v.extend([
            ("Other-Leg-Network-Addr", o.network_addr.clone()),
            ("Other-Leg-ANI", o.cid_num.clone()),
            ("Other-Leg-Destination-Number", o.dest.clone()),
            ("Other-Leg-Unique-ID", o.uuid.clone()),
            (
                "Other-Leg-Source",
                if inbound {
                    "mod_sofia"
                } else {
                    "src/switch_ivr_originate.c"
                }
                .into(),
            ),
            ("Other-Leg-Context", o.context.clone()),
            ("Other-Leg-Channel-Name", o.name.clone()),
            ("Other-Leg-Profile-Created-Time", n(o.created_us)),
            ("Other-Leg-Channel-Created-Time", n(o.created_us)),
            ("Other-Leg-Channel-Answered-Time", n(o.answered_us)),
            ("Other-Leg-Channel-Progress-Time", n(o.progress_us)),
            (
                "Other-Leg-Channel-Progress-Media-Time",
                n(o.progress_media_us),
            ),
            ("Other-Leg-Channel-Hangup-Time", "0".into()),
            ("Other-Leg-Channel-Transfer-Time", "0".into()),
            ("Other-Leg-Channel-Resurrect-Time", "0".into()),
            ("Other-Leg-Channel-Bridged-Time", "0".into()),
            ("Other-Leg-Channel-Last-Hold", "0".into()),
            ("Other-Leg-Channel-Hold-Accum", "0".into()),
            ("Other-Leg-Screen-Bit", "true".into()),
            ("Other-Leg-Privacy-Hide-Name", "false".into()),
            ("Other-Leg-Privacy-Hide-Number", "false".into()),
        ]);
        Some(v)
    }

    /// What a bridge sets on both legs: each other's profile and the bridge
    /// variables FreeSWITCH keeps (`bridge_uuid`, `signal_bond`, …).
    fn mark_bridged(&mut self, a: &str, b: &str, how: &str) {
        let now = util::now_us();
        for (x, y, originatee) in [(a, b, true), (b, a, false)] {
            let full = how == "bridge" && y == b;
            let profile = self.other_leg_profile(y, originatee, full);
            let other_name = self
                .channels
                .get(y)
                .map(|c| c.name.clone())
                .unwrap_or_default();
            if let Some(c) = self.channels.get_mut(x) {
                c.other_leg = profile;
                let (cid_name, cid_num, dest) =
                    (c.cid_name.clone(), c.cid_num.clone(), c.dest.clone());
                let history = format!("{}:{}:{how}:{y}", now / 1_000_000, new_uuid());
                for (k, v) in [
                    ("bridge_channel", other_name.as_str()),
                    ("bridge_uuid", y),
                    ("signal_bond", y),
                    ("original_caller_id_name", cid_name.as_str()),
                    ("original_caller_id_number", cid_num.as_str()),
                    ("original_destination_number", dest.as_str()),
                    ("transfer_history", history.as_str()),
                    ("transfer_source", history.as_str()),
                ] {
                    c.set_var(k, v);
                }
            }
        }
    }

    /// The two legs now bridged to each other; `a` reports the bridge.
    fn link_bridged(&mut self, a: &str, b: &str) {
        let now = util::now_us();
        for (x, y) in [(a, b), (b, a)] {
            if let Some(c) = self.channels.get_mut(x) {
                c.bridged = Some(y.to_owned());
                c.bridged_us = now;
                c.bridge_owner = x == a;
            }
        }
    }

    /// What a bridge's end leaves on a leg.
    fn mark_unbridged(&mut self, uuid: &str, other: &str, cause: &str, role: &str) {
        let stamp = util::now_us().to_string();
        if let Some(c) = self.channels.get_mut(uuid) {
            let (cid_name, cid_num) = (c.cid_name.clone(), c.cid_num.clone());
            for (k, v) in [
                ("last_bridge_to", other),
                ("bridge_hangup_cause", cause),
                ("last_sent_callee_id_name", cid_name.as_str()),
                ("last_sent_callee_id_number", cid_num.as_str()),
                ("last_bridge_role", role),
                ("bridge_stamp", stamp.as_str()),
            ] {
                c.set_var(k, v);
            }
        }
    }

    /// True while `uuid` is in a bridge made by `uuid_bridge`.
    pub(crate) fn uuid_bridged(&self, uuid: &str) -> bool {
        self.channels
            .get(uuid)
            .is_some_and(|c| c.bridged.is_some() && c.app.as_deref() == Some("uuid_bridge"))
    }

    /// `uuid_bridge a b`, as FreeSWITCH plays it: each leg leaves its
    /// application (UNPARK, EXECUTE_COMPLETE), goes through CS_HIBERNATE,
    /// CS_RESET and CS_SOFT_EXECUTE and runs `uuid_bridge`; only `a`
    /// reports CHANNEL_BRIDGE (and later CHANNEL_UNBRIDGE); no
    /// EXECUTE_COMPLETE of the bridge follows.
    pub(crate) fn uuid_bridge(&mut self, a: &str, b: &str) {
        // The legs carry each other's profile from the start (their UNPARK
        // already shows it).
        self.mark_bridged(a, b, "uuid_br");
        for leg in [a, b] {
            self.app_complete(leg, None);
            if !self.channels.get(leg).is_some_and(|c| c.answered()) {
                self.answer(leg);
            }
            for st in ["CS_HIBERNATE", "CS_RESET", "CS_SOFT_EXECUTE"] {
                self.set_state(leg, st);
            }
            if let Some(c) = self.channels.get_mut(leg) {
                c.app = Some("uuid_bridge".into());
                c.app_data = None;
                c.app_uuid = Some(new_uuid());
                c.last_app = c.app.clone();
                c.last_app_data = None;
            }
            self.emit("CHANNEL_EXECUTE", Some(leg), &[], &[], None);
        }
        self.link_bridged(a, b);
        self.emit(
            "CHANNEL_BRIDGE",
            Some(a),
            &[("bridge_a", a.to_owned()), ("bridge_b", b.to_owned())],
            &[],
            None,
        );
        // Legs of self-calls tell their SIP peers the new display (INFO).
        let info = |n: &Node, u: &str| n.channels.get(u).is_some_and(|c| c.peer_node.is_some());
        self.emit("CALL_UPDATE", Some(a), &[], &[], None);
        if info(self, a) {
            self.emit("RECV_INFO", Some(a), &[], &[], None);
        }
        self.set_state(b, "CS_EXCHANGE_MEDIA");
        if info(self, b) {
            self.emit("RECV_INFO", Some(b), &[], &[], None);
        }
        self.emit("CALL_UPDATE", Some(b), &[], &[], None);
    }

    /// Ends a `uuid_bridge` bridge on `uuid`'s side: the owner reports
    /// CHANNEL_UNBRIDGE; neither leg hangs up because of it.
    fn uuid_bridge_end(&mut self, uuid: &str) {
        let Some(c) = self.channels.get_mut(uuid) else {
            return;
        };
        let Some(other) = c.bridged.take() else {
            return;
        };
        let owner = std::mem::take(&mut c.bridge_owner);
        c.app = None;
        c.app_uuid = None;
        if let Some(o) = self.channels.get_mut(&other) {
            o.bridged = None;
            o.app = None;
            o.app_uuid = None;
        }
        let (a, b) = if owner {
            (uuid.to_owned(), other.clone())
        } else {
            (other.clone(), uuid.to_owned())
        };
        if let Some(o) = self.channels.get_mut(&a) {
            o.bridge_owner = false;
        }
        let cause = self
            .channels
            .get(uuid)
            .and_then(|c| c.hangup_cause)
            .unwrap_or("NORMAL_CLEARING");
        self.mark_unbridged(&a, &b, cause, "originator");
        self.mark_unbridged(&b, &a, cause, "originatee");
        self.emit_unbridge(&a, &b);
    }

    /// `uuid_park` of a leg in a `uuid_bridge` bridge: it parks (no
    /// EXECUTE of park); the other leg, its bridge gone, goes back to
    /// CS_EXECUTE.
    pub(crate) fn uuid_unbridge_park(&mut self, uuid: &str) {
        let other = self.channels.get(uuid).and_then(|c| c.bridged.clone());
        self.set_state(uuid, "CS_PARK");
        self.uuid_bridge_end(uuid);
        if let Some(c) = self.channels.get_mut(uuid) {
            c.parked = true;
        }
        self.emit("CHANNEL_PARK", Some(uuid), &[], &[], None);
        if let Some(o) = other {
            // Nothing is left for it to run: FreeSWITCH hangs it up.
            self.set_state(&o, "CS_EXECUTE");
            self.hangup(&o, "NORMAL_CLEARING", true);
        }
    }

    /// The bridge application's callee answered: the caller reports the
    /// bridge (its call state back to ACTIVE, CHANNEL_BRIDGE, CALL_UPDATE),
    /// the callee goes to CS_EXCHANGE_MEDIA; the SIP peers of self-calls
    /// get the display update (INFO).
    pub(crate) fn bridge_legs(&mut self, a: &str, b: &str) {
        if !self.channels.get(a).is_some_and(|c| c.answered()) {
            self.answer(a);
        }
        self.mark_bridged(a, b, "bridge");
        self.link_bridged(a, b);
        let callee = self
            .channels
            .get(b)
            .map(|c| format!("{};{};{}", c.uuid, c.name, c.cid_num))
            .unwrap_or_default();
        let causes = format!("{b};NONE");
        if let Some(c) = self.channels.get_mut(a) {
            c.app = Some("bridge".into());
            for (k, v) in [
                ("DIALSTATUS", "SUCCESS"),
                ("originate_disposition", "SUCCESS"),
                ("originated_legs", callee.as_str()),
                ("originate_causes", causes.as_str()),
                ("current_loop", "1"),
                ("total_loops", "1"),
            ] {
                c.set_var(k, v);
            }
        }
        self.set_call_state(a, "ACTIVE");
        self.emit(
            "CHANNEL_BRIDGE",
            Some(a),
            &[("bridge_a", a.to_owned()), ("bridge_b", b.to_owned())],
            &[],
            None,
        );
        self.emit("CALL_UPDATE", Some(a), &[], &[], None);
        self.set_state(b, "CS_EXCHANGE_MEDIA");
        self.emit("CALL_UPDATE", Some(b), &[], &[], None);
        if let Some(p) = self.sip_peer_here(a) {
            self.emit("CALL_UPDATE", Some(&p), &[], &[], None);
            self.emit("RECV_INFO", Some(&p), &[], &[], None);
        }
        if let Some(p) = self.sip_peer_here(b) {
            self.emit("RECV_INFO", Some(&p), &[], &[], None);
        }
    }

    /// The other end of `uuid`'s SIP dialog when it is a channel of this
    /// node (a self-call).
    fn sip_peer_here(&self, uuid: &str) -> Option<String> {
        let c = self.channels.get(uuid)?;
        if c.peer_node != Some(self.info.index) {
            return None;
        }
        self.dialogs
            .get(&(c.call_id.clone(), c.dir.other()))
            .cloned()
    }

    /// Starts an application on a channel (sendmsg execute, uuid_broadcast,
    /// an originate's `&app()`).
    pub(crate) fn run_app(&mut self, uuid: &str, app: &str, arg: &str, event_uuid: Option<String>) {
        if !self.channels.contains_key(uuid) {
            return;
        }
        let app_l = app.to_ascii_lowercase();
        // Applications that replace park end the park first.
        let was_parked = self.channels.get(uuid).is_some_and(|c| c.parked);
        let keeps_park = matches!(
            app_l.as_str(),
            "playback"
                | "record"
                | "set"
                | "export"
                | "send_dtmf"
                | "log"
                | "info"
                | "ring_ready"
                | "pre_answer"
                | "answer"
                | "respond"
                | "bridge"
                | "bert"
        );
        if was_parked && !keeps_park && app_l != "park" {
            self.app_complete(uuid, None);
        }
        let prev = self
            .channels
            .get(uuid)
            .map(|c| (c.app.clone(), c.app_data.clone(), c.app_uuid.clone()));
        if let Some(c) = self.channels.get_mut(uuid) {
            if !arg.is_empty() {
                c.set_var("current_application_data", arg);
            }
            c.app = Some(app.to_owned());
            c.app_data = (!arg.is_empty()).then(|| arg.to_owned());
            c.app_uuid = Some(event_uuid.unwrap_or_else(new_uuid));
            c.last_app = c.app.clone();
            c.last_app_data = c.app_data.clone();
        }
        let restore = |node: &mut Node| {
            if let (Some(c), Some((a, d, u))) = (node.channels.get_mut(uuid), prev.clone())
                && c.parked
            {
                c.app = a;
                c.app_data = d;
                c.app_uuid = u;
            }
        };
        if app_l == "park" {
            self.start_park(uuid);
            return;
        }
        self.emit("CHANNEL_EXECUTE", Some(uuid), &[], &[], None);
        match app_l.as_str() {
            "answer" => {
                self.answer(uuid);
                self.exec_complete(uuid, "_none_");
                restore(self);
            }
            "pre_answer" | "ring_ready" => {
                let media = app_l == "pre_answer";
                self.progress(uuid, media);
                self.exec_complete(uuid, "_none_");
                restore(self);
            }
            "hangup" => {
                let cause = if arg.is_empty() {
                    "NORMAL_CLEARING"
                } else {
                    util::cause(arg)
                };
                self.hangup(uuid, cause, true);
            }
            "respond" => {
                let code: u32 = arg
                    .split_whitespace()
                    .next()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(500);
                if let Some(c) = self.channels.get_mut(uuid) {
                    c.set_var("sip_term_status", &code.to_string());
                }
                match code {
                    180 | 183 => {
                        self.progress(uuid, code == 183);
                        self.exec_complete(uuid, "_none_");
                    }
                    200 => {
                        self.answer(uuid);
                        self.exec_complete(uuid, "_none_");
                    }
                    // A rejection runs inside the park, as in FreeSWITCH:
                    // HANGUP, its EXECUTE_COMPLETE, then UNPARK and the
                    // park's EXECUTE_COMPLETE.
                    _ => {
                        if self.hangup_start(uuid, sip_cause(code)) {
                            self.exec_complete(uuid, "_none_");
                            restore(self);
                            self.hangup_finish(uuid, true);
                        }
                    }
                }
            }
            "deflect" | "redirect" => {
                if let Some(c) = self.channels.get_mut(uuid) {
                    c.set_var("sip_refer_to", arg);
                }
                self.hangup(uuid, "BLIND_TRANSFER", true);
            }
            "set" | "export" => {
                if let Some((k, v)) = arg.split_once('=')
                    && let Some(c) = self.channels.get_mut(uuid)
                {
                    c.set_var(k, v);
                }
                self.exec_complete(uuid, "_none_");
                restore(self);
            }
            "playback" | "endless_playback" => self.start_playback(uuid, arg),
            "record" => {
                if let Some(c) = self.channels.get_mut(uuid) {
                    c.recordings
                        .push(arg.split_whitespace().next().unwrap_or("").to_owned());
                }
                self.emit(
                    "RECORD_START",
                    Some(uuid),
                    &[("record_file_path", arg.to_owned())],
                    &[],
                    None,
                );
            }
            "echo" | "sleep" | "bert" | "bert_test" => {
                if app_l == "sleep" {
                    let ms: u64 = arg.parse().unwrap_or(0);
                    let generation = self.channels.get(uuid).map_or(0, |c| c.generation);
                    self.schedule(
                        Duration::from_millis(ms),
                        Timer::AppDone(uuid.to_owned(), generation),
                    );
                } else if app_l.starts_with("bert")
                    && let Some(c) = self.channels.get_mut(uuid)
                {
                    c.set_var("bert_stats_sync_lost", "0");
                    c.set_var("bert_stats_sync_lost_percent", "0.00");
                }
                // Runs until broken or hung up.
            }
            "send_dtmf" => {
                self.send_dtmf(uuid, arg);
                self.exec_complete(uuid, "_none_");
                restore(self);
            }
            "log" | "info" | "sched_hangup" => {
                self.exec_complete(uuid, "_none_");
                restore(self);
            }
            "transfer" => {
                self.exec_complete(uuid, "_none_");
                self.set_state(uuid, "CS_EXECUTE");
                self.start_park(uuid);
            }
            "bridge" => {
                // The caller waits in RING_WAIT while the callee is dialled.
                if self.channels.get(uuid).is_some_and(|c| c.answered()) {
                    self.set_call_state(uuid, "RING_WAIT");
                }
                self.start_bridge(uuid, arg)
            }
            _ => {
                // An application that does not exist hangs the channel up.
                self.hangup(uuid, "DESTINATION_OUT_OF_ORDER", true);
            }
        }
    }

    fn exec_complete(&mut self, uuid: &str, response: &str) {
        self.emit(
            "CHANNEL_EXECUTE_COMPLETE",
            Some(uuid),
            &[],
            &[("Application-Response".into(), response.to_owned())],
            None,
        );
        if let Some(c) = self.channels.get_mut(uuid)
            && !c.parked
        {
            c.app = None;
            c.app_data = None;
            c.app_uuid = None;
        }
    }

    /// `uuid_pre_answer`: early media.
    pub(crate) fn pre_answer(&mut self, uuid: &str) {
        self.progress(uuid, true);
    }

    fn progress(&mut self, uuid: &str, media: bool) {
        let Some(c) = self.channels.get_mut(uuid) else {
            return;
        };
        if c.answered() {
            return;
        }
        let now = util::now_us();
        let stamp = util::date_local(now);
        if media {
            c.progress_media_us = now;
            c.answer_state = "early";
            c.set_var("progress_media_stamp", &stamp);
            c.set_var("endpoint_disposition", "EARLY MEDIA");
        } else {
            c.progress_us = now;
            c.set_var("progress_stamp", &stamp);
        }
        sip_dialog_vars(c);
        let (dir, peer, call_id) = (c.dir, c.peer_node, c.call_id.clone());
        let name = if media {
            "CHANNEL_PROGRESS_MEDIA"
        } else {
            "CHANNEL_PROGRESS"
        };
        self.emit(name, Some(uuid), &[], &[], None);
        self.set_call_state(uuid, if media { "EARLY" } else { "RINGING" });
        if dir == Dir::Inbound
            && let Some(n) = peer
        {
            self.send_peer(n, PeerMsg::Progress { call_id, media });
        }
    }

    fn start_playback(&mut self, uuid: &str, file: &str) {
        if !self.channels.get(uuid).is_some_and(|c| c.answered()) {
            self.progress(uuid, true);
        }
        let generation = {
            let Some(c) = self.channels.get_mut(uuid) else {
                return;
            };
            c.generation += 1;
            c.playback = Some(file.to_owned());
            c.playback_started_us = util::now_us();
            c.set_var("current_loop", "1");
            c.set_var("total_loops", "1");
            c.generation
        };
        self.emit(
            "PLAYBACK_START",
            Some(uuid),
            &[("playback_file_path", file.to_owned())],
            &[],
            None,
        );
        // A tone stream with a loop count (`L=N;` in teletone's script, or
        // `loops=`) ends; without one it runs until broken or hung up.
        if file.starts_with("tone_stream://")
            && !file.contains("loops=")
            && !file.contains(";loops")
            && !file.contains("://L=")
            && !file.contains(";L=")
        {
            return;
        }
        if file.starts_with("silence_stream://")
            || file.starts_with("tone_stream://")
            || !file.is_empty()
        {
            let ms = file
                .strip_prefix("silence_stream://")
                .and_then(|s| s.split(',').next())
                .and_then(|s| s.parse().ok())
                .unwrap_or(self.knobs.playback_ms);
            self.schedule(
                Duration::from_millis(ms),
                Timer::PlaybackDone(uuid.to_owned(), generation),
            );
        }
    }

    /// Ends a playback (done or broken).
    pub(crate) fn stop_playback(&mut self, uuid: &str, status: &str) -> bool {
        let Some(file) = self.channels.get_mut(uuid).and_then(|c| c.playback.take()) else {
            return false;
        };
        // What FreeSWITCH reports of the played part (8 kHz samples).
        if let Some(c) = self.channels.get_mut(uuid) {
            let ms = util::now_us().saturating_sub(c.playback_started_us) / 1000;
            let samples = (ms * 8).to_string();
            c.set_var("playback_ms", &ms.to_string());
            c.set_var("playback_samples", &samples);
            c.set_var("playback_seconds", &(ms / 1000).to_string());
            c.set_var("playback_last_offset_pos", &samples);
        }
        self.emit(
            "PLAYBACK_STOP",
            Some(uuid),
            &[
                ("playback_file_path", file),
                ("playback_status", status.to_owned()),
            ],
            &[],
            None,
        );
        let parked = self.channels.get(uuid).is_some_and(|c| c.parked);
        self.emit(
            "CHANNEL_EXECUTE_COMPLETE",
            Some(uuid),
            &[],
            &[("Application-Response".into(), "FILE PLAYED".into())],
            None,
        );
        if let Some(c) = self.channels.get_mut(uuid) {
            c.generation += 1;
            if parked {
                c.app = Some("park".into());
                c.app_data = None;
            } else {
                c.app = None;
                c.app_data = None;
            }
        }
        // A broadcast with `!cause` hangs up afterwards.
        if let Some(c) = self.channels.get(uuid)
            && let Some(cause) = c.var("switchy_mock_hangup_after").map(str::to_owned)
        {
            self.hangup(uuid, util::cause(&cause), true);
        }
        true
    }

    fn start_bridge(&mut self, uuid: &str, arg: &str) {
        let dialstr = dial::parse_dial_string(arg);
        let id = self.next_id;
        self.next_id += 1;
        let timeout_s = self.knobs.originate_timeout_s;
        let (cid_name, cid_num) = self
            .channels
            .get(uuid)
            .map(|c| (c.cid_name.clone(), c.cid_num.clone()))
            .unwrap_or_default();
        let mut globals = dialstr.globals;
        // The A leg's X- headers travel on (as sofia does for bridged calls
        // only when asked; the mock passes them for call tracking).
        if let Some(c) = self.channels.get(uuid) {
            for (k, v) in &c.vars {
                if k.starts_with("sip_h_X-") && !globals.iter().any(|(g, _)| g == k) {
                    globals.push((k.clone(), v.clone()));
                }
            }
        }
        self.originates.insert(
            id,
            Originate {
                conn: None,
                done: None,
                job: None,
                api_arg: arg.to_owned(),
                groups: dialstr.groups.into_iter().collect::<VecDeque<_>>(),
                globals,
                dest: None,
                bridge_from: Some(uuid.to_owned()),
                cid_name: Some(cid_name),
                cid_num: Some(cid_num),
                legs: Vec::new(),
                last_cause: "NORMAL_CLEARING".into(),
                answer_after_ms: None,
                forced_cause: None,
            },
        );
        self.schedule(Duration::from_secs(timeout_s), Timer::OriginateTimeout(id));
        self.next_group(id);
    }

    /// Sends DTMF from a leg: its peer (SIP dialog or bridge) receives it.
    pub(crate) fn send_dtmf(&mut self, uuid: &str, digits: &str) {
        let Some(c) = self.channels.get(uuid) else {
            return;
        };
        let clean: String = digits
            .split('+')
            .map(|part| part.split('@').next().unwrap_or(""))
            .collect::<String>()
            .chars()
            .filter(|ch| ch.is_ascii_digit() || matches!(ch, '*' | '#' | 'A'..='D' | 'a'..='d'))
            .collect();
        if let Some(b) = c.bridged.clone() {
            self.receive_dtmf(&b, &clean);
        } else if let Some(n) = c.peer_node {
            let msg = PeerMsg::Dtmf {
                call_id: c.call_id.clone(),
                dir: c.dir.other(),
                digits: clean,
            };
            self.send_peer(n, msg);
        }
    }

    fn receive_dtmf(&mut self, uuid: &str, digits: &str) {
        for d in digits.chars() {
            self.emit(
                "DTMF",
                Some(uuid),
                &[("dtmf_digit", d.to_string())],
                &[],
                None,
            );
        }
    }

    /// `sendmsg` to a channel.
    pub(crate) fn sendmsg(&mut self, uuid: &str, cmd: &ClientCommand) {
        let h = &cmd.headers;
        let call_command = h.get("call-command").unwrap_or("").to_ascii_lowercase();
        match call_command.as_str() {
            "execute" => {
                let app = h.get("execute-app-name").unwrap_or("").to_owned();
                let arg = h
                    .get("execute-app-arg")
                    .map(str::to_owned)
                    .or_else(|| {
                        cmd.body
                            .as_ref()
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                    })
                    .unwrap_or_default();
                let ev = h.get("Event-UUID").map(str::to_owned);
                self.run_app(uuid, &app, &arg, ev);
            }
            "hangup" => {
                let cause = util::cause(h.get("hangup-cause").unwrap_or("NORMAL_CLEARING"));
                self.hangup(uuid, cause, true);
            }
            _ => {}
        }
    }

    /// Timer dispatch.
    pub(crate) fn timer(&mut self, t: Timer) {
        match t {
            Timer::Heartbeat => {
                let up = self.started.elapsed();
                let s = up.as_secs();
                let extra = [
                    (
                        "up_time",
                        format!(
                            "0 years, 0 days, {} hours, {} minutes, {} seconds, {} milliseconds, 0 microseconds",
                            s / 3600,
                            s / 60 % 60,
                            s % 60,
                            up.subsec_millis()
                        ),
                    ),
                    ("uptime_msec", up.as_millis().to_string()),
                    ("session_count", self.channels.len().to_string()),
                    ("max_sessions", self.knobs.max_sessions.to_string()),
                    ("sps", self.knobs.sessions_per_second.to_string()),
                    ("sps_last", self.sps_window.1.to_string()),
                    ("since_startup", self.since_startup.to_string()),
                    ("peak", self.peak.to_string()),
                    (
                        "task_runtime",
                        (util::now_us() / 1_000_000 + self.heartbeat.as_secs()).to_string(),
                    ),
                ];
                self.emit("HEARTBEAT", None, &extra, &[], None);
                self.emit("RE_SCHEDULE", None, &extra, &[], None);
                self.schedule(self.heartbeat, Timer::Heartbeat);
            }
            Timer::OriginateTimeout(id) => {
                let Some(o) = self.originates.get_mut(&id) else {
                    return;
                };
                o.groups.clear();
                o.last_cause = "NO_ANSWER".into();
                let legs = o.legs.clone();
                if legs.is_empty() {
                    self.fail_originate(id, "NO_ANSWER");
                }
                for l in legs {
                    self.hangup(&l, "NO_ANSWER", true);
                }
            }
            Timer::AutoAnswer(u) => {
                self.answer(&u);
            }
            Timer::ScenarioAnswer(u) => {
                // Scripted: the callee answers. For a call looped back into the
                // mock that is the far inbound leg; else this leg directly.
                let Some(c) = self.channels.get(&u) else {
                    return;
                };
                match c.peer_node {
                    Some(n) if c.dir == Dir::Outbound => {
                        let call_id = c.call_id.clone();
                        self.send_peer(n, PeerMsg::AnswerCallee { call_id });
                    }
                    _ => {
                        self.answer(&u);
                    }
                }
            }
            Timer::External(u) => {
                if let Some(cause) = self.channels.get(&u).and_then(|c| c.unreachable) {
                    self.hangup(&u, cause, false);
                    return;
                }
                let outcome = self.knobs.external.clone();
                match outcome {
                    ExternalOutcome::Answer => {
                        self.answer(&u);
                    }
                    ExternalOutcome::Busy => self.hangup(&u, "USER_BUSY", false),
                    ExternalOutcome::Fail { cause } => self.hangup(&u, util::cause(&cause), false),
                    ExternalOutcome::NoAnswer => {}
                }
            }
            Timer::PlaybackDone(u, generation) => {
                if self
                    .channels
                    .get(&u)
                    .is_some_and(|c| c.generation == generation)
                {
                    self.stop_playback(&u, "done");
                }
            }
            Timer::AppDone(u, generation) => {
                let Some(c) = self.channels.get(&u) else {
                    return;
                };
                if c.generation == generation {
                    let ends = c.dialplan_app == Some(generation);
                    self.exec_complete(&u, "_none_");
                    if ends {
                        self.hangup(&u, "NORMAL_CLEARING", true);
                    }
                }
            }
            Timer::Hangup(u, cause, task, runtime) => {
                self.emit_task("DEL_SCHEDULE", task, &u, runtime);
                self.hangup(&u, util::cause(&cause), true)
            }
            Timer::Api(cmd) => {
                let (c, a) = cmd.split_once(' ').unwrap_or((&cmd, ""));
                let (c, a) = (c.to_owned(), a.to_owned());
                let _ = self.api(&c, &a, None);
            }
            Timer::InboundCall(inv) => self.invite(*inv),
            Timer::RemoteHangup(u) => self.hangup(&u, "NORMAL_CLEARING", false),
            Timer::Peer(p) => self.peer(p),
        }
    }

    /// Signalling from a peer leg.
    pub(crate) fn peer(&mut self, p: PeerMsg) {
        match p {
            PeerMsg::Invite(inv) => self.invite(*inv),
            PeerMsg::Answered { call_id } => {
                if let Some(u) = self.dialogs.get(&(call_id, Dir::Outbound)).cloned() {
                    self.answer(&u);
                }
            }
            PeerMsg::Progress { call_id, media } => {
                if let Some(u) = self.dialogs.get(&(call_id, Dir::Outbound)).cloned() {
                    self.progress(&u, media);
                    // Early media ends the originate as an answer would
                    // (unless ignore_early_media).
                    let wins = media
                        && self.channels.get(&u).is_some_and(|c| {
                            c.originate.is_some() && c.var("ignore_early_media") != Some("true")
                        });
                    if wins {
                        self.emit("CALL_UPDATE", Some(&u), &[], &[], None);
                        if let Some(c) = self.channels.get_mut(&u) {
                            c.early_won = true;
                        }
                        self.outbound_answered(&u);
                    }
                }
            }
            PeerMsg::Rejected { call_id, cause } => {
                if let Some(u) = self.dialogs.get(&(call_id, Dir::Outbound)).cloned() {
                    self.hangup(&u, util::cause(&cause), false);
                }
            }
            PeerMsg::AnswerCallee { call_id } => {
                if let Some(u) = self.dialogs.get(&(call_id, Dir::Inbound)).cloned() {
                    self.answer(&u);
                }
            }
            PeerMsg::Bye {
                call_id,
                dir,
                cause,
            } => {
                if let Some(u) = self.dialogs.get(&(call_id, dir)).cloned() {
                    self.hangup(&u, util::cause(&cause), false);
                }
            }
            PeerMsg::Dtmf {
                call_id,
                dir,
                digits,
            } => {
                if let Some(u) = self.dialogs.get(&(call_id, dir)).cloned() {
                    self.receive_dtmf(&u, &digits);
                }
            }
        }
    }
}

/// FreeSWITCH's SIP response → hangup cause mapping (section 11).
/// What sofia keeps of a SIP dialog once the far end replied (a self-call's
/// legs): its To tag, CSeq and the media address it advertised.
fn sip_dialog_vars(c: &mut Channel) {
    if c.peer_node.is_none() || c.var("sip_to_tag").is_some() {
        return;
    }
    let tag: String = new_uuid()
        .chars()
        .filter(|ch| ch.is_ascii_alphanumeric())
        .take(13)
        .collect();
    c.set_var("sip_to_tag", &tag);
    let cseq = c.created_seq.to_string();
    c.set_var("sip_cseq", &cseq);
    let ip = c.network_addr.clone();
    c.set_var("advertised_media_ip", &ip);
}

/// FreeSWITCH's switch_true: yes, on, true, enabled, active, allow, or a
/// non-zero number.
fn util_true(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "yes" | "on" | "true" | "t" | "enabled" | "active" | "allow"
    ) || v.parse::<i64>().is_ok_and(|n| n != 0)
}

pub(crate) fn sip_cause(code: u32) -> &'static str {
    match code {
        404 => "UNALLOCATED_NUMBER",
        485 | 604 => "NO_ROUTE_DESTINATION",
        486 | 600 => "USER_BUSY",
        480 => "NO_USER_RESPONSE",
        401 | 402 | 403 | 407 | 603 | 608 => "CALL_REJECTED",
        410 => "NUMBER_CHANGED",
        484 => "INVALID_NUMBER_FORMAT",
        400 | 481 | 500 | 503 => "NORMAL_TEMPORARY_FAILURE",
        405 => "SERVICE_UNAVAILABLE",
        488 | 606 => "INCOMPATIBLE_DESTINATION",
        408 | 504 => "RECOVERY_ON_TIMER_EXPIRE",
        487 => "ORIGINATOR_CANCEL",
        502 => "NETWORK_OUT_OF_ORDER",
        _ => "NORMAL_UNSPECIFIED",
    }
}

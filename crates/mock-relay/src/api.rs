//! API commands (`api` / `bgapi`), with FreeSWITCH's exact reply texts
//! (section 12 of the ESL reference).

use crate::dial::split_args;
use crate::node::{Dir, Node, Timer, new_uuid};
use crate::util;
use std::time::Duration;
use switchy_protocol::esl::{Event, EventFormat};

/// Every API command the mock implements (the drift test compares this
/// with `relay-protocol/esl/commands`).
pub const API_COMMANDS: &[&str] = &[
    "originate",
    "uuid_answer",
    "uuid_bridge",
    "uuid_kill",
    "uuid_broadcast",
    "uuid_record",
    "uuid_setvar",
    "uuid_setvar_multi",
    "uuid_getvar",
    "uuid_park",
    "uuid_transfer",
    "uuid_send_dtmf",
    "uuid_break",
    "uuid_fileman",
    "uuid_deflect",
    "uuid_dump",
    "uuid_exists",
    "uuid_hold",
    "uuid_pre_answer",
    "create_uuid",
    "uuid_display",
    "sched_hangup",
    "sched_del",
    "fsctl",
    "console",
    "sched_api",
    "hupall",
    "status",
    "show",
    "global_getvar",
    "version",
    "sofia",
    "log",
    "echo",
];

/// Every socket-level command the mock implements.
pub const ESL_COMMANDS: &[&str] = &[
    "auth",
    "userauth",
    "api",
    "bgapi",
    "event",
    "nixevent",
    "noevents",
    "filter",
    "myevents",
    "divert_events",
    "sendevent",
    "sendmsg",
    "linger",
    "nolinger",
    "log",
    "nolog",
    "exit",
];

const SHOW_COLUMNS: &[&str] = &[
    "uuid",
    "direction",
    "created",
    "created_epoch",
    "name",
    "state",
    "cid_name",
    "cid_num",
    "ip_addr",
    "dest",
    "application",
    "application_data",
    "dialplan",
    "context",
    "read_codec",
    "read_rate",
    "read_bit_rate",
    "write_codec",
    "write_rate",
    "write_bit_rate",
    "secure",
    "hostname",
    "presence_id",
    "presence_data",
    "accountcode",
    "callstate",
    "callee_name",
    "callee_num",
    "callee_direction",
    "call_uuid",
    "sent_callee_name",
    "sent_callee_num",
    "initial_cid_name",
    "initial_cid_num",
    "initial_ip_addr",
    "initial_dest",
    "initial_dialplan",
    "initial_context",
];

impl Node {
    /// Runs an API command and returns its output (the api/response body or
    /// BACKGROUND_JOB body). Fires the API event.
    pub(crate) fn api(&mut self, cmd: &str, args: &str, conn: Option<u64>) -> String {
        let _ = conn;
        let scenario = self.cluster.scenarios.take(cmd, self.info.index);
        if let Some(usage) = self.cluster.schemas.check_api(cmd, args) {
            self.api_event(cmd, args);
            return usage;
        }
        let out = match &scenario {
            Some(s) if s.reply.is_some() => s.reply.clone().unwrap_or_default(),
            _ => self.api_inner(cmd, args, scenario.as_ref()),
        };
        if cmd != "hupall" {
            self.api_event(cmd, args);
        }
        if let Some(s) = scenario {
            for ev in s.events {
                let mut e = Event::default();
                for (k, v) in ev {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    e.headers.push(&k, v);
                }
                let name = e.event_name().unwrap_or("CUSTOM").to_owned();
                let body = e.encode(EventFormat::Plain);
                self.deliver(&name, e.subclass(), e.unique_id(), &body, None, false);
            }
        }
        out
    }

    fn api_inner(
        &mut self,
        cmd: &str,
        args: &str,
        scenario: Option<&crate::scenario::Scenario>,
    ) -> String {
        let a = split_args(args);
        let arg = |i: usize| a.get(i).map(String::as_str).unwrap_or("");
        let exists = |n: &Node, u: &str| n.channels.contains_key(u);
        match cmd {
            "status" => self.status_text(),
            "version" => "FreeSWITCH Version 1.11.3-dev+mock-relay 64bit (-dev 64bit)\n".into(),
            "echo" => args.to_owned(),
            "global_getvar" => match arg(0) {
                "" => format!(
                    "hostname={}\nlocal_ip_v4={}\ncore_uuid={}\nswitchname={}\ndomain={}\n",
                    self.info.hostname,
                    self.info.ip,
                    self.core_uuid,
                    self.info.hostname,
                    self.info.ip
                ),
                "local_ip_v4" | "domain" | "bind_server_ip" | "external_rtp_ip"
                | "external_sip_ip" => self.info.ip.clone(),
                "hostname" | "switchname" => self.info.hostname.clone(),
                "core_uuid" => self.core_uuid.clone(),
                "local_ip_v6" => "::1".into(),
                _ => String::new(),
            },
            "sofia" => {
                if arg(0) != "status" {
                    return "-ERR Usage: sofia status\n".into();
                }
                let line = "=".repeat(97);
                let mut s = format!(
                    "{:>25}\t{}\t  {:>40}\t{}\n{line}\n",
                    "Name", "   Type", "Data", "State"
                );
                for (name, port) in &self.info.profiles {
                    let inuse = self
                        .channels
                        .values()
                        .filter(|c| &c.profile == name)
                        .count();
                    let url = format!("sip:mod_sofia@{}:{port}", self.info.ip);
                    s.push_str(&format!(
                        "{name:>25}\t{}\t  {url:>40}\t{} ({inuse})\n",
                        "profile", "RUNNING"
                    ));
                }
                s.push_str(&format!(
                    "{line}\n{} profiles 0 aliases\n",
                    self.info.profiles.len()
                ));
                s
            }
            "show" => self.show(&a),
            "log" => {
                let (lvl, msg) = args.split_once(' ').unwrap_or((args, ""));
                let level = LOG_LEVELS
                    .iter()
                    .position(|n| n.eq_ignore_ascii_case(lvl))
                    .map(|p| p as u8)
                    .or_else(|| lvl.parse().ok())
                    .unwrap_or(7);
                self.log_line(level, msg);
                "+OK\n".into()
            }
            "hupall" => {
                let cause = if arg(0).is_empty() {
                    "MANAGER_REQUEST"
                } else {
                    util::cause(arg(0))
                };
                let pairs: Vec<(String, String)> = a
                    .get(1..)
                    .unwrap_or(&[])
                    .chunks(2)
                    .filter(|c| c.len() == 2)
                    .map(|c| (c[0].clone(), c[1].clone()))
                    .collect();
                let mut victims: Vec<(u64, String)> = self
                    .channels
                    .values()
                    .filter(|c| pairs.iter().all(|(k, v)| c.var(k) == Some(v.as_str())))
                    .map(|c| (c.created_seq, c.uuid.clone()))
                    .collect();
                victims.sort();
                // Every channel's hangup starts first; then each channel's
                // own thread finishes, newest first (as in the capture).
                for (_, u) in &victims {
                    self.hangup_start(u, cause);
                }
                self.api_event("hupall", args);
                for (_, u) in victims.iter().rev() {
                    self.hangup_finish(u, true);
                }
                match pairs.len() {
                    0 => format!("+OK hangup all channels with cause {cause}\n"),
                    1 => format!(
                        "+OK hangup all channels matching [{}]=[{}] with cause: {cause}\n",
                        pairs[0].0, pairs[0].1
                    ),
                    _ => {
                        let m: String = pairs
                            .iter()
                            .map(|(k, v)| format!("[{k}]=[{v}]"))
                            .collect::<Vec<_>>()
                            .join("...");
                        format!("+OK hangup all channels matching {m} with cause: {cause}\n")
                    }
                }
            }
            "uuid_answer" => {
                if self.answer(arg(0)) {
                    "+OK\n".into()
                } else {
                    "-ERROR\n".into()
                }
            }
            "uuid_pre_answer" => {
                if exists(self, arg(0)) {
                    self.pre_answer(arg(0));
                    "+OK\n".into()
                } else {
                    "-ERROR\n".into()
                }
            }
            "uuid_display" => {
                if exists(self, arg(0)) && a.len() >= 2 {
                    "+OK Success\n".into()
                } else {
                    "-ERR Operation failed\n".into()
                }
            }
            // genesis asks for the UUID it then originates with.
            "create_uuid" => new_uuid(),
            "fsctl" => {
                let v: Vec<&str> = a.iter().map(String::as_str).collect();
                self.fsctl(&v)
            }
            "console" => match (arg(0), arg(1)) {
                ("loglevel", lvl) => {
                    if let Some(l) = log_level(lvl) {
                        self.console_level = l;
                    }
                    format!(
                        "+OK console log level set to {}\n",
                        LOG_LEVELS[self.console_level as usize]
                    )
                }
                ("colorize", _) => "+OK console color enabled\n".into(),
                _ => "-USAGE: loglevel [level]|colorize [on|toggle|off]|uuid [on|toggle|off]|json [on|toggle|off]\n".into(),
            },
            "uuid_exists" => {
                if exists(self, arg(0)) {
                    "true".into()
                } else {
                    "false".into()
                }
            }
            "uuid_kill" => {
                if arg(0).is_empty() {
                    return "-USAGE: <uuid> [cause]\n".into();
                }
                if !exists(self, arg(0)) {
                    return "-ERR No such channel!\n".into();
                }
                let cause = if arg(1).is_empty() {
                    "NORMAL_CLEARING"
                } else {
                    util::cause(arg(1))
                };
                self.hangup(arg(0), cause, true);
                "+OK\n".into()
            }
            "uuid_bridge" => {
                if a.len() < 2 {
                    return "-USAGE: <uuid> <other_uuid>\n".into();
                }
                if !exists(self, arg(0)) || !exists(self, arg(1)) || arg(0) == arg(1) {
                    return "-ERR Invalid uuid\n".into();
                }
                let (x, y) = (arg(0).to_owned(), arg(1).to_owned());
                self.uuid_bridge(&x, &y);
                format!("+OK {y}\n")
            }
            "uuid_broadcast" => {
                if a.len() < 2 {
                    return "-USAGE: <uuid> <path> [aleg|bleg|holdb|both]\n".into();
                }
                if !exists(self, arg(0)) {
                    return "-ERR invalid uuid\n".into();
                }
                let u = arg(0).to_owned();
                let legs: Vec<String> = match arg(2) {
                    "bleg" => self
                        .channels
                        .get(&u)
                        .and_then(|c| c.bridged.clone())
                        .into_iter()
                        .collect(),
                    "both" => std::iter::once(u.clone())
                        .chain(self.channels.get(&u).and_then(|c| c.bridged.clone()))
                        .collect(),
                    _ => vec![u.clone()],
                };
                let path = arg(1).to_owned();
                for leg in legs {
                    self.broadcast(&leg, &path);
                }
                "+OK Message sent\n".into()
            }
            "uuid_record" => {
                if a.len() < 3 {
                    return "-USAGE: <uuid> [start|stop|mask|unmask] <path> [<limit>] [<recording_vars>]\n".into();
                }
                if !exists(self, arg(0)) {
                    return "-ERR Cannot locate session!\n".into();
                }
                let (u, action, path) = (
                    arg(0).to_owned(),
                    arg(1).to_ascii_lowercase(),
                    arg(2).to_owned(),
                );
                match action.as_str() {
                    "start" => {
                        if let Some(c) = self.channels.get_mut(&u) {
                            c.recordings.push(path.clone());
                        }
                        self.emit("RECORD_START", Some(&u), &[("record_file_path", path.clone())], &[], None);
                        self.emit("MEDIA_BUG_START", Some(&u), &[("media_bug_function", "session_record".into()), ("media_bug_target", path)], &[], None);
                        "+OK Success\n".into()
                    }
                    "stop" => {
                        let stopped: Vec<String> = match self.channels.get_mut(&u) {
                            Some(c) => {
                                let (stop, keep): (Vec<String>, Vec<String>) =
                                    c.recordings.drain(..).partition(|r| path == "all" || *r == path);
                                c.recordings = keep;
                                stop
                            }
                            None => Vec::new(),
                        };
                        if stopped.is_empty() {
                            return "-ERR Cannot stop record session!\n".into();
                        }
                        for r in stopped {
                            if let Some(c) = self.channels.get_mut(&u) {
                                c.set_var("record_seconds", "1");
                                c.set_var("record_ms", "1000");
                                c.set_var("record_samples", "8000");
                                c.set_var("record_completion_cause", "success");
                                c.set_var("record_file_size", "44");
                            }
                            self.emit(
                                "RECORD_STOP",
                                Some(&u),
                                &[
                                    ("record_file_path", r.clone()),
                                    ("record_completion_cause", "success".into()),
                                ],
                                &[],
                                None,
                            );
                            self.emit("MEDIA_BUG_STOP", Some(&u), &[("media_bug_function", "session_record".into()), ("media_bug_target", r)], &[], None);
                        }
                        "+OK Success\n".into()
                    }
                    "mask" | "unmask" => {
                        let recording = self.channels.get(&u).is_some_and(|c| c.recordings.iter().any(|r| *r == path || path == "all"));
                        if recording {
                            "+OK Success\n".into()
                        } else if action == "mask" {
                            "-ERR Cannot mask recording session!\n".into()
                        } else {
                            "-ERR Cannot unmask recording session!\n".into()
                        }
                    }
                    _ => "-USAGE: <uuid> [start|stop|mask|unmask] <path> [<limit>] [<recording_vars>]\n".into(),
                }
            }
            "uuid_setvar" => {
                if a.len() < 2 {
                    return "-USAGE: <uuid> <var> [value]\n".into();
                }
                let Some(c) = self.channels.get_mut(arg(0)) else {
                    return "-ERR No such channel!\n".into();
                };
                // The value is the rest of the line.
                let rest = args.splitn(3, ' ').nth(2).unwrap_or("");
                if rest.is_empty() {
                    c.vars.retain(|(k, _)| k != arg(1));
                } else {
                    c.set_var(arg(1), rest);
                }
                "+OK\n".into()
            }
            "uuid_setvar_multi" => {
                if a.len() < 2 {
                    return "-USAGE: <uuid> <var>=<value>;<var>=<value>...\n".into();
                }
                let Some(c) = self.channels.get_mut(arg(0)) else {
                    return "-ERR No such channel!\n-USAGE: <uuid> <var>=<value>;<var>=<value>...\n".into();
                };
                let rest = args.split_once(' ').map_or("", |(_, r)| r);
                for kv in rest.split(';') {
                    if let Some((k, v)) = kv.split_once('=') {
                        c.set_var(k.trim(), v);
                    }
                }
                "+OK\n".into()
            }
            "uuid_getvar" => {
                if a.len() < 2 {
                    return "-USAGE: <uuid> <var>\n".into();
                }
                let Some(c) = self.channels.get(arg(0)) else {
                    return "-ERR No such channel!\n".into();
                };
                match arg(1) {
                    "uuid" => c.uuid.clone(),
                    "call_uuid" => c.uuid.clone(),
                    "sip_call_id" => c.call_id.clone(),
                    "hangup_cause" => c.hangup_cause.unwrap_or("_undef_").to_owned(),
                    v => c.var(v).unwrap_or("_undef_").to_owned(),
                }
            }
            "uuid_park" => {
                if a.is_empty() {
                    return "-USAGE: <uuid>\n".into();
                }
                if !exists(self, arg(0)) {
                    return "-ERR No such channel!\n".into();
                }
                let u = arg(0).to_owned();
                if self.uuid_bridged(&u) {
                    self.uuid_unbridge_park(&u);
                } else if !self.channels.get(&u).is_some_and(|c| c.parked) {
                    self.app_complete(&u, None);
                    self.set_state(&u, "CS_PARK");
                    self.start_park(&u);
                }
                "+OK\n".into()
            }
            "uuid_transfer" => {
                if a.len() < 2 {
                    return "-USAGE: <uuid> [-bleg|-both] <dest-exten> [<dialplan>] [<context>]\n"
                        .into();
                }
                if !exists(self, arg(0)) {
                    return "-ERR No such channel!\n".into();
                }
                let u = arg(0).to_owned();
                let dest = if arg(1).starts_with('-') {
                    arg(2)
                } else {
                    arg(1)
                }
                .to_owned();
                self.app_complete(&u, None);
                if let Some(c) = self.channels.get_mut(&u) {
                    c.dest = dest;
                }
                // The leg routes again: RINGING while it does, then back to
                // ACTIVE if it was answered.
                let answered = self.channels.get(&u).is_some_and(|c| c.answered());
                self.set_call_state(&u, "RINGING");
                self.set_state(&u, "CS_ROUTING");
                if answered {
                    self.set_call_state(&u, "ACTIVE");
                }
                self.set_state(&u, "CS_EXECUTE");
                self.start_park(&u);
                "+OK\n".into()
            }
            "uuid_send_dtmf" => {
                if a.len() < 2 {
                    return "-USAGE: <uuid> <dtmf_data>\n".into();
                }
                if !exists(self, arg(0)) {
                    return "-ERR Cannot locate session!\n".into();
                }
                let u = arg(0).to_owned();
                // `1234 @100` (or `1234@100`): digits, then each tone's
                // duration; the reply repeats what was asked.
                let asked = a[1..].join(" ");
                let digits = arg(1).split('@').next().unwrap_or("").to_owned();
                let ms: u64 = a[1..]
                    .iter()
                    .find_map(|x| x.split_once('@').and_then(|(_, d)| d.parse().ok()))
                    .unwrap_or(250);
                if let Some(c) = self.channels.get_mut(&u) {
                    c.set_var("last_dtmf_duration", &(ms * 8).to_string());
                }
                let sent = scenario
                    .and_then(|s| s.dtmf.clone())
                    .unwrap_or_else(|| digits.clone());
                self.send_dtmf(&u, &sent);
                format!("+OK {u} sent DTMF {asked}.\n")
            }
            // The file a channel is playing: pause (a toggle), volume:N,
            // speed:N, seek:…, restart, stop. FreeSWITCH answers +OK when a
            // file is open on the channel, whatever the command.
            "uuid_fileman" => {
                if a.len() < 2 {
                    return "-USAGE: <uuid> <cmd>:<val>\n".into();
                }
                if !exists(self, arg(0)) {
                    return "-ERR No such channel!\n".into();
                }
                let playing = self
                    .channels
                    .get(arg(0))
                    .is_some_and(|c| c.playback.is_some());
                if playing {
                    "+OK\n".into()
                } else {
                    "-ERR No file handle!\n".into()
                }
            }
            "uuid_break" => {
                if a.is_empty() {
                    return "-USAGE: <uuid> [all]\n".into();
                }
                if !exists(self, arg(0)) {
                    return "-ERR No such channel!\n".into();
                }
                let u = arg(0).to_owned();
                if !self.stop_playback(&u, "break") {
                    let app = self.channels.get(&u).and_then(|c| c.app.clone());
                    if app.as_deref().is_some_and(|a| a != "park" && a != "bridge") {
                        self.emit(
                            "CHANNEL_EXECUTE_COMPLETE",
                            Some(&u),
                            &[],
                            &[("Application-Response".into(), "_none_".into())],
                            None,
                        );
                        if let Some(c) = self.channels.get_mut(&u) {
                            c.app = None;
                            c.generation += 1;
                        }
                    }
                }
                "+OK\n".into()
            }
            "uuid_deflect" => {
                if a.len() < 2 {
                    return "-USAGE: <uuid> <uri>\n".into();
                }
                if !exists(self, arg(0)) {
                    return format!("-ERR No such channel {}!\n", arg(0));
                }
                let u = arg(0).to_owned();
                if let Some(c) = self.channels.get_mut(&u) {
                    c.set_var("sip_refer_to", arg(1));
                }
                self.hangup(&u, "BLIND_TRANSFER", true);
                "+OK:no reply\n".into()
            }
            "uuid_hold" => {
                let u = if arg(0) == "off" || arg(0) == "toggle" {
                    arg(1)
                } else {
                    arg(0)
                };
                if u.is_empty() {
                    "-USAGE: [off|toggle] <uuid> [<display>]\n".into()
                } else {
                    // FreeSWITCH 1.11 says +OK Success for an unknown
                    // uuid too.
                    "+OK Success\n".into()
                }
            }
            "uuid_dump" => {
                if a.is_empty() {
                    return "-USAGE: <uuid> [format]\n".into();
                }
                if !exists(self, arg(0)) {
                    return "-ERR No such channel!\n".into();
                }
                let seq = self.seq;
                let Some(body) = self.render("CHANNEL_PARK", Some(arg(0)), &[], &[], None, seq)
                else {
                    return "-ERR no reply\n".into();
                };
                let Ok(mut ev) = Event::decode_plain(&body) else {
                    return "-ERR no reply\n".into();
                };
                let mut data = Event::new("CHANNEL_DATA");
                for (k, v) in ev.headers.iter_bytes().skip(1) {
                    data.headers.push(k, v);
                }
                ev = data;
                match arg(1) {
                    "json" => String::from_utf8_lossy(&ev.encode(EventFormat::Json)).into_owned(),
                    "xml" => String::from_utf8_lossy(&ev.encode(EventFormat::Xml)).into_owned(),
                    "plain" => ev
                        .headers
                        .iter()
                        .map(|(k, v)| format!("{k}: [{v}]\n"))
                        .collect(),
                    _ => String::from_utf8_lossy(&ev.encode(EventFormat::Plain)).into_owned(),
                }
            }
            "sched_hangup" => {
                if a.len() < 2 {
                    return "-USAGE: [+]<time> <uuid> [<cause>]\n".into();
                }
                if !exists(self, arg(1)) {
                    return "-ERR No such channel!\n".into();
                }
                let secs = sched_secs(arg(0));
                let cause = if arg(2).is_empty() {
                    "ALLOTTED_TIMEOUT"
                } else {
                    util::cause(arg(2))
                };
                let task = self.next_id;
                self.next_id += 1;
                let runtime = util::now_us() / 1_000_000 + secs;
                let u = arg(1).to_owned();
                self.emit_task("ADD_SCHEDULE", task, &u, runtime);
                self.schedule(
                    Duration::from_secs(secs),
                    Timer::Hangup(u, cause.to_owned(), task, runtime),
                );
                "+OK\n".into()
            }
            "sched_del" => {
                if arg(0).is_empty() {
                    return "-USAGE: <task_id>|<group_id>\n".into();
                }
                let ids: Vec<u64> = self
                    .timer_payloads
                    .iter()
                    .filter(|(id, t)| match t {
                        Timer::Hangup(u, _, task, _) => {
                            u == arg(0) || task.to_string() == arg(0) || id.to_string() == arg(0)
                        }
                        _ => false,
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in &ids {
                    self.timer_payloads.remove(id);
                }
                format!("+OK Deleted: {}\n", ids.len())
            }
            "sched_api" => {
                if a.len() < 3 {
                    return "-ERR Invalid syntax. USAGE: [+@]<time> <group_name> <command_string>[&]\n".into();
                }
                let secs = sched_secs(arg(0));
                let command = args
                    .splitn(3, ' ')
                    .nth(2)
                    .unwrap_or("")
                    .trim_end_matches('&')
                    .to_owned();
                self.schedule(Duration::from_secs(secs), Timer::Api(command));
                let task = self.next_id;
                self.next_id += 1;
                format!("+OK Added: {task}\n")
            }
            "originate" => {
                // From sched_api: no connection waits on it.
                self.api_originate(None, None, args, None);
                String::new()
            }
            other => format!("-ERR {other} Command not found!\n"),
        }
    }

    /// ADD_SCHEDULE / DEL_SCHEDULE of a `sched_hangup` task.
    pub(crate) fn emit_task(&mut self, name: &str, task: u64, uuid: &str, runtime: u64) {
        self.emit(
            name,
            None,
            &[
                ("task_id", task.to_string()),
                ("task_desc", "switch_ivr_schedule_hangup".into()),
                ("task_group", uuid.to_owned()),
                ("task_runtime", runtime.to_string()),
            ],
            &[],
            None,
        );
    }

    /// `fsctl`: the read and set forms third-party tools send at start.
    fn fsctl(&mut self, a: &[&str]) -> String {
        let arg = |i: usize| a.get(i).copied().unwrap_or("");
        match arg(0) {
            "max_sessions" => {
                if let Ok(n) = arg(1).parse::<usize>() {
                    self.knobs.max_sessions = n;
                }
                format!("+OK max sessions: {}\n", self.knobs.max_sessions)
            }
            "sps" => {
                if let Ok(n) = arg(1).parse::<u32>() {
                    self.knobs.sessions_per_second = n;
                }
                format!("+OK sessions per second: {}\n", self.knobs.sessions_per_second)
            }
            "last_sps" => format!("+OK last sessions per second: {}\n", self.sps_window.1),
            "verbose_events" => {
                match arg(1) {
                    "" => {}
                    v => self.verbose_events = matches!(v, "on" | "true" | "yes" | "1"),
                }
                format!(
                    "+OK verbose_events is {}\n",
                    if self.verbose_events { "on" } else { "off" }
                )
            }
            "loglevel" => {
                // As in FreeSWITCH, no level given sets DISABLE.
                let (name, n) = match log_level(arg(1)) {
                    Some(l) => (LOG_LEVELS[l as usize], l as i32),
                    None => ("DISABLE", -1),
                };
                format!("+OK log level: {name} [{n}]\n")
            }
            "debug_level" => format!("+OK DEBUG level: {}\n", arg(1).parse::<u32>().unwrap_or(0)),
            "pause" | "resume" | "pause_check" | "ready_check" | "flush_db_handles"
            | "calibrate_clock" | "sync_clock" | "sync_clock_when_idle" => "+OK\n".into(),
            _ => "-ERR INVALID COMMAND\nUSAGE: fsctl [recover|send_sighup|hupall|pause [inbound|outbound]|resume [inbound|outbound]|shutdown [cancel|elegant|asap|now|restart]|sps|sps_peak_reset|sync_clock|sync_clock_when_idle|reclaim_mem|max_sessions|min_dtmf_duration [num]|max_dtmf_duration [num]|default_dtmf_duration [num]|min_idle_cpu|loglevel [level]|debug_level [level]|mdns_resolve [enable|disable]]\n".into(),
        }
    }

    fn broadcast(&mut self, uuid: &str, path: &str) {
        // `<app>[!<cause>]::<arg>` runs an application; anything else plays.
        if let Some((app, arg)) = path.split_once("::") {
            let (app, cause) = app
                .split_once('!')
                .map_or((app, None), |(a, c)| (a, Some(c)));
            if let (Some(cause), Some(c)) = (cause, self.channels.get_mut(uuid)) {
                c.set_var("switchy_mock_hangup_after", cause);
            }
            self.run_app(uuid, app, arg, None);
        } else if let Some(cause) = path.strip_prefix('!') {
            let cause = util::cause(cause);
            self.hangup(uuid, cause, true);
        } else {
            let (file, cause) = path
                .split_once('!')
                .map_or((path, None), |(f, c)| (f, Some(c)));
            if let (Some(cause), Some(c)) = (cause, self.channels.get_mut(uuid)) {
                c.set_var("switchy_mock_hangup_after", cause);
            }
            self.run_app(uuid, "playback", file, None);
        }
    }

    fn status_text(&self) -> String {
        let up = self.started.elapsed();
        let s = up.as_secs();
        format!(
            "UP 0 years, {} days, {} hours, {} minutes, {} seconds, {} milliseconds, {} microseconds\n\
             FreeSWITCH (Version 1.11.3-dev  64bit) is ready\n\
             {} session(s) since startup\n\
             {} session(s) - peak {}, last 5min {} \n\
             {} session(s) per Sec out of max {}, peak {}, last 5min {} \n\
             {} session(s) max\n\
             min idle cpu 0.00/99.00\n\
             Current Stack Size/Max 240K/8192K\n",
            s / 86_400,
            s / 3600 % 24,
            s / 60 % 60,
            s % 60,
            up.subsec_millis(),
            up.subsec_micros() % 1000,
            self.since_startup,
            self.channels.len(),
            self.peak,
            self.peak,
            self.sps_window.1,
            self.knobs.sessions_per_second,
            self.sps_window.1,
            self.sps_window.1,
            self.knobs.max_sessions,
        )
    }

    fn show(&self, a: &[String]) -> String {
        let what = a.first().map(String::as_str).unwrap_or("");
        if what != "channels" && what != "calls" {
            return format!(
                "-USAGE: {}\n",
                "codec|endpoint|application|api|dialplan|file|timer|calls [count]|channels [count|like <match string>]|calls|detailed_calls|bridged_calls|detailed_bridged_calls|aliases|complete|chat|management|modules|nat_map|say|interfaces|interface_types|tasks|limits|status"
            );
        }
        let rest: Vec<&str> = a[1..].iter().map(String::as_str).collect();
        let count_only = rest.first() == Some(&"count");
        let as_json = rest.windows(2).any(|w| w == ["as", "json"]);
        let mut chans: Vec<_> = self.channels.values().collect();
        if what == "calls" {
            chans.retain(|c| c.bridged.is_some() && c.dir == Dir::Inbound || c.bridged.is_some());
        }
        chans.sort_by_key(|c| c.created_seq);
        let n = chans.len();
        if as_json {
            if n == 0 {
                return "{\"row_count\": 0}\n".into();
            }
            let rows: Vec<serde_json::Value> = chans
                .iter()
                .map(|c| {
                    let vals = self.row(c);
                    serde_json::Value::Object(
                        SHOW_COLUMNS
                            .iter()
                            .zip(vals)
                            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
                            .collect(),
                    )
                })
                .collect();
            return serde_json::json!({"row_count": n, "rows": rows}).to_string();
        }
        if count_only || n == 0 {
            return format!("\n{n} total.\n");
        }
        let mut s = SHOW_COLUMNS.join(",");
        s.push('\n');
        for c in chans {
            s.push_str(&self.row(c).join(","));
            s.push('\n');
        }
        s.push_str(&format!("\n{n} total.\n"));
        s
    }

    fn row(&self, c: &crate::node::Channel) -> Vec<String> {
        let secs = c.created_us / 1_000_000;
        vec![
            c.uuid.clone(),
            c.dir.as_str().into(),
            util::date_local(c.created_us),
            secs.to_string(),
            c.name.clone(),
            c.state.into(),
            c.cid_name.clone(),
            c.cid_num.clone(),
            c.network_addr.clone(),
            c.dest.clone(),
            c.app.clone().unwrap_or_default(),
            c.app_data.clone().unwrap_or_default(),
            "XML".into(),
            c.context.clone(),
            "PCMU".into(),
            "8000".into(),
            "64000".into(),
            "PCMU".into(),
            "8000".into(),
            "64000".into(),
            String::new(),
            self.info.hostname.clone(),
            String::new(),
            String::new(),
            String::new(),
            c.call_state.into(),
            String::new(),
            String::new(),
            String::new(),
            c.uuid.clone(),
            String::new(),
            String::new(),
            c.cid_name.clone(),
            c.cid_num.clone(),
            c.network_addr.clone(),
            c.dest.clone(),
            "XML".into(),
            c.context.clone(),
        ]
    }

    /// An inbound call pushed by the control plane (after `delay_ms`).
    pub(crate) fn schedule_inbound(&mut self, inv: crate::node::Invite, delay_ms: u64) -> String {
        let call_id = inv.call_id.clone();
        self.schedule(
            Duration::from_millis(delay_ms),
            Timer::InboundCall(Box::new(inv)),
        );
        call_id
    }
}

/// FreeSWITCH reads the time with `atol`: its leading digits count, the
/// rest is ignored (`+2.998` is 2 s, `abc` is 0).
fn sched_secs(t: &str) -> u64 {
    let atol = |s: &str| -> u64 {
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap_or(0)
    };
    match t.strip_prefix('+') {
        Some(rel) => atol(rel),
        None => atol(t.trim_start_matches('@')).saturating_sub(util::now_us() / 1_000_000),
    }
}

/// FreeSWITCH's log levels, by number.
const LOG_LEVELS: &[&str] = &[
    "CONSOLE", "ALERT", "CRIT", "ERR", "WARNING", "NOTICE", "INFO", "DEBUG",
];

/// A log level by name or number (`switch_log_str2level`).
fn log_level(s: &str) -> Option<u8> {
    if let Ok(n) = s.parse::<u8>() {
        return (n < LOG_LEVELS.len() as u8).then_some(n);
    }
    let u = s.to_ascii_uppercase();
    let u = match u.as_str() {
        "ERROR" => "ERR",
        "WARN" => "WARNING",
        other => other,
    };
    LOG_LEVELS.iter().position(|l| *l == u).map(|i| i as u8)
}

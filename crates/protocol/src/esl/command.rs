//! Client commands: a validated [`Command`] type that cannot carry an
//! injected line break, and its encoder.
//!
//! FreeSWITCH ends a command line at the first CR or LF and a header line at
//! the first LF, and reads both as C strings (so a NUL cuts them). Every
//! constructor here rejects those bytes with [`CommandError`]; the only way
//! to send multi-line data is a body with `Content-Length`, which the
//! encoder frames itself.

use super::event::{Event, EventFormat};

/// A command argument that FreeSWITCH would misread.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// CR, LF or NUL in an argument: it would end the line early and let the
    /// rest be read as another header or command.
    #[error(
        "{field} contains a line break or NUL byte at offset {offset}: remove it (multi-line data belongs in a message body)"
    )]
    LineBreak {
        /// Which argument.
        field: &'static str,
        /// Byte offset of the offending byte.
        offset: usize,
    },
    /// An argument that must be one token contains whitespace.
    #[error("{field} {value:?} must be a single word without spaces")]
    Whitespace {
        /// Which argument.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// A required argument is empty.
    #[error("{field} must not be empty")]
    Empty {
        /// Which argument.
        field: &'static str,
    },
    /// A header name with `:` in it.
    #[error("header name {name:?} must not contain ':'")]
    HeaderName {
        /// The name.
        name: String,
    },
}

fn check_line(field: &'static str, s: &str) -> Result<(), CommandError> {
    match s.bytes().position(|b| matches!(b, b'\r' | b'\n' | 0)) {
        Some(offset) => Err(CommandError::LineBreak { field, offset }),
        None => Ok(()),
    }
}

fn check_word(field: &'static str, s: &str) -> Result<(), CommandError> {
    check_line(field, s)?;
    if s.is_empty() {
        return Err(CommandError::Empty { field });
    }
    if s.bytes().any(|b| b == b' ' || b == b'\t') {
        return Err(CommandError::Whitespace {
            field,
            value: s.to_owned(),
        });
    }
    Ok(())
}

fn check_header(name: &str, value: &str) -> Result<(), CommandError> {
    check_word("header name", name)?;
    if name.contains(':') {
        return Err(CommandError::HeaderName {
            name: name.to_owned(),
        });
    }
    check_line("header value", value)
}

/// A validated client command, ready to encode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    line: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

/// What `call-command` a [`SendMsg`] carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallCommand {
    /// Run a dialplan application.
    Execute {
        /// Application name (`playback`, `answer`, `bridge` …).
        app: String,
        /// Its argument (sent in the body when it spans lines).
        arg: Option<String>,
        /// `loops: n` (`-1` = forever).
        loops: Option<i32>,
    },
    /// Hang the channel up with a cause (default NORMAL_CLEARING).
    Hangup {
        /// Hangup cause name or number.
        cause: Option<String>,
    },
    /// Stream media elsewhere (`call-command: unicast`).
    Unicast {
        /// `local-ip`, `local-port`, `remote-ip`, `remote-port`, `transport`, `flags`.
        params: Vec<(String, String)>,
    },
    /// Take media out of the path (`call-command: nomedia`).
    Nomedia {
        /// `nomedia-uuid`.
        uuid: String,
    },
}

/// A `sendmsg` message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendMsg {
    /// The command to queue.
    pub command: CallCommand,
    /// `event-lock: true`: run strictly one after another.
    pub event_lock: bool,
    /// `Event-UUID`: becomes `Application-UUID` on CHANNEL_EXECUTE(_COMPLETE).
    pub event_uuid: Option<String>,
    /// Extra headers (`hold-bleg`, `lead-frames` …).
    pub extra: Vec<(String, String)>,
}

impl SendMsg {
    /// `call-command: execute` of `app` with `arg`.
    pub fn execute(app: &str, arg: Option<&str>) -> Self {
        SendMsg {
            command: CallCommand::Execute {
                app: app.to_owned(),
                arg: arg.map(str::to_owned),
                loops: None,
            },
            event_lock: false,
            event_uuid: None,
            extra: Vec::new(),
        }
    }

    /// `call-command: hangup`.
    pub fn hangup(cause: Option<&str>) -> Self {
        SendMsg {
            command: CallCommand::Hangup {
                cause: cause.map(str::to_owned),
            },
            event_lock: false,
            event_uuid: None,
            extra: Vec::new(),
        }
    }

    /// Sets `event-lock: true`.
    pub fn locked(mut self) -> Self {
        self.event_lock = true;
        self
    }

    /// Sets `Event-UUID`.
    pub fn with_event_uuid(mut self, id: &str) -> Self {
        self.event_uuid = Some(id.to_owned());
        self
    }

    /// Sets `loops` (execute only).
    pub fn with_loops(mut self, n: i32) -> Self {
        if let CallCommand::Execute { loops, .. } = &mut self.command {
            *loops = Some(n);
        }
        self
    }
}

/// The log levels of `log <level>`.
pub const LOG_LEVELS: [&str; 8] = [
    "console", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

impl Command {
    fn simple(line: String) -> Self {
        Command {
            line,
            headers: Vec::new(),
            body: None,
        }
    }

    /// `auth <password>`.
    pub fn auth(password: &str) -> Result<Self, CommandError> {
        check_line("password", password)?;
        Ok(Self::simple(format!("auth {password}")))
    }

    /// `userauth <user>@<domain>:<password>`.
    pub fn userauth(user: &str, domain: &str, password: &str) -> Result<Self, CommandError> {
        check_word("user", user)?;
        check_word("domain", domain)?;
        check_line("password", password)?;
        Ok(Self::simple(format!("userauth {user}@{domain}:{password}")))
    }

    /// `api <command> [<args>]`.
    pub fn api(command: &str, args: &str) -> Result<Self, CommandError> {
        check_word("api command", command)?;
        check_line("api arguments", args)?;
        Ok(Self::simple(if args.is_empty() {
            format!("api {command}")
        } else {
            format!("api {command} {args}")
        }))
    }

    /// `bgapi <command> [<args>]`, with an optional caller-chosen `Job-UUID`.
    pub fn bgapi(command: &str, args: &str, job_uuid: Option<&str>) -> Result<Self, CommandError> {
        check_word("bgapi command", command)?;
        check_line("bgapi arguments", args)?;
        let mut c = Self::simple(if args.is_empty() {
            format!("bgapi {command}")
        } else {
            format!("bgapi {command} {args}")
        });
        if let Some(id) = job_uuid {
            check_word("Job-UUID", id)?;
            c.headers.push(("Job-UUID".into(), id.into()));
        }
        Ok(c)
    }

    fn event_list(
        keyword: &str,
        format: Option<EventFormat>,
        names: &[&str],
        subclasses: &[&str],
    ) -> Result<Self, CommandError> {
        let mut line = String::from(keyword);
        if let Some(f) = format {
            line.push(' ');
            line.push_str(f.as_str());
        }
        if names.is_empty() && subclasses.is_empty() {
            return Err(CommandError::Empty {
                field: "event names",
            });
        }
        for n in names {
            check_word("event name", n)?;
            line.push(' ');
            line.push_str(n);
        }
        if !subclasses.is_empty() {
            // Every token after CUSTOM is a subclass, so they go last.
            line.push_str(" CUSTOM");
            for s in subclasses {
                check_word("event subclass", s)?;
                line.push(' ');
                line.push_str(s);
            }
        }
        Ok(Self::simple(line))
    }

    /// `event <format> <names…> [CUSTOM <subclasses…>]` (`ALL` is a name).
    pub fn event(
        format: EventFormat,
        names: &[&str],
        subclasses: &[&str],
    ) -> Result<Self, CommandError> {
        Self::event_list("event", Some(format), names, subclasses)
    }

    /// `nixevent <names…> [CUSTOM <subclasses…>]`.
    pub fn nixevent(names: &[&str], subclasses: &[&str]) -> Result<Self, CommandError> {
        Self::event_list("nixevent", None, names, subclasses)
    }

    /// `noevents`.
    pub fn noevents() -> Self {
        Self::simple("noevents".into())
    }

    /// `filter <header> <value>` (the value may contain spaces).
    pub fn filter(header: &str, value: &str) -> Result<Self, CommandError> {
        check_word("filter header", header)?;
        check_line("filter value", value)?;
        if value.is_empty() {
            return Err(CommandError::Empty {
                field: "filter value",
            });
        }
        Ok(Self::simple(format!("filter {header} {value}")))
    }

    /// `filter delete <header> [<value>]`.
    pub fn filter_delete(header: &str, value: Option<&str>) -> Result<Self, CommandError> {
        check_word("filter header", header)?;
        Ok(Self::simple(match value {
            Some(v) => {
                check_line("filter value", v)?;
                format!("filter delete {header} {v}")
            }
            None => format!("filter delete {header}"),
        }))
    }

    /// `filter delete all`.
    pub fn filter_delete_all() -> Self {
        Self::simple("filter delete all".into())
    }

    /// `myevents [<uuid>] [<format>]`.
    pub fn myevents(uuid: Option<&str>, format: Option<EventFormat>) -> Result<Self, CommandError> {
        let mut line = String::from("myevents");
        if let Some(u) = uuid {
            check_word("uuid", u)?;
            line.push(' ');
            line.push_str(u);
        }
        if let Some(f) = format {
            line.push(' ');
            line.push_str(f.as_str());
        }
        Ok(Self::simple(line))
    }

    /// `divert_events on|off`.
    pub fn divert_events(on: bool) -> Self {
        Self::simple(format!("divert_events {}", if on { "on" } else { "off" }))
    }

    /// `linger [<seconds>]`.
    pub fn linger(seconds: Option<u32>) -> Self {
        Self::simple(match seconds {
            Some(s) => format!("linger {s}"),
            None => "linger".into(),
        })
    }

    /// `nolinger`.
    pub fn nolinger() -> Self {
        Self::simple("nolinger".into())
    }

    /// `log <level>`: a name of [`LOG_LEVELS`] or a number 0–7.
    pub fn log(level: &str) -> Result<Self, CommandError> {
        check_word("log level", level)?;
        Ok(Self::simple(format!("log {level}")))
    }

    /// `nolog`.
    pub fn nolog() -> Self {
        Self::simple("nolog".into())
    }

    /// `exit`.
    pub fn exit() -> Self {
        Self::simple("exit".into())
    }

    /// `sendmsg <uuid>` with the message's headers; an execute argument that
    /// spans lines goes in the body.
    pub fn sendmsg(uuid: &str, msg: &SendMsg) -> Result<Self, CommandError> {
        check_word("uuid", uuid)?;
        let mut c = Self::simple(format!("sendmsg {uuid}"));
        let h = &mut c.headers;
        match &msg.command {
            CallCommand::Execute { app, arg, loops } => {
                check_word("application name", app)?;
                h.push(("call-command".into(), "execute".into()));
                h.push(("execute-app-name".into(), app.clone()));
                if let Some(arg) = arg {
                    if arg.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                        c.body = Some(arg.as_bytes().to_vec());
                    } else {
                        c.headers.push(("execute-app-arg".into(), arg.clone()));
                    }
                }
                if let Some(n) = loops {
                    c.headers.push(("loops".into(), n.to_string()));
                }
            }
            CallCommand::Hangup { cause } => {
                h.push(("call-command".into(), "hangup".into()));
                if let Some(cause) = cause {
                    check_word("hangup cause", cause)?;
                    h.push(("hangup-cause".into(), cause.clone()));
                }
            }
            CallCommand::Unicast { params } => {
                h.push(("call-command".into(), "unicast".into()));
                for (k, v) in params {
                    check_header(k, v)?;
                    h.push((k.clone(), v.clone()));
                }
            }
            CallCommand::Nomedia { uuid } => {
                check_word("nomedia uuid", uuid)?;
                h.push(("call-command".into(), "nomedia".into()));
                h.push(("nomedia-uuid".into(), uuid.clone()));
            }
        }
        if msg.event_lock {
            c.headers.push(("event-lock".into(), "true".into()));
        }
        if let Some(id) = &msg.event_uuid {
            check_word("Event-UUID", id)?;
            c.headers.push(("Event-UUID".into(), id.clone()));
        }
        for (k, v) in &msg.extra {
            check_header(k, v)?;
            c.headers.push((k.clone(), v.clone()));
        }
        if c.body.is_some() {
            c.headers.push(("content-type".into(), "text/plain".into()));
        }
        Ok(c)
    }

    /// `sendevent <name>` with the event's headers (values sent raw, as
    /// FreeSWITCH reads them) and body. The `Event-Name` header, if any, is
    /// not repeated (the command line carries the name).
    pub fn sendevent(event: &Event) -> Result<Self, CommandError> {
        let name = event.event_name().unwrap_or("CUSTOM");
        check_word("event name", name)?;
        let mut c = Self::simple(format!("sendevent {name}"));
        for (k, v) in event.headers.iter() {
            if k.eq_ignore_ascii_case("Event-Name") || k.eq_ignore_ascii_case("Content-Length") {
                continue;
            }
            check_header(k, v)?;
            c.headers.push((k.to_owned(), v.to_owned()));
        }
        c.body = event.body.clone().filter(|b| !b.is_empty());
        Ok(c)
    }

    /// A raw command line with no arguments to validate beyond line breaks
    /// (for commands this type has no constructor for).
    pub fn raw(line: &str) -> Result<Self, CommandError> {
        check_line("command line", line)?;
        if line.trim().is_empty() {
            return Err(CommandError::Empty {
                field: "command line",
            });
        }
        Ok(Self::simple(line.to_owned()))
    }

    /// The command line (first line).
    pub fn line(&self) -> &str {
        &self.line
    }

    /// The header lines after the command line.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body, if any.
    pub fn body(&self) -> Option<&[u8]> {
        self.body.as_deref()
    }

    /// Appends the wire form: line, headers, `Content-Length` for a body,
    /// the blank line, the body.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.line.as_bytes());
        out.push(b'\n');
        for (k, v) in &self.headers {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.push(b'\n');
        }
        if let Some(body) = &self.body {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(body.len().to_string().as_bytes());
            out.extend_from_slice(b"\n\n");
            out.extend_from_slice(body);
        } else {
            out.push(b'\n');
        }
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.line.len() + 64);
        self.encode_into(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(c: &Command) -> String {
        String::from_utf8(c.to_bytes()).unwrap()
    }

    #[test]
    fn encodes_every_command() {
        assert_eq!(wire(&Command::auth("ClueCon").unwrap()), "auth ClueCon\n\n");
        assert_eq!(wire(&Command::api("status", "").unwrap()), "api status\n\n");
        assert_eq!(
            wire(
                &Command::bgapi("status", "", Some("11111111-2222-3333-4444-555555555555"))
                    .unwrap()
            ),
            "bgapi status\nJob-UUID: 11111111-2222-3333-4444-555555555555\n\n"
        );
        assert_eq!(
            wire(
                &Command::event(
                    EventFormat::Plain,
                    &["CHANNEL_CREATE", "HEARTBEAT"],
                    &["sofia::register"]
                )
                .unwrap()
            ),
            "event plain CHANNEL_CREATE HEARTBEAT CUSTOM sofia::register\n\n"
        );
        assert_eq!(
            wire(&Command::event(EventFormat::Json, &["ALL"], &[]).unwrap()),
            "event json ALL\n\n"
        );
        assert_eq!(
            wire(&Command::nixevent(&["CHANNEL_PARK"], &[]).unwrap()),
            "nixevent CHANNEL_PARK\n\n"
        );
        assert_eq!(wire(&Command::noevents()), "noevents\n\n");
        assert_eq!(
            wire(&Command::filter("Unique-ID", "abc def").unwrap()),
            "filter Unique-ID abc def\n\n"
        );
        assert_eq!(
            wire(&Command::filter_delete("Event-Name", None).unwrap()),
            "filter delete Event-Name\n\n"
        );
        assert_eq!(wire(&Command::filter_delete_all()), "filter delete all\n\n");
        assert_eq!(
            wire(&Command::myevents(Some("u1"), Some(EventFormat::Json)).unwrap()),
            "myevents u1 json\n\n"
        );
        assert_eq!(wire(&Command::linger(Some(5))), "linger 5\n\n");
        assert_eq!(wire(&Command::log("debug").unwrap()), "log debug\n\n");
        assert_eq!(wire(&Command::nolog()), "nolog\n\n");
        assert_eq!(wire(&Command::exit()), "exit\n\n");
        assert_eq!(wire(&Command::divert_events(true)), "divert_events on\n\n");
        assert_eq!(
            wire(
                &Command::sendmsg(
                    "u1",
                    &SendMsg::execute("playback", Some("/tmp/a b.wav"))
                        .locked()
                        .with_event_uuid("e1")
                        .with_loops(2)
                )
                .unwrap()
            ),
            "sendmsg u1\ncall-command: execute\nexecute-app-name: playback\nexecute-app-arg: /tmp/a b.wav\nloops: 2\nevent-lock: true\nEvent-UUID: e1\n\n"
        );
        assert_eq!(
            wire(&Command::sendmsg("u1", &SendMsg::hangup(Some("USER_BUSY"))).unwrap()),
            "sendmsg u1\ncall-command: hangup\nhangup-cause: USER_BUSY\n\n"
        );
        let ev = Event::new("CUSTOM")
            .with("Event-Subclass", "switchy::ping")
            .with("X-Seq", "1");
        assert_eq!(
            wire(&Command::sendevent(&ev).unwrap()),
            "sendevent CUSTOM\nEvent-Subclass: switchy::ping\nX-Seq: 1\n\n"
        );
    }

    #[test]
    fn multi_line_app_argument_goes_into_the_body() {
        let c = Command::sendmsg("u1", &SendMsg::execute("set", Some("a\nb"))).unwrap();
        assert_eq!(
            wire(&c),
            "sendmsg u1\ncall-command: execute\nexecute-app-name: set\ncontent-type: text/plain\ncontent-length: 3\n\na\nb"
        );
    }

    #[test]
    fn every_constructor_refuses_injection() {
        let evil = ["x\nexit", "x\r\napi hupall", "x\0y", "\n"];
        for e in evil {
            assert!(
                matches!(Command::auth(e), Err(CommandError::LineBreak { .. })),
                "auth {e:?}"
            );
            assert!(matches!(
                Command::userauth(e, "d", "p"),
                Err(CommandError::LineBreak { .. })
            ));
            assert!(matches!(
                Command::userauth("u", "d", e),
                Err(CommandError::LineBreak { .. })
            ));
            assert!(matches!(
                Command::api("status", e),
                Err(CommandError::LineBreak { .. })
            ));
            assert!(matches!(
                Command::api(e, ""),
                Err(CommandError::LineBreak { .. })
            ));
            assert!(matches!(
                Command::bgapi("originate", e, None),
                Err(CommandError::LineBreak { .. })
            ));
            assert!(matches!(
                Command::bgapi("status", "", Some(e)),
                Err(CommandError::LineBreak { .. })
            ));
            assert!(matches!(
                Command::event(EventFormat::Plain, &[e], &[]),
                Err(CommandError::LineBreak { .. })
            ));
            assert!(matches!(
                Command::event(EventFormat::Plain, &["ALL"], &[e]),
                Err(CommandError::LineBreak { .. })
            ));
            assert!(matches!(
                Command::nixevent(&[e], &[]),
                Err(CommandError::LineBreak { .. })
            ));
            assert!(matches!(
                Command::filter("Unique-ID", e),
                Err(CommandError::LineBreak { .. })
            ));
            assert!(matches!(
                Command::filter(e, "v"),
                Err(CommandError::LineBreak { .. })
            ));
            assert!(matches!(
                Command::filter_delete("H", Some(e)),
                Err(CommandError::LineBreak { .. })
            ));
            assert!(matches!(
                Command::myevents(Some(e), None),
                Err(CommandError::LineBreak { .. })
            ));
            assert!(matches!(
                Command::log(e),
                Err(CommandError::LineBreak { .. })
            ));
            assert!(matches!(
                Command::raw(e),
                Err(CommandError::LineBreak { .. })
            ));
            assert!(matches!(
                Command::sendmsg(e, &SendMsg::hangup(None)),
                Err(CommandError::LineBreak { .. })
            ));
            assert!(matches!(
                Command::sendmsg("u", &SendMsg::execute(e, None)),
                Err(CommandError::LineBreak { .. })
            ));
            assert!(matches!(
                Command::sendmsg("u", &SendMsg::hangup(Some(e))),
                Err(CommandError::LineBreak { .. })
            ));
            assert!(matches!(
                Command::sendmsg("u", &SendMsg::execute("a", None).with_event_uuid(e)),
                Err(CommandError::LineBreak { .. })
            ));
            let mut m = SendMsg::execute("a", None);
            m.extra.push(("hold-bleg".into(), e.into()));
            assert!(matches!(
                Command::sendmsg("u", &m),
                Err(CommandError::LineBreak { .. })
            ));
            let ev = Event::new("CUSTOM").with("X-Evil", e);
            assert!(matches!(
                Command::sendevent(&ev),
                Err(CommandError::LineBreak { .. })
            ));
        }
        assert!(matches!(
            Command::api("uuid kill", ""),
            Err(CommandError::Whitespace { .. })
        ));
        let ev = Event::new("CUSTOM").with("Bad:Name", "v");
        assert!(matches!(
            Command::sendevent(&ev),
            Err(CommandError::HeaderName { .. })
        ));
    }
}

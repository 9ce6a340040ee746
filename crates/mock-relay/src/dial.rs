//! The originate argument line and dial-string grammar (section 13 of the
//! ESL reference): `{global}` and `[per-leg]` variables, `,` simultaneous and
//! `|` sequential legs, `sofia/<profile>/<user>@<host>[:<port>]` endpoints
//! with `;fs_path=`, and the destination (`&app(arg)` or an extension).

/// One leg of a dial string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leg {
    /// `[per-leg]` variables.
    pub vars: Vec<(String, String)>,
    /// The endpoint text, e.g. `sofia/external/1000@127.0.0.1:5080`.
    pub endpoint: String,
}

/// A parsed dial string.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DialString {
    /// `{global}` (and `<ultra-global>`) variables.
    pub globals: Vec<(String, String)>,
    /// Failover groups (`|`), each a set of simultaneous legs (`,`).
    pub groups: Vec<Vec<Leg>>,
}

/// Where the answered leg goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// `&app(arg)`.
    App(String, String),
    /// An extension in a dialplan and context.
    Exten(String, String, String),
}

/// The parsed `originate` arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginateArgs {
    /// The dial string.
    pub dial: DialString,
    /// The destination.
    pub dest: Destination,
    /// Caller id name (argument 5).
    pub cid_name: Option<String>,
    /// Caller id number (argument 6).
    pub cid_num: Option<String>,
    /// Timeout in seconds (argument 7).
    pub timeout: Option<u64>,
}

/// A parsed endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `sofia/<profile>/<user>@<host>[:<port>]` (`fs_path` proxy if any).
    Sofia {
        /// Profile name (`gateway` for gateway dialing).
        profile: String,
        /// User part.
        user: String,
        /// Host part (no port).
        host: String,
        /// Port, if given.
        port: Option<u16>,
        /// `;fs_path=sip:host:port` proxy.
        fs_path: Option<(String, Option<u16>)>,
    },
    /// `sofia/gateway/<gw>/<number>`.
    Gateway {
        /// Gateway name.
        gateway: String,
        /// Number dialled.
        number: String,
    },
    /// `error/<cause>`.
    Error(String),
    /// `user/<user>@<domain>` or `loopback/<exten>`: calls into this node.
    Local(String),
    /// Anything else (unknown endpoint module).
    Unknown(String),
}

/// Splits the API argument string as FreeSWITCH does: on spaces, single
/// quotes group (and are removed), backslash escapes the next character.
pub fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut has = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                // Escapes a space, quote or backslash; other escapes (`\,`)
                // are left for the dial-string parser.
                if let Some(n) = chars.next() {
                    if !matches!(n, ' ' | '\'' | '\\') {
                        cur.push('\\');
                    }
                    cur.push(n);
                    has = true;
                }
            }
            '\'' => {
                quoted = !quoted;
                has = true;
            }
            ' ' if !quoted => {
                if has {
                    out.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            _ => {
                cur.push(c);
                has = true;
            }
        }
    }
    if has {
        out.push(cur);
    }
    out
}

/// The `-USAGE:` text of originate (exact, from a real FreeSWITCH).
pub const ORIGINATE_USAGE: &str = "-USAGE: <call url> <exten>|&<application_name>(<app_args>) [<dialplan>] [<context>] [<cid_name>] [<cid_num>] [<timeout_sec>]\n";

/// Parses `originate` arguments; `Err` carries the reply text.
pub fn parse_originate(args: &str) -> Result<OriginateArgs, String> {
    let a = split_args(args);
    if a.len() < 2 || a.len() > 7 {
        return Err(ORIGINATE_USAGE.to_owned());
    }
    let undef = |i: usize| a.get(i).filter(|v| v.as_str() != "undef").cloned();
    let dest = if let Some(app) = a[1].strip_prefix('&') {
        match app.split_once('(') {
            Some((name, rest)) => (
                name.to_owned(),
                rest.strip_suffix(')').unwrap_or(rest).to_owned(),
            ),
            None => (app.to_owned(), String::new()),
        }
        .into()
    } else {
        Destination::Exten(
            a[1].clone(),
            undef(2).unwrap_or_else(|| "XML".into()),
            undef(3).unwrap_or_else(|| "default".into()),
        )
    };
    Ok(OriginateArgs {
        dial: parse_dial_string(&a[0]),
        dest,
        cid_name: undef(4),
        cid_num: undef(5),
        timeout: undef(6).and_then(|t| t.parse().ok()),
    })
}

impl From<(String, String)> for Destination {
    fn from((n, a): (String, String)) -> Self {
        Destination::App(n, a)
    }
}

/// Splits `a=1,b=2` (with `\,` escapes and a `^^<sep>` separator change).
fn parse_vars(s: &str) -> Vec<(String, String)> {
    let (sep, body) = match s.strip_prefix("^^") {
        Some(rest) => {
            let mut ch = rest.chars();
            match ch.next() {
                Some(c) => (c, ch.as_str()),
                None => (',', ""),
            }
        }
        None => (',', s),
    };
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = body.chars().peekable();
    let mut items = Vec::new();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek() == Some(&sep) {
            cur.push(sep);
            chars.next();
        } else if c == sep {
            items.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    items.push(cur);
    for it in items {
        if let Some((k, v)) = it.split_once('=') {
            let k = k.trim();
            if !k.is_empty() {
                out.push((k.to_owned(), v.to_owned()));
            }
        }
    }
    out
}

/// Takes leading `open … close` blocks off `s`, returning their contents.
fn take_blocks<'a>(
    mut s: &'a str,
    open: char,
    close: char,
    vars: &mut Vec<(String, String)>,
) -> &'a str {
    while let Some(rest) = s.strip_prefix(open) {
        match rest.find(close) {
            Some(end) => {
                vars.extend(parse_vars(&rest[..end]));
                s = &rest[end + 1..];
            }
            None => break,
        }
    }
    s
}

/// Splits on `sep` outside `[...]` and `{...}` blocks.
fn split_top(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' | '{' | '<' => depth += 1,
            ']' | '}' | '>' => depth -= 1,
            c if c == sep && depth <= 0 => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Parses a dial string.
pub fn parse_dial_string(s: &str) -> DialString {
    let mut d = DialString::default();
    let rest = take_blocks(s, '<', '>', &mut d.globals);
    let rest = take_blocks(rest, '{', '}', &mut d.globals);
    for group in split_top(rest, '|') {
        let mut legs = Vec::new();
        for leg in split_top(group, ',') {
            let mut vars = Vec::new();
            let ep = take_blocks(leg.trim(), '[', ']', &mut vars);
            if !ep.is_empty() {
                legs.push(Leg {
                    vars,
                    endpoint: ep.to_owned(),
                });
            }
        }
        if !legs.is_empty() {
            d.groups.push(legs);
        }
    }
    d
}

fn host_port(s: &str) -> (String, Option<u16>) {
    let s = s.strip_prefix("sip:").unwrap_or(s);
    let s = s.rsplit_once('@').map_or(s, |(_, h)| h);
    match s.rsplit_once(':') {
        Some((h, p)) => match p.parse() {
            Ok(port) => (h.to_owned(), Some(port)),
            Err(_) => (s.to_owned(), None),
        },
        None => (s.to_owned(), None),
    }
}

/// Parses an endpoint of a leg.
pub fn parse_endpoint(ep: &str) -> Endpoint {
    if let Some(cause) = ep.strip_prefix("error/") {
        return Endpoint::Error(cause.to_ascii_uppercase());
    }
    if let Some(rest) = ep.strip_prefix("sofia/") {
        let Some((profile, target)) = rest.split_once('/') else {
            return Endpoint::Unknown(ep.to_owned());
        };
        if profile == "gateway" {
            let (gw, number) = target.split_once('/').unwrap_or((target, ""));
            return Endpoint::Gateway {
                gateway: gw.to_owned(),
                number: number.to_owned(),
            };
        }
        let mut parts = target.split(';');
        let uri = parts.next().unwrap_or_default();
        let mut fs_path = None;
        for p in parts {
            if let Some(v) = p.strip_prefix("fs_path=") {
                let v = v.trim_start_matches('<').trim_end_matches('>');
                fs_path = Some(host_port(v));
            }
        }
        let uri = uri.strip_prefix("sip:").unwrap_or(uri);
        let (user, hostport) = uri.split_once('@').unwrap_or(("", uri));
        let (host, port) = host_port(hostport);
        return Endpoint::Sofia {
            profile: profile.to_owned(),
            user: user.to_owned(),
            host,
            port,
            fs_path,
        };
    }
    if let Some(rest) = ep
        .strip_prefix("user/")
        .or_else(|| ep.strip_prefix("loopback/"))
    {
        return Endpoint::Local(rest.split(['@', '/']).next().unwrap_or_default().to_owned());
    }
    Endpoint::Unknown(ep.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_syntax() {
        let a = parse_originate(
            "{origination_uuid=u1,sip_h_X-Call=abc,x=a\\,b}[leg_timeout=5]sofia/external/1000@127.0.0.1:5080;fs_path=sip:10.0.0.1:5060,[a=1]sofia/internal/2000@h|error/user_busy &park() XML default 'John Doe' 1234 30",
        )
        .unwrap();
        assert_eq!(
            a.dial.globals,
            vec![
                ("origination_uuid".into(), "u1".into()),
                ("sip_h_X-Call".into(), "abc".into()),
                ("x".into(), "a,b".into())
            ]
        );
        assert_eq!(a.dial.groups.len(), 2);
        assert_eq!(a.dial.groups[0].len(), 2);
        assert_eq!(
            a.dial.groups[0][0].vars,
            vec![("leg_timeout".into(), "5".into())]
        );
        assert_eq!(
            parse_endpoint(&a.dial.groups[0][0].endpoint),
            Endpoint::Sofia {
                profile: "external".into(),
                user: "1000".into(),
                host: "127.0.0.1".into(),
                port: Some(5080),
                fs_path: Some(("10.0.0.1".into(), Some(5060)))
            }
        );
        assert_eq!(
            parse_endpoint(&a.dial.groups[1][0].endpoint),
            Endpoint::Error("USER_BUSY".into())
        );
        assert_eq!(a.dest, Destination::App("park".into(), "".into()));
        assert_eq!(a.cid_name.as_deref(), Some("John Doe"));
        assert_eq!(a.cid_num.as_deref(), Some("1234"));
        assert_eq!(a.timeout, Some(30));
    }

    #[test]
    fn usage_and_extension() {
        assert_eq!(parse_originate("x").unwrap_err(), ORIGINATE_USAGE);
        let a = parse_originate("sofia/gateway/gw1/15551234 9999 XML public").unwrap();
        assert_eq!(
            a.dest,
            Destination::Exten("9999".into(), "XML".into(), "public".into())
        );
        assert_eq!(
            parse_endpoint(&a.dial.groups[0][0].endpoint),
            Endpoint::Gateway {
                gateway: "gw1".into(),
                number: "15551234".into()
            }
        );
        let b = parse_originate("{^^:a=1,2:b=3}sofia/x/y@z &echo").unwrap();
        assert_eq!(
            b.dial.globals,
            vec![("a".into(), "1,2".into()), ("b".into(), "3".into())]
        );
        assert_eq!(b.dest, Destination::App("echo".into(), "".into()));
    }
}

//! Replays the client side of every real FreeSWITCH capture in
//! `shared/fixtures/esl` against the mock and checks that the frames come
//! back in the same order, with the same reply texts (ids masked), the same
//! event names and the same set of header names per event.

mod common;
use mock_relay::{MockCluster, MockConfig};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use switchy_protocol::esl::{Decoder, Message};
use tokio::io::AsyncWriteExt;

fn fixtures_dir() -> PathBuf {
    std::env::var_os("SWITCHY_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/esl")
        })
}

fn unrepr(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// (rx_offset, command bytes) of every SEND line.
fn sends(transcript: &str) -> Vec<(usize, String)> {
    transcript
        .lines()
        .filter_map(|l| l.strip_prefix("SEND @rx_offset="))
        .map(|l| {
            let (off, rest) = l.split_once(' ').unwrap();
            let cmd = rest.trim().trim_start_matches('\'').trim_end_matches('\'');
            (off.parse().unwrap(), unrepr(cmd))
        })
        .collect()
}

/// A comparable summary of one frame.
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    Frame(String, String),
    Event(String, BTreeSet<String>),
}

fn mask(s: &str) -> String {
    let re =
        regex::Regex::new(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").unwrap();
    re.replace_all(s, "<uuid>").into_owned()
}

fn shape(m: &Message) -> Shape {
    match m {
        Message::AuthRequest => Shape::Frame("auth/request".into(), String::new()),
        Message::CommandReply(r) => {
            Shape::Frame("command/reply".into(), mask(r.reply_text().unwrap_or("")))
        }
        // Api bodies hold live data (uptime, rows): compare their first word.
        Message::ApiResponse(a) => Shape::Frame(
            "api/response".into(),
            a.text()
                .split([' ', '\n', ':'])
                .next()
                .unwrap_or("")
                .to_owned(),
        ),
        Message::Event(_, e) => Shape::Event(
            e.event_name().unwrap_or("").to_owned(),
            e.headers.iter().map(|(n, _)| n.to_owned()).collect(),
        ),
        Message::DisconnectNotice(f) => Shape::Frame(
            "text/disconnect-notice".into(),
            String::from_utf8_lossy(f.body.as_deref().unwrap_or_default()).into(),
        ),
        Message::LogData(f) => Shape::Frame(
            "log/data".into(),
            f.headers
                .iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
                .join(","),
        ),
        Message::RudeRejection(_) => Shape::Frame("text/rude-rejection".into(), String::new()),
        Message::Unknown(f) => Shape::Frame(f.content_type().unwrap_or("").into(), String::new()),
    }
}

/// Channel roles: `inbound#1`, `outbound#1`, … by order of first appearance,
/// so legs of the capture and of the mock can be paired whatever their UUIDs.
#[derive(Default)]
struct Roles {
    by_uuid: HashMap<String, String>,
    counts: HashMap<String, usize>,
}

impl Roles {
    fn see(&mut self, m: &Message) -> Option<String> {
        let Message::Event(_, e) = m else { return None };
        let (u, d) = (e.unique_id()?, e.get("Call-Direction")?);
        if let Some(r) = self.by_uuid.get(u) {
            return Some(r.clone());
        }
        let n = self.counts.entry(d.to_owned()).or_default();
        *n += 1;
        let role = format!("{d}#{n}");
        self.by_uuid.insert(u.to_owned(), role.clone());
        Some(role)
    }

    fn uuid_of(&self, role: &str) -> Option<&str> {
        self.by_uuid
            .iter()
            .find(|(_, r)| r.as_str() == role)
            .map(|(u, _)| u.as_str())
    }
}

/// Frames of a real capture with their byte offsets.
fn real_frames(bytes: &[u8]) -> Vec<(usize, Message)> {
    let mut d = Decoder::new();
    d.feed(bytes);
    let mut out = Vec::new();
    let mut off = 0;
    while let Some(m) = d.next_message().unwrap() {
        out.push((off, m));
        off = bytes.len() - d.buffered();
    }
    out
}

async fn replay(name: &str) -> Result<(), String> {
    let dir = fixtures_dir();
    let bytes =
        std::fs::read(dir.join(format!("{name}.bin"))).map_err(|e| format!("{name}: {e}"))?;
    let transcript = std::fs::read_to_string(dir.join(format!("{name}.transcript.txt")))
        .map_err(|e| e.to_string())?;
    let real = real_frames(&bytes);
    let m = MockCluster::start(MockConfig::ephemeral(1))
        .await
        .map_err(|e| e.to_string())?;
    let mut c = common::Esl::raw(m.esl_addr(0)).await;
    let mut got: Vec<Message> = Vec::new();
    let (mut real_roles, mut my_roles) = (Roles::default(), Roles::default());
    for (_, m) in &real {
        real_roles.see(m);
    }
    for (rx_offset, cmd) in sends(&transcript) {
        let want = real.iter().filter(|(o, _)| *o < rx_offset).count();
        while got.len() < want {
            let Some(msg) = c.next().await else {
                return Err(format!(
                    "{name}: connection closed after {} frames, expected {want}",
                    got.len()
                ));
            };
            my_roles.see(&msg);
            got.push(msg);
        }
        // Commands naming a captured channel name the mock's leg of the same role.
        let mut cmd = cmd;
        for (u, role) in &real_roles.by_uuid {
            if cmd.contains(u.as_str())
                && let Some(mine) = my_roles.uuid_of(role)
            {
                cmd = cmd.replace(u.as_str(), mine);
            }
        }
        c.stream
            .write_all(cmd.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
    }
    while got.len() < real.len() {
        let Some(msg) = c.next().await else { break };
        my_roles.see(&msg);
        got.push(msg);
    }
    m.stop().await;
    // Events of different channels interleave arbitrarily in FreeSWITCH
    // (section 10): compare per lane, one lane per channel role plus one for
    // everything else, each in order.
    let lanes = |frames: &mut dyn Iterator<Item = &Message>, roles: &mut Roles| {
        let mut l: std::collections::BTreeMap<String, Vec<Shape>> = Default::default();
        for m in frames {
            let lane = roles.see(m).unwrap_or_else(|| "connection".into());
            l.entry(lane).or_default().push(shape(m));
        }
        l
    };
    let real_lanes = lanes(&mut real.iter().map(|(_, m)| m), &mut Roles::default());
    let my_lanes = lanes(&mut got.iter(), &mut Roles::default());
    let mut problems = Vec::new();
    if got.len() != real.len() {
        problems.push(format!(
            "{} frames, the capture has {}",
            got.len(),
            real.len()
        ));
    }
    for (lane, rs) in &real_lanes {
        let empty = Vec::new();
        let gs = my_lanes.get(lane).unwrap_or(&empty);
        if gs.len() != rs.len() {
            problems.push(format!(
                "lane {lane}: {} frames, the capture has {}",
                gs.len(),
                rs.len()
            ));
        }
        for (i, (sg, sr)) in gs.iter().zip(rs).enumerate() {
            if sg == sr {
                continue;
            }
            match (sg, sr) {
                (Shape::Event(ng, hg), Shape::Event(nr, hr)) if ng == nr => {
                    let missing: Vec<_> = hr.difference(hg).collect();
                    let extra: Vec<_> = hg.difference(hr).collect();
                    problems.push(format!(
                        "lane {lane} frame {i} {nr}: headers missing {missing:?}, extra {extra:?}"
                    ));
                }
                _ => problems.push(format!(
                    "lane {lane} frame {i}: got {sg:?}, FreeSWITCH sent {sr:?}"
                )),
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{name}:\n  {}", problems.join("\n  ")))
    }
}

#[tokio::test]
async fn every_capture_replays_identically() {
    let dir = fixtures_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (check out shared/ beside the repository or set SWITCHY_FIXTURES)",
                dir.display()
            )
        })
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.path()
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .filter(|n| !n.ends_with(".transcript") && n != "README")
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 25, "{names:?}");
    let mut failures = Vec::new();
    for n in &names {
        if let Err(e) = replay(n).await {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} captures differ:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
}

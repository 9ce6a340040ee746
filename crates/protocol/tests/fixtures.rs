//! Golden tests: every byte-exact capture of a real FreeSWITCH in
//! `shared/fixtures/esl/` decodes into exactly the frames its transcript
//! lists, whatever the read boundaries, and re-encodes byte for byte.

use std::path::PathBuf;
use switchy_protocol::esl::{Decoder, Event, EventFormat, Message, server};

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("SWITCHY_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/esl"),
    }
}

fn captures() -> Vec<(String, Vec<u8>, String)> {
    let dir = fixtures_dir();
    let mut out = Vec::new();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "cannot read the ESL captures at {} ({e}): check out shared/ beside the repository or set SWITCHY_FIXTURES",
            dir.display()
        )
    });
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("bin") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).expect("capture readable");
        let transcript = std::fs::read_to_string(dir.join(format!("{name}.transcript.txt")))
            .expect("transcript readable");
        out.push((name, bytes, transcript));
    }
    out.sort();
    assert!(
        out.len() >= 25,
        "expected the full set of captures, found {}",
        out.len()
    );
    out
}

/// What one `RECV` line of a transcript says about a frame.
#[derive(Debug)]
struct Expected {
    offset: usize,
    len: usize,
    content_type: String,
    fields: Vec<(String, String)>,
}

fn unrepr(s: &str) -> String {
    // Undo Python's bytes repr for the escapes the transcripts use.
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('\\') => out.push('\\'),
                Some('\'') => out.push('\''),
                Some(o) => {
                    out.push('\\');
                    out.push(o);
                }
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_transcript(t: &str) -> Vec<Expected> {
    let mut v = Vec::new();
    for line in t.lines().filter(|l| l.starts_with("RECV @")) {
        let rest = &line["RECV @".len()..];
        let (offset, rest) = rest.split_once(' ').unwrap();
        let rest = rest.strip_prefix("len=").unwrap();
        let (len, rest) = rest.split_once(' ').unwrap();
        let (ct, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let mut fields = Vec::new();
        if let Some(r) = rest.strip_prefix("Reply-Text='") {
            fields.push(("Reply-Text".into(), r.trim_end_matches('\'').to_owned()));
        } else if let Some(r) = rest.strip_prefix("body=b'") {
            fields.push(("body".into(), unrepr(r.strip_suffix('\'').unwrap_or(r))));
        } else {
            for kv in rest.split(' ') {
                if let Some((k, v)) = kv.split_once('=') {
                    fields.push((k.to_owned(), v.to_owned()));
                }
            }
        }
        v.push(Expected {
            offset: offset.parse().unwrap(),
            len: len.parse().unwrap(),
            content_type: ct.to_owned(),
            fields,
        });
    }
    v
}

/// Decodes `bytes` fed in chunks cut at `cuts`; returns (start offset, message).
fn decode_with_cuts(bytes: &[u8], cuts: &[usize]) -> Vec<(usize, Message)> {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    let mut fed = 0;
    let mut consumed = 0;
    let mut bounds: Vec<usize> = cuts.to_vec();
    bounds.push(bytes.len());
    for &b in &bounds {
        d.feed(&bytes[fed..b]);
        fed = b;
        while let Some(m) = d.next_message().expect("captures decode without error") {
            let now = fed - d.buffered();
            out.push((consumed, m));
            consumed = now;
        }
    }
    assert_eq!(d.buffered(), 0, "bytes left over");
    out
}

fn content_type(m: &Message) -> String {
    match m {
        Message::AuthRequest => "auth/request".into(),
        Message::CommandReply(_) => "command/reply".into(),
        Message::ApiResponse(_) => "api/response".into(),
        Message::Event(f, _) => f.content_type().into(),
        Message::DisconnectNotice(_) => "text/disconnect-notice".into(),
        Message::LogData(_) => "log/data".into(),
        Message::RudeRejection(_) => "text/rude-rejection".into(),
        Message::Unknown(f) => f.content_type().unwrap_or("").into(),
    }
}

#[test]
fn every_capture_decodes_into_the_transcripts_frames() {
    for (name, bytes, transcript) in captures() {
        let expected = parse_transcript(&transcript);
        let got = decode_with_cuts(&bytes, &[]);
        assert_eq!(got.len(), expected.len(), "{name}: frame count");
        for (i, ((off, msg), exp)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(*off, exp.offset, "{name} frame {i}: offset");
            assert_eq!(content_type(msg), exp.content_type, "{name} frame {i}");
            let next = got.get(i + 1).map_or(bytes.len(), |(o, _)| *o);
            assert_eq!(next - off, exp.len, "{name} frame {i}: length");
            for (k, v) in &exp.fields {
                match (msg, k.as_str()) {
                    (Message::CommandReply(r), "Reply-Text") => {
                        assert_eq!(r.reply_text(), Some(v.as_str()), "{name} frame {i}")
                    }
                    (Message::ApiResponse(a), "body") => {
                        assert!(
                            a.text().starts_with(v.as_str()),
                            "{name} frame {i}: {:?} vs {v:?}",
                            a.text()
                        )
                    }
                    (Message::DisconnectNotice(f), "body") => {
                        assert_eq!(f.body.as_deref(), Some(v.as_bytes()), "{name} frame {i}")
                    }
                    (Message::LogData(f), "body") => {
                        assert!(
                            f.body.as_deref().unwrap().starts_with(v.as_bytes()),
                            "{name} frame {i}"
                        )
                    }
                    (Message::Event(_, e), field) => {
                        let actual = e.get(field).unwrap_or("None");
                        assert_eq!(actual, v, "{name} frame {i}: {field}")
                    }
                    (m, f) => panic!("{name} frame {i}: unexpected field {f} for {m:?}"),
                }
            }
        }
    }
}

#[test]
fn byte_at_a_time_gives_identical_results() {
    for (name, bytes, _) in captures() {
        let whole = decode_with_cuts(&bytes, &[]);
        let cuts: Vec<usize> = (1..bytes.len()).collect();
        let tiny = decode_with_cuts(&bytes, &cuts);
        assert_eq!(whole, tiny, "{name}");
    }
}

#[test]
fn every_two_piece_split_gives_identical_results() {
    for (name, bytes, _) in captures() {
        let whole = decode_with_cuts(&bytes, &[]);
        // Every position for the small captures; for the large ones every
        // position around each frame boundary (where bugs live) plus a stride.
        let positions: Vec<usize> = if bytes.len() <= 9_000 {
            (1..bytes.len()).collect()
        } else {
            let mut p: Vec<usize> = (1..bytes.len()).step_by(4001).collect();
            for (off, _) in &whole {
                p.extend(off.saturating_sub(6).max(1)..(off + 40).min(bytes.len()));
            }
            p
        };
        for k in positions {
            assert_eq!(decode_with_cuts(&bytes, &[k]), whole, "{name} split at {k}");
        }
    }
}

fn events_of(name: &str) -> Vec<(EventFormat, Event)> {
    let (_, bytes, _) = captures().into_iter().find(|(n, _, _)| n == name).unwrap();
    decode_with_cuts(&bytes, &[])
        .into_iter()
        .filter_map(|(_, m)| match m {
            Message::Event(f, e) => Some((f, e)),
            _ => None,
        })
        .collect()
}

#[test]
fn plain_session_values_are_decoded() {
    let events = events_of("esl-session-plain");
    assert_eq!(events.len(), 48);
    let job = events
        .iter()
        .map(|(_, e)| e)
        .find(|e| e.event_name() == Some("BACKGROUND_JOB"))
        .unwrap();
    assert_eq!(job.job_uuid(), Some("4c433358-bf0e-44fa-822f-e737c5a9cb54"));
    assert_eq!(
        job.body.as_deref(),
        Some(&b"+OK 29736606-53ed-4199-8cbf-7a752f53a94b\n"[..])
    );
    assert_eq!(
        job.get("Job-Command-Arg"),
        Some("sofia/external/doggy@127.0.0.1:5080 &park()")
    );
    assert_eq!(job.get("FreeSWITCH-IPv6"), Some("fd00::2"));
    assert_eq!(
        job.get("Event-Date-GMT"),
        Some("Mon, 23 Nov 2026 08:33:23 GMT")
    );
    assert_eq!(job.timestamp(), Some(1_795_422_803_217_570));
    assert_eq!(job.sequence(), Some(493));
    // No header named Content-Length is left in the event: it framed the body.
    assert!(!job.headers.contains("Content-Length"));

    let hc = events
        .iter()
        .map(|(_, e)| e)
        .find(|e| {
            e.event_name() == Some("CHANNEL_HANGUP_COMPLETE")
                && e.unique_id() == Some("7eefe6b2-7e89-4cb0-9993-87720a271cfb")
        })
        .unwrap();
    assert_eq!(
        hc.headers.get_all("Hangup-Cause").collect::<Vec<_>>(),
        vec!["MANAGER_REQUEST", "MANAGER_REQUEST"]
    );
    assert_eq!(hc.variable("sip_req_uri"), Some("doggy@127.0.0.1:5080"));
    assert_eq!(
        hc.variable("sip_call_id"),
        Some("62ef3d77-61bb-1240-ed84-8e880d7243f2")
    );
    assert_eq!(hc.get("Event-Date-Local"), Some("2026-11-23 08:33:24"));
    assert_eq!(hc.get("Call-Direction"), Some("inbound"));
    let sdp = hc.variable("rtp_local_sdp_str").unwrap();
    assert!(sdp.starts_with("v=0\r\no=FreeSWITCH "), "{sdp:?}");

    // The same call's legs are linked by the SIP Call-ID, not by call_uuid.
    let legs: Vec<_> = events
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e.event_name() == Some("CHANNEL_DESTROY"))
        .collect();
    assert_eq!(legs.len(), 2);
    assert_eq!(
        legs[0].variable("sip_call_id"),
        legs[1].variable("sip_call_id")
    );
    assert_ne!(legs[0].variable("call_uuid"), legs[1].variable("call_uuid"));
}

#[test]
fn json_and_plain_sessions_decode_to_the_same_shape() {
    let plain = events_of("esl-session-plain");
    let json = events_of("esl-session-json");
    assert!(json.iter().all(|(f, _)| *f == EventFormat::Json));
    let park = |evs: &[(EventFormat, Event)]| {
        evs.iter()
            .map(|(_, e)| e.clone())
            .find(|e| {
                e.event_name() == Some("CHANNEL_PARK") && e.get("Call-Direction") == Some("inbound")
            })
            .unwrap()
    };
    let (p, j) = (park(&plain), park(&json));
    let names = |e: &Event| {
        e.headers
            .iter()
            .map(|(n, _)| n.to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&p), names(&j), "same header names in the same order");
    for k in [
        "Channel-State",
        "Answer-State",
        "Caller-Destination-Number",
        "variable_sip_req_uri",
    ] {
        assert_eq!(p.get(k), j.get(k), "{k}");
    }
    let job = json
        .iter()
        .map(|(_, e)| e)
        .find(|e| e.event_name() == Some("BACKGROUND_JOB"))
        .unwrap();
    assert!(job.body_text().unwrap().starts_with("+OK "));
    assert!(!job.headers.contains("_body"));
}

#[test]
fn xml_background_job_is_decoded() {
    let events = events_of("event-xml-background-job");
    assert_eq!(events.len(), 1);
    let (f, e) = &events[0];
    assert_eq!(*f, EventFormat::Xml);
    assert_eq!(e.event_name(), Some("BACKGROUND_JOB"));
    assert_eq!(e.job_uuid(), Some("708d24d8-cc63-4394-9856-c4ff4d6c32be"));
    assert_eq!(e.get("Event-Date-Local"), Some("2026-11-23 08:33:34"));
    let body = e.body_text().unwrap();
    assert_eq!(body.len(), 334);
    assert!(
        body.starts_with("UP 0 years") && body.ends_with("240K/8192K\n"),
        "{body:?}"
    );
}

/// Re-encoding each decoded event gives FreeSWITCH's exact bytes back.
#[test]
fn events_re_encode_byte_for_byte() {
    for (name, bytes, _) in captures() {
        let mut d = Decoder::new();
        d.feed(&bytes);
        while let Some(frame) = d.next_frame().unwrap() {
            let format = match frame.content_type() {
                Some("text/event-plain") => EventFormat::Plain,
                Some("text/event-json") => EventFormat::Json,
                Some("text/event-xml") => EventFormat::Xml,
                _ => continue,
            };
            let body = frame.body.unwrap();
            let event = Event::decode(format, &body).unwrap();
            let again = event.encode(format);
            assert!(
                again == body,
                "{name}: {format:?} {:?} re-encodes differently:\n{}\n---\n{}",
                event.event_name(),
                String::from_utf8_lossy(&body),
                String::from_utf8_lossy(&again)
            );
            let mut framed = Vec::new();
            server::encode_event(&event, format, &mut framed);
            let mut d2 = Decoder::new();
            d2.feed(&framed);
            assert_eq!(
                d2.next_message().unwrap(),
                Some(Message::Event(format, event))
            );
        }
    }
}

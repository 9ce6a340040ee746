//! Decodes an ESL byte stream (a capture of what a FreeSWITCH sent on one
//! connection) and prints a summary: frames by type, events by name,
//! channels seen, background jobs and their results.
//!
//! ```text
//! cargo run --release -p switchy-protocol --example decode-capture -- ../shared/fixtures/esl/esl-session-plain.bin
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;
use switchy_protocol::esl::{Decoder, Message, api_result};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "-h" || a == "--help") {
        eprintln!(
            "usage: decode-capture FILE...\n\nDecodes ESL server bytes (e.g. ../shared/fixtures/esl/*.bin) and prints a summary."
        );
        return if args.is_empty() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let mut status = ExitCode::SUCCESS;
    for path in &args {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot read {path}: {e} (give the path of a capture file)");
                status = ExitCode::FAILURE;
                continue;
            }
        };
        let started = std::time::Instant::now();
        let mut d = Decoder::new();
        d.feed(&bytes);
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        let mut channels: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut jobs = Vec::new();
        let mut replies = Vec::new();
        loop {
            match d.next_message() {
                Ok(Some(m)) => {
                    let kind = match &m {
                        Message::AuthRequest => "auth/request".to_string(),
                        Message::CommandReply(r) => {
                            replies.push(r.reply_text().unwrap_or("").to_string());
                            "command/reply".into()
                        }
                        Message::ApiResponse(_) => "api/response".into(),
                        Message::Event(f, e) => {
                            let name = e.event_name().unwrap_or("?").to_string();
                            if let Some(u) = e.unique_id() {
                                let entry = channels.entry(u.to_string()).or_default();
                                entry.0 = e.get("Call-Direction").unwrap_or("").to_string();
                                entry.1 = name.clone();
                            }
                            if name == "BACKGROUND_JOB" {
                                let result = match api_result(e.body.as_deref().unwrap_or_default())
                                {
                                    Ok(t) => format!("ok {t}"),
                                    Err(err) => format!("failed: {}", err.reason()),
                                };
                                jobs.push((e.job_uuid().unwrap_or("?").to_string(), result));
                            }
                            *names.entry(name).or_default() += 1;
                            f.content_type().into()
                        }
                        Message::DisconnectNotice(_) => "text/disconnect-notice".into(),
                        Message::LogData(_) => "log/data".into(),
                        Message::RudeRejection(_) => "text/rude-rejection".into(),
                        Message::Unknown(f) => f.content_type().unwrap_or("(none)").to_string(),
                    };
                    *kinds.entry(kind).or_default() += 1;
                }
                Ok(None) => break,
                Err(e) if !e.is_fatal() => eprintln!("warning: {e}"),
                Err(e) => {
                    eprintln!("error: {path}: {e}");
                    status = ExitCode::FAILURE;
                    break;
                }
            }
        }
        let elapsed = started.elapsed();
        println!(
            "{path}: {} bytes decoded in {:.3} ms",
            bytes.len(),
            elapsed.as_secs_f64() * 1e3
        );
        println!("  frames:");
        for (k, n) in &kinds {
            println!("    {n:>5}  {k}");
        }
        if !replies.is_empty() {
            println!("  command replies: {}", replies.join(" | "));
        }
        if !names.is_empty() {
            println!("  events:");
            for (k, n) in &names {
                println!("    {n:>5}  {k}");
            }
        }
        if !channels.is_empty() {
            println!("  channels:");
            for (u, (dir, last)) in &channels {
                println!("    {u}  {dir:<8}  last event {last}");
            }
        }
        for (j, r) in &jobs {
            println!("  job {j}: {r}");
        }
        if d.buffered() > 0 {
            println!("  {} bytes of an incomplete frame at the end", d.buffered());
        }
    }
    status
}

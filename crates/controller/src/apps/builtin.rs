//! The built-in apps (switchy's classics), each a plain [`App`] built from
//! its parameters. Outbound legs are the ones the Originator (or
//! `originate`) created; inbound legs are what a FreeSWITCH received and
//! parked. Counters land in [`super::AppManager::stats`] as
//! `<app_id>.<name>`.

use super::{App, Ctx};
use crate::Invalid;
use crate::cluster::Verdict;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One catalogue entry.
pub struct Builtin {
    /// Name (`--app NAME`).
    pub name: &'static str,
    /// What it does, and its parameters with their defaults.
    pub doc: &'static str,
}

/// Every built-in app.
pub const CATALOG: &[Builtin] = &[
    Builtin {
        name: "TonePlay",
        doc: "Answers the inbound leg, which echoes; the outbound leg plays an endless 1004 Hz tone when answered. A steady media load for the system under test. Params: tone (default tone_stream://%(251,0,1004);loops=-1).",
    },
    Builtin {
        name: "PlayRec",
        doc: "Ping-pong on the outbound leg once answered: silence, then a tone, repeated; every rec_period-th cycle records the inbound (far) leg for one cycle. Hangs up after `iterations` cycles (about iterations × (silence + tone) seconds: hold the calls at least that long). Verdict: passed when every cycle ran, else failed (cut short at cycle N). Params: silence_ms (1000), tone (tone_stream://%(1000,0,1004);loops=1), rec_period (5), iterations (10), rec_dir (/tmp). Counters: cycles, recordings, passed, cut_short.",
    },
    Builtin {
        name: "Bert",
        doc: "Runs mod_bert's bert_test on both legs once answered and reads the sync-loss statistics at hangup. Params: duration_s (0: until hung up elsewhere). Counters: checked, sync_lost (calls that lost sync), lost_sync_events.",
    },
    Builtin {
        name: "DtmfChecker",
        doc: "The outbound leg sends a DTMF sequence once answered (uuid_send_dtmf, tone_ms each); the far leg collects what it receives; the verdict is passed when both match, failed otherwise or when the call ends first (both sequences are in the verdict and the log); then it hangs up. Params: digits (0123456789*#), tone_ms (100), timeout_ms (1000 + 600 per digit; a real FreeSWITCH 1.11 delivers about 2.5 digits per second whatever tone_ms: hold the calls long enough). Counters: passed, failed.",
    },
    Builtin {
        name: "CalleeRingback",
        doc: "The inbound leg rings back (ring_ready, 180) and never answers; the outbound leg hangs up ring_secs after it hears ringing. Params: ring_secs (1). Counters: rang.",
    },
    Builtin {
        name: "CalleeBlockOnInvite",
        doc: "The inbound leg refuses the INVITE with a SIP code. Params: code (486). Counters: blocked.",
    },
    Builtin {
        name: "Bridger",
        doc: "Bridges each parked inbound leg to its own request URI (sofia/<profile>/<sip_req_uri>). FreeSWITCH copies the leg's X- headers to the bridged leg, X-switchy-app included: next_app names the app the bridged leg runs if it reaches a switchy node (a self-call would loop otherwise). Params: profile (external), next_app (none). Counters: bridged.",
    },
    Builtin {
        name: "Proxier",
        doc: "Bridges each parked inbound leg to its request URI through a proxy (fs_path). Params: proxy (required: host:port), profile (external), next_app (as for Bridger). Counters: bridged.",
    },
    Builtin {
        name: "Park",
        doc: "Answers every parked inbound leg and leaves it parked: the callee of a load test (the default app of `run`). Counters: parked.",
    },
];

/// Parameters of a built-in app (`name=value`).
pub type Params = BTreeMap<String, String>;

fn p<T: std::str::FromStr>(params: &Params, k: &str, default: T) -> Result<T, Invalid> {
    match params.get(k) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| Invalid(format!("parameter {k}={v:?} is not valid"))),
    }
}

fn ps(params: &Params, k: &str, default: &str) -> String {
    params.get(k).cloned().unwrap_or_else(|| default.to_owned())
}

fn outbound(c: &Ctx) -> bool {
    c.direction() == "outbound"
}

/// The other leg of the session's call, as (node, uuid).
fn peer(c: &Ctx) -> Option<(String, String)> {
    for b in [c.header("Other-Leg-Unique-ID"), c.var("bridge_uuid")]
        .into_iter()
        .flatten()
    {
        let found = c
            .cluster
            .with_tracker(|t| t.session(b).map(|s| (s.node.clone(), b.to_owned())));
        if found.is_some() {
            return found;
        }
    }
    let var = c.cluster.config().tracking_var.clone();
    let id = c.channel_var(&var)?;
    c.cluster.with_tracker(|t| {
        t.call(&id)?
            .legs
            .iter()
            .find(|(_, u)| *u != c.uuid)
            .cloned()
    })
}

/// Builds a built-in app by name.
pub fn build(name: &str, params: &Params) -> Result<App, Invalid> {
    let entry = CATALOG
        .iter()
        .find(|b| b.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            Invalid(format!(
                "no built-in app {name:?}; `switchy-controller list-apps` lists: {}",
                CATALOG
                    .iter()
                    .map(|b| b.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let app = App::new(entry.name, entry.doc);
    match entry.name {
        "TonePlay" => tone_play(app, params),
        "PlayRec" => play_rec(app, params),
        "Bert" => bert(app, params),
        "DtmfChecker" => dtmf_checker(app, params),
        "CalleeRingback" => callee_ringback(app, params),
        "CalleeBlockOnInvite" => callee_block_on_invite(app, params),
        "Bridger" | "Proxier" => bridger(app, entry.name, params),
        "Park" => park(app, params),
        other => Err(Invalid(format!("built-in app {other} has no constructor"))),
    }
}

fn tone_play(app: App, params: &Params) -> Result<App, Invalid> {
    Ok({
        let tone = ps(params, "tone", "tone_stream://%(251,0,1004);loops=-1");
        app.on("CHANNEL_PARK", |c| async move {
            if !outbound(&c) {
                c.session().answer().await?;
            }
            Ok(())
        })
        .on("CHANNEL_ANSWER", move |c| {
            let tone = tone.clone();
            async move {
                if outbound(&c) {
                    c.execute_nowait("playback", &tone).await?;
                } else {
                    c.execute_nowait("echo", "").await?;
                }
                Ok(())
            }
        })
    })
}

fn play_rec(app: App, params: &Params) -> Result<App, Invalid> {
    Ok({
        let silence_ms: u64 = p(params, "silence_ms", 1000)?;
        let tone = ps(params, "tone", "tone_stream://%(1000,0,1004);loops=1");
        let rec_period: u64 = p(params, "rec_period", 5)?.max(1);
        let iterations: u64 = p(params, "iterations", 10)?;
        let rec_dir = ps(params, "rec_dir", "/tmp");
        let silence = format!("silence_stream://{silence_ms}");
        let s2 = silence.clone();
        app.on("CHANNEL_PARK", |c| async move {
            if !outbound(&c) {
                c.session().answer().await?;
            }
            Ok(())
        })
        .on("CHANNEL_ANSWER", move |c| {
            let silence = silence.clone();
            async move {
                if outbound(&c) {
                    c.data
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert("playrec.cycle".into(), "0".into());
                    c.verdict(Verdict::Failed(format!(
                        "cut short at cycle 0 of {iterations}"
                    )));
                    c.execute_nowait("playback", &silence).await?;
                }
                Ok(())
            }
        })
        .on("PLAYBACK_STOP", move |c| {
            let (tone, silence, rec_dir) = (tone.clone(), s2.clone(), rec_dir.clone());
            async move {
                // A playback a hangup interrupted: the call is over.
                if !outbound(&c) || c.ended() {
                    return Ok(());
                }
                let was_silence = c
                    .header("Playback-File-Path")
                    .or_else(|| c.var("playback_file_path"))
                    .is_some_and(|f| f.starts_with("silence_stream://"));
                if was_silence {
                    return Ok(c.execute_nowait("playback", &tone).await?);
                }
                // A cycle (silence + tone) ended.
                let cycle = {
                    let mut d = c.data.lock().unwrap_or_else(|p| p.into_inner());
                    let n = d
                        .get("playrec.cycle")
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                        + 1;
                    d.insert("playrec.cycle".into(), n.to_string());
                    n
                };
                c.count("cycles");
                c.verdict(if cycle >= iterations {
                    Verdict::Passed
                } else {
                    Verdict::Failed(format!("cut short at cycle {cycle} of {iterations}"))
                });
                let far = peer(&c);
                let recording = c
                    .data
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove("playrec.recording");
                if let (Some(path), Some((node, uuid))) = (&recording, &far) {
                    let s = crate::Session {
                        node: c.cluster.node(node),
                        uuid: uuid.clone(),
                    };
                    s.stop_record(path).await?;
                }
                if cycle >= iterations {
                    c.count("passed");
                    c.session().hangup("NORMAL_CLEARING").await?;
                    return Ok(());
                }
                if cycle % rec_period == 0
                    && let Some((node, uuid)) = &far
                {
                    let path = format!("{rec_dir}/playrec-{uuid}-{cycle}.wav");
                    let s = crate::Session {
                        node: c.cluster.node(node),
                        uuid: uuid.clone(),
                    };
                    s.start_record(&path).await?;
                    c.count("recordings");
                    c.data
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert("playrec.recording".into(), path);
                }
                c.execute_nowait("playback", &silence).await?;
                Ok(())
            }
        })
    })
}

fn bert(app: App, params: &Params) -> Result<App, Invalid> {
    Ok({
        let duration_s: u64 = p(params, "duration_s", 0)?;
        app.on("CHANNEL_PARK", |c| async move {
            if !outbound(&c) {
                c.session().answer().await?;
            }
            Ok(())
        })
        .on("CHANNEL_ANSWER", move |c| async move {
            c.execute_nowait("bert_test", "").await?;
            if outbound(&c) && duration_s > 0 {
                c.session()
                    .sched_hangup(duration_s, "NORMAL_CLEARING")
                    .await?;
            }
            Ok(())
        })
        .on("CUSTOM mod_bert::lost_sync", |c| async move {
            c.count("lost_sync_events");
            Ok(())
        })
        .on("CHANNEL_HANGUP", |c| async move {
            if c.var("bert_stats_sync_lost").is_some() {
                c.count("checked");
                let lost: u64 = c
                    .var("bert_stats_sync_lost")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if lost > 0 {
                    c.count("sync_lost");
                    tracing::warn!(node = %c.node, session = %c.uuid, lost, "BERT lost sync");
                }
            }
            Ok(())
        })
    })
}

fn dtmf_checker(app: App, params: &Params) -> Result<App, Invalid> {
    Ok({
        let digits = ps(params, "digits", "0123456789*#");
        if digits.is_empty()
            || !digits
                .chars()
                .all(|d| d.is_ascii_digit() || matches!(d, '*' | '#' | 'A'..='D'))
        {
            return Err(Invalid(format!(
                "DtmfChecker digits {digits:?} must be DTMF digits (0-9 * # A-D)"
            )));
        }
        let tone_ms: u64 = p(params, "tone_ms", 100)?;
        if !(40..=2000).contains(&tone_ms) {
            return Err(Invalid(format!(
                "DtmfChecker tone_ms {tone_ms} must be between 40 and 2000"
            )));
        }
        let timeout_ms: u64 = p(params, "timeout_ms", 1000 + 600 * digits.len() as u64)?;
        // Digits received, by the sender's session UUID.
        let got: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let notify = Arc::new(tokio::sync::Notify::new());
        let (g2, n2, d2) = (got.clone(), notify.clone(), digits.clone());
        app.on("CHANNEL_PARK", |c| async move {
                if !outbound(&c) {
                    c.session().answer().await?;
                }
                Ok(())
            })
            .on("DTMF", move |c| {
                let (got, notify, digits) = (g2.clone(), n2.clone(), d2.clone());
                async move {
                    if outbound(&c) {
                        return Ok(());
                    }
                    let Some((_, sender)) = peer(&c) else {
                        return Ok(());
                    };
                    let d = c.header("DTMF-Digit").unwrap_or("").to_owned();
                    let so_far = {
                        let mut g = got.lock().unwrap_or_else(|p| p.into_inner());
                        let e = g.entry(sender).or_default();
                        e.push_str(&d);
                        e.clone()
                    };
                    // Should the call end now, this is how far it got.
                    c.verdict(Verdict::Failed(format!(
                        "cut short: sent={digits} received={so_far}"
                    )));
                    notify.notify_waiters();
                    Ok(())
                }
            })
            .on("CHANNEL_ANSWER", move |c| {
                let (digits, got, notify) = (digits.clone(), got.clone(), notify.clone());
                async move {
                    if !outbound(&c) {
                        return Ok(());
                    }
                    got.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(c.uuid.clone(), String::new());
                    c.verdict(Verdict::Failed(format!(
                        "cut short: sent={digits} received="
                    )));
                    c.session()
                        .send_dtmf(&format!("{digits}@{tone_ms}"))
                        .await?;
                    let deadline =
                        tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
                    let received = loop {
                        let wait = notify.notified();
                        let now = got
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get(&c.uuid)
                            .cloned()
                            .unwrap_or_default();
                        if now.len() >= digits.len() {
                            break now;
                        }
                        if tokio::time::timeout_at(deadline, wait).await.is_err() {
                            break now;
                        }
                    };
                    got.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&c.uuid);
                    if received == digits {
                        c.count("passed");
                        c.verdict(Verdict::Passed);
                    } else {
                        c.count("failed");
                        let why = if c.ended() { "cut short: " } else { "" };
                        c.verdict(Verdict::Failed(format!(
                            "{why}sent={digits} received={received}"
                        )));
                        tracing::warn!(node = %c.node, session = %c.uuid, sent = %digits, received = %received, "DTMF check failed");
                    }
                    if !c.ended() {
                        c.session().hangup("NORMAL_CLEARING").await?;
                    }
                    Ok(())
                }
            })
    })
}

fn callee_ringback(app: App, params: &Params) -> Result<App, Invalid> {
    Ok({
        let ring_secs: f64 = p(params, "ring_secs", 1.0)?;
        let ring = Duration::from_secs_f64(ring_secs.max(0.0));
        app.needs(&["CHANNEL_EXECUTE_COMPLETE"])
            .on("CHANNEL_PARK", |c| async move {
                if !outbound(&c) {
                    c.execute("ring_ready", "", Duration::from_secs(10)).await?;
                }
                Ok(())
            })
            .on("CHANNEL_PROGRESS", move |c| async move {
                if outbound(&c) {
                    c.count("rang");
                    tokio::time::sleep(ring).await;
                    c.session().hangup("NORMAL_CLEARING").await?;
                }
                Ok(())
            })
    })
}

fn callee_block_on_invite(app: App, params: &Params) -> Result<App, Invalid> {
    Ok({
        let code: u16 = p(params, "code", 486)?;
        if !(300..700).contains(&code) {
            return Err(Invalid(format!(
                "CalleeBlockOnInvite code {code} must be a SIP failure (300–699)"
            )));
        }
        app.on("CHANNEL_PARK", move |c| async move {
            if !outbound(&c) {
                c.count("blocked");
                c.execute_nowait("respond", &code.to_string()).await?;
            }
            Ok(())
        })
    })
}

fn bridger(app: App, name: &str, params: &Params) -> Result<App, Invalid> {
    Ok({
        let proxy = params.get("proxy").cloned();
        if name == "Proxier" && proxy.is_none() {
            return Err(Invalid("Proxier needs proxy=host:port".into()));
        }
        let profile = ps(params, "profile", "external");
        let next_app = params.get("next_app").cloned();
        if let Some(n) = &next_app
            && (n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)))
        {
            return Err(Invalid(format!(
                "{name} next_app {n:?} must be an app id (letters, digits, _ - .)"
            )));
        }
        app.on("CHANNEL_PARK", move |c| {
            let (proxy, profile, next_app) = (proxy.clone(), profile.clone(), next_app.clone());
            async move {
                if outbound(&c) {
                    return Ok(());
                }
                {
                    let mut d = c.data.lock().unwrap_or_else(|p| p.into_inner());
                    if d.insert("bridger.done".into(), "1".into()).is_some() {
                        return Ok(());
                    }
                }
                let uri = c
                    .var("sip_req_uri")
                    .ok_or("no sip_req_uri on the parked channel")?
                    .to_owned();
                let spec = crate::router::BridgeSpec {
                    dest: Some(uri),
                    profile: Some(profile),
                    proxy,
                    vars: next_app
                        .map(|a| [("sip_h_X-switchy-app".to_owned(), a)].into())
                        .unwrap_or_default(),
                    ..Default::default()
                };
                // The request URI is the caller's: data, checked.
                let dial = crate::router::dial_string(&spec, &|s, c| {
                    switchy_protocol::esl::args::check(c, s)?;
                    Ok(s.to_owned())
                })?;
                c.count("bridged");
                c.execute_nowait("bridge", &dial).await?;
                Ok(())
            }
        })
    })
}

fn park(app: App, _params: &Params) -> Result<App, Invalid> {
    Ok(app.on("CHANNEL_PARK", |c| async move {
        {
            let mut d = c.data.lock().unwrap_or_else(|p| p.into_inner());
            if d.insert("park.seen".into(), "1".into()).is_some() {
                return Ok(());
            }
        }
        c.count("parked");
        if !outbound(&c) {
            c.session().answer().await?;
        }
        Ok(())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalog_entry_builds_and_listens() {
        for b in CATALOG {
            let mut params = Params::new();
            if b.name == "Proxier" {
                params.insert("proxy".into(), "10.0.0.1:5060".into());
            }
            let app = build(b.name, &params).expect(b.name);
            assert!(!app.events().is_empty(), "{} listens to nothing", b.name);
            assert!(!app.doc().is_empty());
        }
        assert!(build("Proxier", &Params::new()).is_err());
        assert!(build("Nope", &Params::new()).is_err());
        let bad: Params = [("code".to_owned(), "200".to_owned())].into();
        assert!(build("CalleeBlockOnInvite", &bad).is_err());
    }
}

//! RELAY media and devices in FreeSWITCH's terms: what to play for each
//! `play` item, the dial string of a device list, the hangup cause of an
//! end reason and the end reason of a hangup cause. Pure functions.

use serde_json::Value;
use switchy_protocol::esl::args::{self, Context};

/// One step of a play: a dialplan application and its argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// `playback` or `speak`.
    pub app: &'static str,
    /// Its argument.
    pub arg: String,
}

/// The text-to-speech engine (`speak ENGINE|VOICE|TEXT`), if configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tts {
    /// mod_flite's `flite`, mod_tts_commandline's `tts_commandline`, …
    pub engine: String,
    /// Default voice (`kal` for flite).
    pub voice: String,
}

/// A ringtone's cadence, by country (ITU-T E.180 tones, as FreeSWITCH's
/// `tone_stream://` writes them), and one cycle's length in ms.
fn ringtone(name: &str) -> Option<(&'static str, u64)> {
    Some(match name.to_ascii_lowercase().as_str() {
        "us" | "ca" | "mx" => ("%(2000,4000,440,480)", 6000),
        "uk" | "gb" | "ie" | "au" | "nz" => ("%(400,200,400,450);%(400,2000,400,450)", 3000),
        "de" | "at" | "ch" | "nl" | "be" | "dk" | "se" | "no" | "fi" | "pl" | "cz" => {
            ("%(1000,4000,425)", 5000)
        }
        "fr" => ("%(1500,3500,440)", 5000),
        "it" | "es" | "pt" | "gr" => ("%(1000,4000,425)", 5000),
        "jp" => ("%(1000,2000,400,416)", 3000),
        "in" => ("%(400,200,400,375);%(400,2000,400,375)", 3000),
        _ => return None,
    })
}

/// Text that goes into an application argument: nothing FreeSWITCH would
/// read as more than a value (line breaks, `${…}` expansions and API
/// calls, a leading `{…}`/`[…]` variable block; switchy's argument check).
fn clean(what: &str, s: &str) -> Result<String, String> {
    if s.contains(['\r', '\n', '\0']) {
        return Err(format!("{what}: line breaks are not allowed"));
    }
    if s.contains('!') {
        return Err(format!(
            "{what}: '!' separates files in FreeSWITCH; it cannot appear in one"
        ));
    }
    if s.starts_with(['{', '[']) {
        return Err(format!(
            "{what}: a leading {{…}} or […] would set FreeSWITCH variables"
        ));
    }
    args::check(Context::AppArg, s).map_err(|e| format!("{what}: {e}"))?;
    Ok(s.to_owned())
}

fn num(p: &Value, key: &str) -> Option<f64> {
    p.get(key).and_then(Value::as_f64)
}

/// The steps of a `play` list; an item switchy cannot play is refused
/// with a reason (answered at once as a 400).
pub fn play_steps(items: &Value, tts: Option<&Tts>) -> Result<Vec<Step>, String> {
    let Some(list) = items.as_array().filter(|l| !l.is_empty()) else {
        return Err("play must be a non-empty list of media".into());
    };
    let mut steps = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
        let p = item.get("params").cloned().unwrap_or(Value::Null);
        let at = |m: &str| format!("play[{i}] ({kind}): {m}");
        let step = match kind {
            "audio" => {
                let url = p.get("url").and_then(Value::as_str).unwrap_or("");
                if url.is_empty() {
                    return Err(at("params.url is required"));
                }
                Step {
                    app: "playback",
                    arg: clean(&at("url"), url)?,
                }
            }
            "silence" => {
                let secs = num(&p, "duration").unwrap_or(1.0);
                if !(0.0..=3600.0).contains(&secs) {
                    return Err(at("duration must be 0–3600 s"));
                }
                Step {
                    app: "playback",
                    arg: format!("silence_stream://{}", (secs * 1000.0).round() as u64),
                }
            }
            "ringtone" => {
                let name = p.get("name").and_then(Value::as_str).unwrap_or("us");
                let Some((tone, cycle)) = ringtone(name) else {
                    return Err(at(&format!(
                        "no ringtone for {name:?} (us, uk, de, fr, it, jp, in, …)"
                    )));
                };
                let arg = match num(&p, "duration") {
                    Some(d) if d > 0.0 => {
                        let loops = ((d * 1000.0) / cycle as f64).ceil().max(1.0) as u64;
                        format!("tone_stream://L={loops};{tone}")
                    }
                    _ => format!("tone_stream://L=1;{tone}"),
                };
                Step {
                    app: "playback",
                    arg,
                }
            }
            "tts" => {
                let text = p.get("text").and_then(Value::as_str).unwrap_or("");
                if text.is_empty() {
                    return Err(at("params.text is required"));
                }
                let Some(t) = tts else {
                    return Err(at(
                        "text-to-speech needs an engine: set [relay] tts_engine (and tts_voice) in the controller config, e.g. flite/kal with mod_flite loaded",
                    ));
                };
                let voice = p.get("voice").and_then(Value::as_str).unwrap_or(&t.voice);
                if text.contains('|') || voice.contains('|') {
                    return Err(at(
                        "'|' separates speak's fields; it cannot appear in the text or voice",
                    ));
                }
                Step {
                    app: "speak",
                    arg: clean(&at("text"), &format!("{}|{voice}|{text}", t.engine))?,
                }
            }
            other => {
                return Err(format!(
                    "play[{i}]: media type {other:?} is not audio, tts, silence or ringtone"
                ));
            }
        };
        steps.push(step);
    }
    Ok(steps)
}

/// A device's dial string: `phone` through the gateway (or profile), `sip`
/// to its URI.
pub fn device_dial(dev: &Value, phone_gateway: &str) -> Result<String, String> {
    let kind = dev.get("type").and_then(Value::as_str).unwrap_or("");
    let p = dev.get("params").cloned().unwrap_or(Value::Null);
    let s = match kind {
        "phone" => {
            let to = p.get("to_number").and_then(Value::as_str).unwrap_or("");
            if to.is_empty()
                || !to
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '+' || c == '*' || c == '#')
            {
                return Err(format!(
                    "phone device: to_number {to:?} must be digits (+, *, # allowed)"
                ));
            }
            phone_gateway.replace("{to}", to)
        }
        "sip" => {
            let to = p.get("to").and_then(Value::as_str).unwrap_or("");
            let uri = to.strip_prefix("sip:").unwrap_or(to);
            if uri.is_empty()
                || !uri
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "@.:-_+;=%".contains(c))
            {
                return Err(format!(
                    "sip device: to {to:?} is not a SIP URI switchy can dial"
                ));
            }
            format!("sofia/external/{uri}")
        }
        other => {
            return Err(format!(
                "device type {other:?}: switchy dials phone and sip devices"
            ));
        }
    };
    Ok(s)
}

/// The dial string of `devices` (a list of parallel groups dialled in
/// series): `a,b|c`.
pub fn devices_dial(devices: &Value, phone_gateway: &str) -> Result<String, String> {
    let Some(groups) = devices.as_array().filter(|g| !g.is_empty()) else {
        return Err("devices must be a non-empty list of device lists".into());
    };
    let mut serial = Vec::new();
    for g in groups {
        let Some(par) = g.as_array().filter(|p| !p.is_empty()) else {
            return Err("each entry of devices must be a non-empty list of devices".into());
        };
        let legs: Result<Vec<String>, String> =
            par.iter().map(|d| device_dial(d, phone_gateway)).collect();
        serial.push(legs?.join(","));
    }
    // Each device's part was checked character by character above; the
    // phone template is the operator's.
    Ok(serial.join("|"))
}

/// The legs of `devices`: serial groups of parallel (dial string, device).
pub fn devices_legs(
    devices: &Value,
    phone_gateway: &str,
) -> Result<Vec<Vec<(String, Value)>>, String> {
    devices_dial(devices, phone_gateway)?;
    let mut out = Vec::new();
    for g in devices.as_array().into_iter().flatten() {
        let mut par = Vec::new();
        for d in g.as_array().into_iter().flatten() {
            par.push((device_dial(d, phone_gateway)?, d.clone()));
        }
        out.push(par);
    }
    Ok(out)
}

/// The hangup cause for `calling.end`'s reason.
pub fn hangup_cause(reason: &str) -> &'static str {
    match reason {
        "busy" => "USER_BUSY",
        "cancel" => "ORIGINATOR_CANCEL",
        "decline" => "CALL_REJECTED",
        "error" => "NORMAL_TEMPORARY_FAILURE",
        _ => "NORMAL_CLEARING",
    }
}

/// RELAY's end reason for a hangup cause.
pub fn end_reason(cause: &str) -> &'static str {
    match cause {
        "NORMAL_CLEARING" | "" => "hangup",
        "ORIGINATOR_CANCEL" | "LOSE_RACE" => "cancel",
        "USER_BUSY" => "busy",
        "NO_ANSWER" | "NO_USER_RESPONSE" | "ALLOTTED_TIMEOUT" | "PROGRESS_TIMEOUT" => "noAnswer",
        "CALL_REJECTED" => "decline",
        "UNALLOCATED_NUMBER" | "NO_ROUTE_DESTINATION" | "INVALID_NUMBER_FORMAT" => "not_found",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn media_become_playback_steps_or_clear_refusals() {
        let s = play_steps(
            &json!([
                {"type": "audio", "params": {"url": "/tmp/a.wav"}},
                {"type": "silence", "params": {"duration": 0.5}},
                {"type": "ringtone", "params": {"name": "us", "duration": 10}},
            ]),
            None,
        )
        .unwrap();
        assert_eq!(
            s[0],
            Step {
                app: "playback",
                arg: "/tmp/a.wav".into()
            }
        );
        assert_eq!(s[1].arg, "silence_stream://500");
        assert_eq!(s[2].arg, "tone_stream://L=2;%(2000,4000,440,480)");
        let e = play_steps(&json!([{"type": "tts", "params": {"text": "hi"}}]), None).unwrap_err();
        assert!(e.contains("tts_engine"), "{e}");
        let t = Tts {
            engine: "flite".into(),
            voice: "kal".into(),
        };
        let s = play_steps(
            &json!([{"type": "tts", "params": {"text": "hi there"}}]),
            Some(&t),
        )
        .unwrap();
        assert_eq!(
            s[0],
            Step {
                app: "speak",
                arg: "flite|kal|hi there".into()
            }
        );
        for bad in [
            json!([{"type": "audio", "params": {"url": "${system(rm -rf /)}"}}]),
            json!([{"type": "audio", "params": {"url": "{absolute_codec_string=x}/a.wav"}}]),
            json!([]),
            json!([{"type": "audio", "params": {"url": "a\r\nb"}}]),
            json!([{"type": "audio", "params": {"url": "a!b"}}]),
            json!([{"type": "ringtone", "params": {"name": "zz"}}]),
            json!([{"type": "video"}]),
        ] {
            assert!(play_steps(&bad, Some(&t)).is_err(), "{bad}");
        }
    }

    #[test]
    fn devices_dial_in_series_of_parallel_groups() {
        let d = json!([
            [{"type": "phone", "params": {"to_number": "+15550001", "from_number": "+1"}},
             {"type": "sip", "params": {"to": "sip:alice@example.com"}}],
            [{"type": "phone", "params": {"to_number": "15550002"}}]
        ]);
        assert_eq!(
            devices_dial(&d, "sofia/gateway/gw/{to}").unwrap(),
            "sofia/gateway/gw/+15550001,sofia/external/alice@example.com|sofia/gateway/gw/15550002"
        );
        assert!(
            devices_dial(
                &json!([[{"type": "phone", "params": {"to_number": "1 2"}}]]),
                "x/{to}"
            )
            .is_err()
        );
        assert!(devices_dial(&json!([[{"type": "sip", "params": {"to": "a b@c"}}]]), "x").is_err());
        assert!(devices_dial(&json!([[]]), "x").is_err());
        let t = Tts {
            engine: "flite".into(),
            voice: "kal".into(),
        };
        let e = play_steps(
            &json!([{"type": "tts", "params": {"text": "say ${uuid_kill(all)}"}}]),
            Some(&t),
        )
        .unwrap_err();
        assert!(e.contains("${"), "{e}");
    }

    #[test]
    fn causes_and_reasons() {
        assert_eq!(end_reason("USER_BUSY"), "busy");
        assert_eq!(end_reason("SWITCHY_NODE_RESTARTED"), "error");
        assert_eq!(hangup_cause("hangup"), "NORMAL_CLEARING");
        assert_eq!(end_reason(hangup_cause("busy")), "busy");
    }
}

//! Results a RELAY server acknowledges requests with: `code` "200", the
//! method's usual message, and the identifiers its result schema declares,
//! echoed from the request. The outcome of an action comes later, as events.

use crate::schema::{Kind, SchemaIndex};
use serde_json::{Map, Value, json};

/// The message RELAY acknowledges `method` with.
pub fn default_message(method: &str) -> &'static str {
    match method {
        "calling.answer" => "Answered",
        "calling.end" => "Disconnecting call",
        "calling.pass" => "Passing call",
        "calling.connect" => "connecting",
        "calling.disconnect" => "Disconnecting",
        "calling.hold" => "Call on hold",
        "calling.unhold" => "Call off hold",
        "calling.denoise" => "Denoiser on",
        "calling.denoise.stop" => "Denoiser off",
        "calling.transfer" => "Transferring",
        "calling.join_conference" => "Joining conference",
        "calling.leave_conference" => "Leaving conference",
        "calling.echo" => "Echo started",
        "calling.bind_digit" => "Digit binding created",
        "calling.clear_digit_bindings" => "Digit bindings cleared",
        "calling.live_transcribe" => "Live transcription started",
        "calling.live_translate" => "Live translation started",
        "calling.join_room" => "Joining room",
        "calling.leave_room" => "Leaving room",
        "calling.amazon_bedrock" | "calling.ai" => "AI started",
        "calling.ai.stop" => "AI stopped",
        "calling.ai_message" => "Message sent",
        "calling.ai_hold" => "AI on hold",
        "calling.ai_unhold" => "AI resumed",
        "calling.user_event" => "Event sent",
        "calling.queue.enter" => "Entering Queue",
        "calling.queue.leave" => "Leaving Queue",
        "calling.refer" => "Starting SIP REFER",
        "calling.send_digits" => "Sending Digits",
        "calling.dial" => "Dialing",
        "calling.begin" => "Call started",
        "calling.receive" => "Receiving events",
        "calling.play" => "Playing",
        "calling.play.stop" => "Stopping",
        "calling.play.pause" => "Paused",
        "calling.play.resume" => "Resumed",
        "calling.play.volume" | "calling.play_and_collect.volume" => "Volume set",
        "calling.record" => "Recording",
        "calling.record.stop" => "Stopped recording",
        "calling.record.pause" => "Recording paused",
        "calling.record.resume" => "Recording resumed",
        "calling.detect" => "Detect started",
        "calling.detect.stop" => "Detect stopped",
        "calling.collect" => "Collecting",
        "calling.collect.stop" => "Collect stopped",
        "calling.collect.start_input_timers" => "Started input timers",
        "calling.play_and_collect" => "Playing and collecting",
        "calling.play_and_collect.stop" => "Stopping play and collect",
        "calling.pay" => "Pay started",
        "calling.pay.stop" => "Pay stopped",
        "calling.send_fax" => "Sending fax",
        "calling.send_fax.stop" => "Fax send stopped",
        "calling.receive_fax" => "Receiving fax",
        "calling.receive_fax.stop" => "Fax receive stopped",
        "calling.tap" => "Tap started",
        "calling.tap.stop" => "Tap stopped",
        "calling.stream" => "Stream started",
        "calling.stream.stop" => "Stream stopped",
        "calling.transcribe" => "Transcribe started",
        "calling.transcribe.stop" => "Transcribe stopped",
        "messaging.send" => "Message accepted",
        _ => "OK",
    }
}

/// Keys never echoed: the envelope's own.
const NOT_ECHOED: &[&str] = &["code", "message", "data", "message_data", "result"];

/// The result for `method` called with `params`, shaped by its result
/// schema: identifiers it declares are echoed from the params.
pub fn synthesize(method: &str, params: &Value, schemas: &SchemaIndex) -> Map<String, Value> {
    let mut r = Map::new();
    r.insert("code".into(), json!("200"));
    r.insert("message".into(), json!(default_message(method)));
    match method {
        // The dial's call id arrives in its events, never in the result.
        "calling.dial" => return r,
        "messaging.send" => {
            r.insert("message_id".into(), json!(uuid::Uuid::new_v4().to_string()));
            return r;
        }
        "calling.begin" => {
            r.insert("call_id".into(), json!(uuid::Uuid::new_v4().to_string()));
            r.insert("node_id".into(), json!(crate::NODE_ID));
            return r;
        }
        _ => {}
    }
    let declared: Vec<&str> = match schemas.get(method, Kind::Result) {
        Some(spec) => spec.properties.iter().map(String::as_str).collect(),
        None => vec!["call_id", "control_id"],
    };
    for key in declared {
        if NOT_ECHOED.contains(&key) {
            continue;
        }
        if let Some(Value::String(v)) = params.get(key)
            && !v.is_empty()
        {
            r.insert(key.to_owned(), json!(v));
        }
    }
    r
}

/// The event type a method's scripted events default to:
/// `calling.play` → `calling.call.play`, `calling.record.stop` →
/// `calling.call.record`; `messaging.*` and others keep their name.
pub fn default_event_type(method: &str) -> String {
    match method.strip_prefix("calling.") {
        Some(rest) if method != "calling.dial" => {
            let verb = rest.split('.').next().unwrap_or(rest);
            format!("calling.call.{verb}")
        }
        _ => method.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_declared_identifiers_only() {
        let s = SchemaIndex::embedded();
        let p = json!({"call_id":"c1","node_id":"n1","control_id":"k1","play":[]});
        let r = synthesize("calling.play", &p, &s);
        assert_eq!(r["code"], "200");
        assert_eq!(r["message"], "Playing");
        assert_eq!(r["call_id"], "c1");
        assert_eq!(r["control_id"], "k1");
        assert!(!r.contains_key("node_id"), "{r:?}");
        assert!(!r.contains_key("play"));
        // Answer's result declares no call_id.
        let r = synthesize("calling.answer", &p, &s);
        assert!(!r.contains_key("call_id"), "{r:?}");
        let r = synthesize("calling.dial", &json!({"tag":"t"}), &s);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn synthesized_results_match_their_schemas() {
        let s = SchemaIndex::embedded();
        for spec in s.list() {
            if spec.kind != Kind::Result || spec.method.starts_with("signalwire.") {
                continue;
            }
            let p = json!({"call_id":"c","control_id":"k","node_id":"n"});
            let r = Value::Object(synthesize(&spec.method, &p, &s));
            assert!(
                s.validate(&spec.method, Kind::Result, &r).is_ok(),
                "{}: {r}",
                spec.method
            );
        }
    }

    #[test]
    fn event_types_follow_the_verb() {
        assert_eq!(default_event_type("calling.play"), "calling.call.play");
        assert_eq!(
            default_event_type("calling.record.stop"),
            "calling.call.record"
        );
        assert_eq!(default_event_type("calling.dial"), "calling.dial");
        assert_eq!(default_event_type("messaging.send"), "messaging.send");
    }
}

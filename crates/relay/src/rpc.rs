//! JSON-RPC 2.0 frames as RELAY uses them: what a frame is, and the
//! responses, errors and server-initiated requests the server writes.

use serde_json::{Map, Value, json};

/// The largest text frame accepted (the SDKs' own limit is 10 MiB).
pub const MAX_FRAME_BYTES: usize = 10 * 1024 * 1024;

/// The errors a RELAY server answers with. JSON-RPC wants integer codes;
/// RELAY's own names (switchblade's) go in `error.data.signalwire_error_code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frame is not JSON.
    ParseError,
    /// JSON, but not a JSON-RPC 2.0 object.
    InvalidRequest,
    /// Not authenticated, or bad credentials.
    AuthRequired,
    /// Params do not match the method's schema.
    InvalidParams,
    /// No such method.
    UnknownMethod,
    /// The server failed.
    Internal,
}

impl ErrorCode {
    /// The JSON-RPC integer code.
    pub fn code(self) -> i64 {
        match self {
            Self::ParseError => -32700,
            Self::InvalidRequest => -32600,
            Self::AuthRequired => -32401,
            Self::InvalidParams => -32602,
            Self::UnknownMethod => -32601,
            Self::Internal => -32603,
        }
    }

    /// RELAY's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::ParseError => "PARSE_ERROR",
            Self::InvalidRequest => "INVALID_REQUEST",
            Self::AuthRequired => "AUTH_REQUIRED",
            Self::InvalidParams => "INVALID_PARAMS",
            Self::UnknownMethod => "UNKNOWN_METHOD",
            Self::Internal => "INTERNAL_ERROR",
        }
    }
}

/// What one incoming frame is.
#[derive(Debug, PartialEq)]
pub enum Incoming<'a> {
    /// A request: answer it with the same `id`.
    Request {
        /// Its id, echoed as sent.
        id: &'a Value,
        /// The method.
        method: &'a str,
        /// Its params (`{}` when absent).
        params: &'a Value,
    },
    /// A method without an id: nothing to answer.
    Notification {
        /// The method.
        method: &'a str,
        /// Its params.
        params: &'a Value,
    },
    /// A response to a frame the server sent (an event ack, a pong).
    Response {
        /// The id of the server's frame.
        id: &'a Value,
        /// An `error` rather than a `result`.
        is_error: bool,
    },
}

static EMPTY: Value = Value::Null;

/// Classifies a parsed frame; `Err` says why it is not JSON-RPC.
pub fn classify(frame: &Value) -> Result<Incoming<'_>, &'static str> {
    let Value::Object(o) = frame else {
        return Err("a frame must be a JSON object");
    };
    let params = o.get("params").unwrap_or(&EMPTY);
    match (o.get("method"), o.get("id")) {
        (Some(Value::String(method)), Some(id)) if !id.is_null() => {
            Ok(Incoming::Request { id, method, params })
        }
        (Some(Value::String(method)), _) => Ok(Incoming::Notification { method, params }),
        (Some(_), _) => Err("\"method\" must be a string"),
        (None, Some(id)) if o.contains_key("result") || o.contains_key("error") => {
            Ok(Incoming::Response {
                id,
                is_error: o.contains_key("error"),
            })
        }
        (None, _) => Err("a frame needs a \"method\", or an \"id\" with a \"result\" or \"error\""),
    }
}

/// The method a frame names, for the journal ("" for responses).
pub fn method_of(frame: &Value) -> &str {
    frame.get("method").and_then(Value::as_str).unwrap_or("")
}

/// The id of a frame as text, for the journal ("" when none).
pub fn id_text(frame: &Value) -> String {
    match frame.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

/// A success response.
pub fn response(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// An error response.
pub fn error(id: &Value, code: ErrorCode, message: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {
            "code": code.code(),
            "message": message,
            "data": {"signalwire_error_code": code.name()},
        },
    })
}

/// A server-initiated request (`signalwire.ping`, `signalwire.disconnect`)
/// with a fresh id.
pub fn request(method: &str, params: Value) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": uuid::Uuid::new_v4().to_string(),
        "method": method,
        "params": params,
    })
}

/// A `signalwire.event` frame carrying `event_type` and its params.
pub fn event(event_type: &str, params: Map<String, Value>) -> Value {
    request(
        "signalwire.event",
        json!({"event_type": event_type, "params": Value::Object(params)}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_each_kind_of_frame() {
        let req = json!({"jsonrpc":"2.0","id":"1","method":"calling.answer","params":{"a":1}});
        assert!(matches!(
            classify(&req),
            Ok(Incoming::Request {
                method: "calling.answer",
                ..
            })
        ));
        let note = json!({"jsonrpc":"2.0","method":"x"});
        assert!(matches!(
            classify(&note),
            Ok(Incoming::Notification { method: "x", .. })
        ));
        let null_id = json!({"jsonrpc":"2.0","id":null,"method":"x"});
        assert!(matches!(
            classify(&null_id),
            Ok(Incoming::Notification { .. })
        ));
        let ack = json!({"jsonrpc":"2.0","id":"9","result":{}});
        assert_eq!(
            classify(&ack),
            Ok(Incoming::Response {
                id: &json!("9"),
                is_error: false
            })
        );
        assert!(classify(&json!([1, 2])).is_err());
        assert!(classify(&json!({"method": 5, "id": 1})).is_err());
        assert!(classify(&json!({"id": 1})).is_err());
    }

    #[test]
    fn errors_carry_both_codes_and_echo_the_id() {
        let e = error(&json!(7), ErrorCode::AuthRequired, "no");
        assert_eq!(e["id"], 7);
        assert_eq!(e["error"]["code"], -32401);
        assert_eq!(e["error"]["data"]["signalwire_error_code"], "AUTH_REQUIRED");
    }

    #[test]
    fn events_wrap_their_type_and_params() {
        let mut p = Map::new();
        p.insert("call_id".into(), json!("c1"));
        let f = event("calling.call.state", p);
        assert_eq!(f["method"], "signalwire.event");
        assert_eq!(f["params"]["event_type"], "calling.call.state");
        assert_eq!(f["params"]["params"]["call_id"], "c1");
        assert!(f["id"].as_str().is_some_and(|s| s.len() == 36));
    }
}

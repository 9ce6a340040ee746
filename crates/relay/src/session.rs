//! One RELAY connection's protocol state, sans-IO: frames in, actions out.
//! The envelope is handled here (connect, resume, ping, receive, disconnect,
//! `signalwire.execute` unwrapping, params checked against the schemas);
//! call-control requests are handed to the caller as [`Command`]s, which the
//! mock answers from its scenarios and the controller from FreeSWITCH.

use crate::auth::{AuthError, ConnectParams, Credentials, Grant, Protocols};
use crate::rpc::{self, ErrorCode, Incoming};
use crate::schema::{Kind, SchemaIndex};
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::sync::Mutex;

/// Checks credentials and keeps the protocol strings (shared by all sessions).
pub struct Gate {
    protocols: Mutex<Protocols>,
    creds: Box<dyn Credentials>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").finish_non_exhaustive()
    }
}

impl Gate {
    /// A gate accepting what `creds` accepts.
    pub fn new(creds: Box<dyn Credentials>) -> Gate {
        Gate {
            protocols: Mutex::new(Protocols::default()),
            creds,
        }
    }

    fn protocols(&self) -> std::sync::MutexGuard<'_, Protocols> {
        self.protocols
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A connect: resume by protocol string if it is known, else fresh
    /// credentials. `Ok((grant, restored))`.
    pub fn connect(&self, p: &ConnectParams) -> Result<(Grant, bool), AuthError> {
        let mut ps = self.protocols();
        if !p.protocol.is_empty()
            && let Some(g) = ps.resume(&p.protocol)
        {
            return Ok((g, true));
        }
        ps.issue(p, self.creds.as_ref()).map(|g| (g, false))
    }

    /// `signalwire.reauthenticate`: fresh credentials.
    pub fn reauthenticate(&self, p: &ConnectParams) -> Result<Grant, AuthError> {
        if p.project.is_empty() && p.token.is_empty() && p.jwt_token.is_empty() {
            return Err(AuthError::ProjectMissing);
        }
        self.protocols().issue(p, self.creds.as_ref())
    }
}

/// A call-control request for the backend to acknowledge (with [`Command::ack`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    /// The request id (`None`: a notification, nothing to answer).
    pub id: Option<Value>,
    /// `calling.play`, ….
    pub method: String,
    /// Its params (checked against the schema).
    pub params: Value,
    /// `requester_nodeid` of a `signalwire.execute`.
    pub requester: String,
}

/// The node id this server reports.
pub const fn responder() -> &'static str {
    crate::NODE_ID
}

impl Command {
    /// The response: `result` at the top level (as the SDKs read it), with
    /// the execute envelope's node ids beside it.
    pub fn ack(&self, mut result: Map<String, Value>) -> Option<Value> {
        let id = self.id.as_ref()?;
        result
            .entry("requester_nodeid")
            .or_insert_with(|| json!(self.requester));
        result
            .entry("responder_nodeid")
            .or_insert_with(|| json!(responder()));
        Some(rpc::response(id, Value::Object(result)))
    }

    /// An error response.
    pub fn fail(&self, code: ErrorCode, message: &str) -> Option<Value> {
        Some(rpc::error(self.id.as_ref()?, code, message))
    }
}

/// What the connection must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send this frame.
    Send(Value),
    /// Answer this request (the backend's job).
    Execute(Command),
    /// The session authenticated (or resumed).
    Connected {
        /// Its protocol string.
        protocol: String,
        /// Resumed by protocol string.
        restored: bool,
    },
    /// The client acknowledged a frame the server sent.
    Acked {
        /// That frame's id.
        id: Value,
    },
    /// Close the connection (after sending what came before).
    Close,
}

/// One connection's state.
#[derive(Debug)]
pub struct Session {
    /// Server-issued session id (returned as `sessionid`).
    pub id: String,
    grant: Option<Grant>,
    /// Contexts it receives calls for.
    pub contexts: BTreeSet<String>,
}

fn context_list(params: &Value) -> Vec<String> {
    match params.get("contexts") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

impl Session {
    /// A new, unauthenticated session.
    pub fn new(id: String) -> Session {
        Session {
            id,
            grant: None,
            contexts: BTreeSet::new(),
        }
    }

    /// Its protocol string, once connected.
    pub fn protocol(&self) -> Option<&str> {
        self.grant.as_ref().map(|g| g.protocol.as_str())
    }

    /// Its project, once connected.
    pub fn project(&self) -> Option<&str> {
        self.grant.as_ref().map(|g| g.project.as_str())
    }

    /// The answer to a frame that is not JSON.
    pub fn unparsable(why: &str) -> Value {
        rpc::error(
            &Value::Null,
            ErrorCode::ParseError,
            &format!("not JSON: {why}"),
        )
    }

    /// Handles one parsed frame.
    pub fn handle(&mut self, frame: &Value, schemas: &SchemaIndex, gate: &Gate) -> Vec<Action> {
        let (id, method, params) = match rpc::classify(frame) {
            Err(why) => {
                let id = frame.get("id").cloned().unwrap_or(Value::Null);
                return vec![Action::Send(rpc::error(
                    &id,
                    ErrorCode::InvalidRequest,
                    why,
                ))];
            }
            Ok(Incoming::Response { id, .. }) => return vec![Action::Acked { id: id.clone() }],
            Ok(Incoming::Request { id, method, params }) => (Some(id), method, params),
            Ok(Incoming::Notification { method, params }) => (None, method, params),
        };
        let reply = |v: Value| id.map(|_| Action::Send(v)).into_iter().collect::<Vec<_>>();
        let err = |code: ErrorCode, msg: &str| match id {
            Some(i) => vec![Action::Send(rpc::error(i, code, msg))],
            None => Vec::new(),
        };
        match method {
            "signalwire.connect" => self.connect(id, params, gate),
            "signalwire.ping" => reply(rpc::response(
                id.unwrap_or(&Value::Null),
                json!({"timestamp": crate::now_secs()}),
            )),
            "signalwire.disconnect" => {
                let mut a = reply(rpc::response(id.unwrap_or(&Value::Null), json!({})));
                a.push(Action::Close);
                a
            }
            _ if self.grant.is_none() => err(
                ErrorCode::AuthRequired,
                &format!("{method}: not authenticated; send signalwire.connect first"),
            ),
            "signalwire.reauthenticate" => {
                let p = ConnectParams::parse(params);
                match gate.reauthenticate(&p) {
                    Ok(g) => {
                        let r = json!({"authentication": g.identity, "authorization": {}});
                        self.grant = Some(g);
                        reply(rpc::response(id.unwrap_or(&Value::Null), r))
                    }
                    Err(e) => err(ErrorCode::AuthRequired, &e.to_string()),
                }
            }
            "signalwire.receive" | "signalwire.unreceive" => {
                let cs = context_list(params);
                if method == "signalwire.receive" {
                    self.contexts.extend(cs);
                } else {
                    for c in &cs {
                        self.contexts.remove(c);
                    }
                }
                reply(rpc::response(
                    id.unwrap_or(&Value::Null),
                    json!({"code": "200", "message": "OK"}),
                ))
            }
            "signalwire.execute" => {
                let Value::Object(o) = params else {
                    return err(ErrorCode::InvalidParams, "execute params must be an object");
                };
                let inner_method = match o.get("method") {
                    Some(Value::String(m)) if !m.is_empty() => m.as_str(),
                    _ => {
                        return err(
                            ErrorCode::InvalidParams,
                            "execute requires a 'method' field",
                        );
                    }
                };
                let inner = o.get("params").cloned().unwrap_or_else(|| json!({}));
                let requester = o
                    .get("requester_nodeid")
                    .or_else(|| o.get("requester_identity"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                self.command(id, inner_method, inner, requester, schemas)
            }
            m if m.starts_with("calling.") || m.starts_with("messaging.") => {
                let requester = params
                    .get("requester_nodeid")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let p = if params.is_null() {
                    json!({})
                } else {
                    params.clone()
                };
                self.command(id, m, p, requester, schemas)
            }
            other => err(
                ErrorCode::UnknownMethod,
                &format!("Unknown method '{other}'"),
            ),
        }
    }

    fn connect(&mut self, id: Option<&Value>, params: &Value, gate: &Gate) -> Vec<Action> {
        let p = ConnectParams::parse(params);
        let Some(id) = id else {
            return Vec::new();
        };
        match gate.connect(&p) {
            Ok((grant, restored)) => {
                let contexts = if p.contexts.is_empty() && restored {
                    grant.contexts.clone()
                } else {
                    p.contexts.clone()
                };
                self.contexts.extend(contexts.iter().cloned());
                let result = crate::auth::connect_result(&grant, &contexts, restored, &self.id);
                let protocol = grant.protocol.clone();
                self.grant = Some(grant);
                vec![
                    Action::Send(rpc::response(id, result)),
                    Action::Connected { protocol, restored },
                ]
            }
            Err(e) => vec![Action::Send(rpc::error(
                id,
                ErrorCode::AuthRequired,
                &e.to_string(),
            ))],
        }
    }

    fn command(
        &mut self,
        id: Option<&Value>,
        method: &str,
        params: Value,
        requester: &str,
        schemas: &SchemaIndex,
    ) -> Vec<Action> {
        if !params.is_object() {
            return match id {
                Some(i) => vec![Action::Send(rpc::error(
                    i,
                    ErrorCode::InvalidParams,
                    &format!("{method}: params must be an object"),
                ))],
                None => Vec::new(),
            };
        }
        if let Err(why) = schemas.validate(method, Kind::Params, &params) {
            return match id {
                Some(i) => vec![Action::Send(rpc::error(i, ErrorCode::InvalidParams, &why))],
                None => Vec::new(),
            };
        }
        vec![Action::Execute(Command {
            id: id.cloned(),
            method: method.to_owned(),
            params,
            requester: requester.to_owned(),
        })]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AnyNonEmpty;

    fn setup() -> (SchemaIndex, Gate) {
        (SchemaIndex::embedded(), Gate::new(Box::new(AnyNonEmpty)))
    }

    fn connect_frame(project: &str, protocol: Option<&str>) -> Value {
        let mut p = json!({
            "version": {"major": 2, "minor": 0, "revision": 0},
            "authentication": {"project": project, "token": "t"},
            "contexts": ["default"],
        });
        if let Some(pr) = protocol {
            p["protocol"] = json!(pr);
        }
        json!({"jsonrpc": "2.0", "id": "c1", "method": "signalwire.connect", "params": p})
    }

    fn sent(actions: &[Action]) -> Vec<&Value> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(v) => Some(v),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn commands_before_connect_are_refused() {
        let (s, g) = setup();
        let mut sess = Session::new("s1".into());
        let a = sess.handle(
            &json!({"jsonrpc":"2.0","id":"1","method":"calling.answer","params":{}}),
            &s,
            &g,
        );
        assert_eq!(
            sent(&a)[0]["error"]["data"]["signalwire_error_code"],
            "AUTH_REQUIRED"
        );
        // A ping is answered even so.
        let a = sess.handle(
            &json!({"jsonrpc":"2.0","id":"2","method":"signalwire.ping"}),
            &s,
            &g,
        );
        assert!(sent(&a)[0]["result"]["timestamp"].as_f64().is_some());
    }

    #[test]
    fn connect_then_resume_by_protocol() {
        let (s, g) = setup();
        let mut a = Session::new("s1".into());
        let acts = a.handle(&connect_frame("p", None), &s, &g);
        let r = &sent(&acts)[0]["result"];
        assert_eq!(r["session_restored"], false);
        assert_eq!(r["sessionid"], "s1");
        assert_eq!(r["subscriptions"][0]["channel"], "default");
        let protocol = r["protocol"].as_str().unwrap().to_owned();
        assert!(a.contexts.contains("default"));

        let mut b = Session::new("s2".into());
        let acts = b.handle(&connect_frame("p", Some(&protocol)), &s, &g);
        assert_eq!(sent(&acts)[0]["result"]["session_restored"], true);
        assert_eq!(sent(&acts)[0]["result"]["protocol"], protocol.as_str());
        assert!(acts.contains(&Action::Connected {
            protocol: protocol.clone(),
            restored: true
        }));

        // An unknown protocol string falls back to fresh credentials.
        let mut c = Session::new("s3".into());
        let acts = c.handle(&connect_frame("p", Some("signalwire_bogus")), &s, &g);
        assert_eq!(sent(&acts)[0]["result"]["session_restored"], false);
        // Empty credentials are refused.
        let mut d = Session::new("s4".into());
        let acts = d.handle(&connect_frame("", None), &s, &g);
        assert_eq!(sent(&acts)[0]["error"]["code"], -32401);
        assert!(d.protocol().is_none());
    }

    #[test]
    fn both_request_forms_become_checked_commands() {
        let (s, g) = setup();
        let mut a = Session::new("s1".into());
        a.handle(&connect_frame("p", None), &s, &g);
        let flat = json!({"jsonrpc":"2.0","id":"9","method":"calling.answer",
            "params":{"node_id":"n","call_id":"c"}});
        let wrapped = json!({"jsonrpc":"2.0","id":"9","method":"signalwire.execute",
            "params":{"protocol":"x","method":"calling.answer","params":{"node_id":"n","call_id":"c"}}});
        for f in [flat, wrapped] {
            let acts = a.handle(&f, &s, &g);
            let [Action::Execute(cmd)] = acts.as_slice() else {
                panic!("{acts:?}")
            };
            assert_eq!(cmd.method, "calling.answer");
            assert_eq!(cmd.params["call_id"], "c");
            let r = cmd
                .ack(crate::synth::synthesize(&cmd.method, &cmd.params, &s))
                .unwrap();
            assert_eq!(r["result"]["code"], "200");
            assert_eq!(r["result"]["responder_nodeid"], crate::NODE_ID);
        }
        let bad =
            json!({"jsonrpc":"2.0","id":"10","method":"calling.answer","params":{"call_id": 5}});
        let acts = a.handle(&bad, &s, &g);
        let e = &sent(&acts)[0]["error"];
        assert_eq!(e["code"], -32602);
        assert!(e["message"].as_str().unwrap().contains("/call_id"), "{e}");
        let acts = a.handle(
            &json!({"jsonrpc":"2.0","id":"11","method":"bogus.thing"}),
            &s,
            &g,
        );
        assert_eq!(sent(&acts)[0]["error"]["code"], -32601);
        let acts = a.handle(
            &json!({"jsonrpc":"2.0","id":"12","method":"signalwire.execute","params":{"params":{}}}),
            &s,
            &g,
        );
        assert_eq!(sent(&acts)[0]["error"]["code"], -32602);
    }

    #[test]
    fn acks_receive_and_disconnect() {
        let (s, g) = setup();
        let mut a = Session::new("s1".into());
        a.handle(&connect_frame("p", None), &s, &g);
        let acts = a.handle(&json!({"jsonrpc":"2.0","id":"e1","result":{}}), &s, &g);
        assert_eq!(acts, vec![Action::Acked { id: json!("e1") }]);
        a.handle(
            &json!({"jsonrpc":"2.0","id":"r","method":"signalwire.receive","params":{"contexts":["office"]}}),
            &s,
            &g,
        );
        assert!(a.contexts.contains("office"));
        let acts = a.handle(
            &json!({"jsonrpc":"2.0","id":"d","method":"signalwire.disconnect"}),
            &s,
            &g,
        );
        assert_eq!(acts.last(), Some(&Action::Close));
        let acts = a.handle(&json!([1]), &s, &g);
        assert_eq!(sent(&acts)[0]["error"]["code"], -32600);
    }
}

//! `signalwire.connect`: credentials, protocol strings and resuming a
//! session by the protocol string a previous connect issued.

use serde_json::{Value, json};
use std::collections::HashMap;

/// What a `signalwire.connect` (or reauthenticate) carries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectParams {
    /// `authentication.project`.
    pub project: String,
    /// `authentication.token`.
    pub token: String,
    /// `authentication.jwt_token`.
    pub jwt_token: String,
    /// `contexts`.
    pub contexts: Vec<String>,
    /// `protocol`: set when resuming.
    pub protocol: String,
    /// `authorization_state`.
    pub authorization_state: String,
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

impl ConnectParams {
    /// Reads the params of a connect; anything missing or mistyped is empty.
    pub fn parse(params: &Value) -> ConnectParams {
        let auth = params.get("authentication");
        let contexts = match params.get("contexts") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        ConnectParams {
            project: text(auth.and_then(|a| a.get("project"))),
            token: text(auth.and_then(|a| a.get("token"))),
            jwt_token: text(auth.and_then(|a| a.get("jwt_token"))),
            contexts,
            protocol: text(params.get("protocol")),
            authorization_state: text(params.get("authorization_state")),
        }
    }
}

/// Why credentials were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No project.
    #[error("authentication.project is missing or empty")]
    ProjectMissing,
    /// No token.
    #[error("authentication.token is missing or empty")]
    TokenMissing,
    /// A JWT was given but empty.
    #[error("authentication.jwt_token is empty")]
    JwtEmpty,
    /// The project/token pair is not one the server accepts.
    #[error("project or token not accepted")]
    Refused,
}

/// A granted session: what a protocol string stands for.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    /// The protocol string.
    pub protocol: String,
    /// The identity the server reports.
    pub identity: String,
    /// The project ("" for a JWT).
    pub project: String,
    /// Contexts asked for at connect.
    pub contexts: Vec<String>,
}

/// Which project/token pairs are accepted.
pub trait Credentials: Send + Sync {
    /// Whether this pair may connect.
    fn accepts(&self, project: &str, token: &str) -> bool;
}

/// The mock's rule: any non-empty pair.
#[derive(Clone, Copy, Debug, Default)]
pub struct AnyNonEmpty;

impl Credentials for AnyNonEmpty {
    fn accepts(&self, _project: &str, _token: &str) -> bool {
        true
    }
}

/// Only these project/token pairs (compared in constant time).
#[derive(Clone, Debug, Default)]
pub struct Allowed(pub Vec<(String, String)>);

/// Equal bytes, in time that depends only on the lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Allowed {
    /// Parses `PROJECT:TOKEN`.
    pub fn parse_pair(s: &str) -> Result<(String, String), String> {
        match s.split_once(':') {
            Some((p, t)) if !p.is_empty() && !t.is_empty() => Ok((p.to_owned(), t.to_owned())),
            _ => Err(format!("{s:?}: write PROJECT:TOKEN, both non-empty")),
        }
    }
}

impl Credentials for Allowed {
    fn accepts(&self, project: &str, token: &str) -> bool {
        // Every pair is compared, so the time does not tell which matched.
        self.0.iter().fold(false, |ok, (p, t)| {
            let hit =
                ct_eq(p.as_bytes(), project.as_bytes()) & ct_eq(t.as_bytes(), token.as_bytes());
            ok | hit
        })
    }
}

/// Protocol strings issued, for resume.
#[derive(Debug, Default)]
pub struct Protocols {
    issued: HashMap<String, Grant>,
}

impl Protocols {
    /// Checks fresh credentials and issues a new protocol string.
    pub fn issue(
        &mut self,
        p: &ConnectParams,
        creds: &dyn Credentials,
    ) -> Result<Grant, AuthError> {
        let (project, identity) = if !p.jwt_token.is_empty() {
            (String::new(), "mock-relay-identity-jwt".to_owned())
        } else {
            if p.project.is_empty() {
                return Err(AuthError::ProjectMissing);
            }
            if p.token.is_empty() {
                return Err(AuthError::TokenMissing);
            }
            if !creds.accepts(&p.project, &p.token) {
                return Err(AuthError::Refused);
            }
            (
                p.project.clone(),
                format!("mock-relay-identity-{}", p.project),
            )
        };
        let grant = Grant {
            protocol: format!("signalwire_{}", uuid::Uuid::new_v4().simple()),
            identity,
            project,
            contexts: p.contexts.clone(),
        };
        self.issued.insert(grant.protocol.clone(), grant.clone());
        Ok(grant)
    }

    /// The grant a protocol string stands for, if this server issued it.
    pub fn resume(&self, protocol: &str) -> Option<Grant> {
        self.issued.get(protocol).cloned()
    }

    /// How many protocol strings are known.
    pub fn len(&self) -> usize {
        self.issued.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.issued.is_empty()
    }
}

/// The result of a successful connect.
pub fn connect_result(
    grant: &Grant,
    contexts: &[String],
    restored: bool,
    session_id: &str,
) -> Value {
    let node = crate::NODE_ID;
    let subscriptions: Vec<Value> = contexts
        .iter()
        .map(|c| json!({"protocol": grant.protocol, "channel": c, "subscribers": [node]}))
        .collect();
    json!({
        "session_restored": restored,
        "sessionid": session_id,
        "nodeid": node,
        "master_nodeid": node,
        "identity": grant.identity,
        "protocol": grant.protocol,
        "protocols": [],
        "subscriptions": subscriptions,
        // The Node SDK resumes only when the second `_` part of the
        // protocol string is the authorization's signature.
        "authorization": {
            "project": grant.project,
            "signature": grant.protocol.split('_').nth(1).unwrap_or(""),
        },
        "ice_servers": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_tolerates_junk() {
        let p = ConnectParams::parse(&json!({
            "authentication": {"project": "p", "token": "t"},
            "contexts": ["a", 5, "b"], "protocol": "x"
        }));
        assert_eq!(p.project, "p");
        assert_eq!(p.contexts, vec!["a", "b"]);
        assert_eq!(p.protocol, "x");
        assert_eq!(
            ConnectParams::parse(&json!("junk")),
            ConnectParams::default()
        );
        assert_eq!(
            ConnectParams::parse(&json!({"authentication": 3})).project,
            ""
        );
    }

    #[test]
    fn issues_refuses_and_resumes() {
        let mut ps = Protocols::default();
        let ok = ConnectParams {
            project: "p".into(),
            token: "t".into(),
            ..Default::default()
        };
        let g = ps.issue(&ok, &AnyNonEmpty).unwrap();
        assert!(g.protocol.starts_with("signalwire_"));
        assert_eq!(ps.resume(&g.protocol), Some(g.clone()));
        assert_eq!(ps.resume("signalwire_other"), None);
        let g2 = ps.issue(&ok, &AnyNonEmpty).unwrap();
        assert_ne!(g.protocol, g2.protocol);
        let no_token = ConnectParams {
            project: "p".into(),
            ..Default::default()
        };
        assert_eq!(
            ps.issue(&no_token, &AnyNonEmpty),
            Err(AuthError::TokenMissing)
        );
        assert_eq!(
            ps.issue(&ConnectParams::default(), &AnyNonEmpty),
            Err(AuthError::ProjectMissing)
        );
        let jwt = ConnectParams {
            jwt_token: "j".into(),
            ..Default::default()
        };
        assert!(ps.issue(&jwt, &AnyNonEmpty).is_ok());
        struct Only;
        impl Credentials for Only {
            fn accepts(&self, p: &str, t: &str) -> bool {
                p == "good" && t == "secret"
            }
        }
        assert_eq!(ps.issue(&ok, &Only), Err(AuthError::Refused));
        let allowed = Allowed(vec![("p".into(), "t".into())]);
        assert!(ps.issue(&ok, &allowed).is_ok());
        let wrong = ConnectParams {
            project: "p".into(),
            token: "u".into(),
            ..Default::default()
        };
        assert_eq!(ps.issue(&wrong, &allowed), Err(AuthError::Refused));
        assert!(Allowed::parse_pair("a:b").is_ok());
        assert!(Allowed::parse_pair("a:").is_err());
        assert!(Allowed::parse_pair("ab").is_err());
    }
}

//! The JSON Schemas of `relay-protocol/esl`: loaded at start (a broken
//! schema is reported in health, never a crash), used to check incoming API
//! commands and, in tests, the events the mock synthesizes.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the schemas live in a source checkout.
pub fn default_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../relay-protocol/esl")
}

/// The schemas built into the binary (an installed mock-relay needs no
/// source checkout); `--schemas DIR` reads others instead.
static EMBEDDED: include_dir::Dir<'_> =
    include_dir::include_dir!("$CARGO_MANIFEST_DIR/../../relay-protocol/esl");

/// What [`Schemas::dir`] says for the built-in set.
pub const EMBEDDED_NAME: &str = "embedded (relay-protocol/esl, built in)";

fn parse_files<'a>(
    files: impl Iterator<Item = (String, Result<&'a str, String>)>,
    errors: &mut Vec<String>,
) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (name, text) in files {
        let Some(stem) = name
            .strip_suffix(".json")
            .map(|s| s.rsplit('/').next().unwrap_or(s).to_owned())
        else {
            continue;
        };
        match text.and_then(|t| serde_json::from_str::<Value>(t).map_err(|e| e.to_string())) {
            Ok(v) => out.push((stem, v)),
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    out
}

fn load_embedded(sub: &str, errors: &mut Vec<String>) -> Vec<(String, Value)> {
    let Some(d) = EMBEDDED.get_dir(sub) else {
        errors.push(format!("{EMBEDDED_NAME}: no {sub}/"));
        return Vec::new();
    };
    let mut files: Vec<_> = d.files().collect();
    files.sort_by_key(|f| f.path());
    parse_files(
        files.into_iter().map(|f| {
            (
                f.path().display().to_string(),
                f.contents_utf8().ok_or_else(|| "not UTF-8".to_owned()),
            )
        }),
        errors,
    )
}

/// Loaded schemas.
#[derive(Default)]
pub struct Schemas {
    /// Command name (`log` for the API command is `api-log`) → validator and usage text.
    commands: BTreeMap<String, (jsonschema::Validator, String, String)>,
    /// Event name → validator.
    events: BTreeMap<String, jsonschema::Validator>,
    /// Files that could not be used, with the reason.
    pub errors: Vec<String>,
    /// The directory they came from.
    pub dir: String,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schemas")
            .field("commands", &self.commands.keys().collect::<Vec<_>>())
            .field("events", &self.events.keys().collect::<Vec<_>>())
            .field("errors", &self.errors)
            .finish()
    }
}

fn load_dir(dir: &Path, errors: &mut Vec<String>) -> Vec<(String, Value)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(format!("{}: {e}", dir.display()));
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let texts: Vec<(String, Result<String, String>)> = paths
        .into_iter()
        .map(|p| {
            let t = std::fs::read_to_string(&p).map_err(|e| e.to_string());
            (p.display().to_string(), t)
        })
        .collect();
    parse_files(
        texts
            .iter()
            .map(|(n, t)| (n.clone(), t.as_deref().map_err(Clone::clone))),
        errors,
    )
}

impl Schemas {
    /// Loads `dir/commands/*.json` and `dir/events/*.json`.
    pub fn load(dir: &Path) -> Schemas {
        let mut errors = Vec::new();
        let commands = load_dir(&dir.join("commands"), &mut errors);
        let events = load_dir(&dir.join("events"), &mut errors);
        Self::build(dir.display().to_string(), commands, events, errors)
    }

    /// The schemas built into the binary.
    pub fn embedded() -> Schemas {
        let mut errors = Vec::new();
        let commands = load_embedded("commands", &mut errors);
        let events = load_embedded("events", &mut errors);
        Self::build(EMBEDDED_NAME.into(), commands, events, errors)
    }

    fn build(
        dir: String,
        commands: Vec<(String, Value)>,
        events: Vec<(String, Value)>,
        errors: Vec<String>,
    ) -> Schemas {
        let mut s = Schemas {
            dir,
            errors,
            ..Default::default()
        };
        for (stem, v) in commands {
            let usage = v
                .get("x-usage")
                .and_then(Value::as_str)
                .unwrap_or("-ERR invalid syntax")
                .to_owned();
            let kind = v
                .get("x-kind")
                .and_then(Value::as_str)
                .unwrap_or("api")
                .to_owned();
            match jsonschema::validator_for(&v) {
                Ok(val) => {
                    s.commands.insert(stem, (val, usage, kind));
                }
                Err(e) => s.errors.push(format!("commands/{stem}.json: {e}")),
            }
        }
        for (stem, v) in events {
            match jsonschema::validator_for(&v) {
                Ok(val) => {
                    s.events.insert(stem, val);
                }
                Err(e) => s.errors.push(format!("events/{stem}.json: {e}")),
            }
        }
        s
    }

    /// Names of the API commands with a schema.
    pub fn api_commands(&self) -> Vec<String> {
        self.commands
            .iter()
            .filter(|(_, (_, _, k))| k == "api")
            .map(|(n, _)| n.strip_prefix("api-").unwrap_or(n).to_owned())
            .collect()
    }

    /// Names of the socket commands with a schema.
    pub fn esl_commands(&self) -> Vec<String> {
        self.commands
            .iter()
            .filter(|(_, (_, _, k))| k == "esl")
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Names of the events with a schema.
    pub fn event_names(&self) -> Vec<String> {
        self.events.keys().cloned().collect()
    }

    /// Number of loaded schemas.
    pub fn loaded(&self) -> usize {
        self.commands.len() + self.events.len()
    }

    /// Checks an API command's arguments; `Some(reply)` when they are refused.
    pub fn check_api(&self, command: &str, args: &str) -> Option<String> {
        let key = if command == "log" { "api-log" } else { command };
        let (val, usage, _) = self.commands.get(key)?;
        let words: Vec<Value> = crate::dial::split_args(args)
            .into_iter()
            .map(Value::String)
            .collect();
        let inst = serde_json::json!({"command": command, "args": words});
        if val.is_valid(&inst) {
            None
        } else {
            let mut u = usage.clone();
            if !u.ends_with('\n') && u.starts_with('-') {
                u.push('\n');
            }
            Some(u)
        }
    }

    /// Errors of an event (as a flat JSON object) against its schema;
    /// `None` when there is no schema for it.
    pub fn check_event(&self, name: &str, event: &Value) -> Option<Vec<String>> {
        let val = self.events.get(name)?;
        Some(val.iter_errors(event).map(|e| e.to_string()).collect())
    }
}

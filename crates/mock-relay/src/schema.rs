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
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(format!("{}: {e}", dir.display()));
            return out;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let stem = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        match std::fs::read_to_string(&p)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
        {
            Ok(v) => out.push((stem, v)),
            Err(e) => errors.push(format!("{}: {e}", p.display())),
        }
    }
    out
}

impl Schemas {
    /// Loads `dir/commands/*.json` and `dir/events/*.json`.
    pub fn load(dir: &Path) -> Schemas {
        let mut s = Schemas {
            dir: dir.display().to_string(),
            ..Default::default()
        };
        for (stem, v) in load_dir(&dir.join("commands"), &mut s.errors) {
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
        for (stem, v) in load_dir(&dir.join("events"), &mut s.errors) {
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

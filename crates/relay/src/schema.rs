//! RELAY's JSON Schemas, `relay-protocol/relay/<method>.<kind>.json`: one
//! document per method's params and result and per event type. Loaded once
//! (a broken file is reported, never a crash) and compiled to validators.

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The schemas built into the binary (`--schema-root` reads others).
static EMBEDDED: include_dir::Dir<'_> =
    include_dir::include_dir!("$CARGO_MANIFEST_DIR/../../relay-protocol/relay");

/// What [`SchemaIndex::origin`] says for the built-in set.
pub const EMBEDDED_NAME: &str = "embedded (relay-protocol/relay, built in)";

/// Which half of a method a document describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A request's params.
    Params,
    /// A response's result.
    Result,
    /// An event's params.
    Event,
}

impl Kind {
    /// `params`, `result` or `event`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Params => "params",
            Kind::Result => "result",
            Kind::Event => "event",
        }
    }

    fn from_suffix(s: &str) -> Option<Kind> {
        match s {
            "params" => Some(Kind::Params),
            "result" => Some(Kind::Result),
            "event" => Some(Kind::Event),
            _ => None,
        }
    }
}

/// One loaded document.
pub struct Spec {
    /// The method or event type.
    pub method: String,
    /// Params, result or event.
    pub kind: Kind,
    /// Its file name.
    pub file: String,
    /// Where its shape comes from (`x-source`).
    pub source: String,
    /// Marked `x-permissive`: never refuses anything.
    pub permissive: bool,
    /// The property names it declares.
    pub properties: Vec<String>,
    validator: jsonschema::Validator,
}

/// What `/__mock__/specs` lists for each document.
#[derive(Clone, Debug, Serialize)]
pub struct SpecInfo {
    /// The method or event type.
    pub method: String,
    /// Params, result or event.
    pub kind: Kind,
    /// File name.
    pub file: String,
    /// `x-source`.
    pub source: String,
    /// `x-permissive`.
    pub permissive: bool,
}

/// The loaded schemas.
#[derive(Default)]
pub struct SchemaIndex {
    specs: BTreeMap<(String, Kind), Spec>,
    /// Files that could not be used, and why.
    pub load_errors: Vec<String>,
    /// Where they were read from.
    pub origin: String,
}

impl std::fmt::Debug for SchemaIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaIndex")
            .field("total", &self.specs.len())
            .field("load_errors", &self.load_errors)
            .field("origin", &self.origin)
            .finish()
    }
}

impl SchemaIndex {
    /// The schemas built into the binary.
    pub fn embedded() -> SchemaIndex {
        let mut files: Vec<_> = EMBEDDED.files().collect();
        files.sort_by_key(|f| f.path());
        let texts = files.into_iter().map(|f| {
            let name = f
                .path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (
                name,
                f.contents_utf8()
                    .map(str::to_owned)
                    .ok_or_else(|| "not UTF-8".to_owned()),
            )
        });
        Self::build(EMBEDDED_NAME.into(), texts)
    }

    /// Reads `root/relay/*.json` (`root` is a `relay-protocol` directory).
    pub fn from_root(root: &Path) -> SchemaIndex {
        let dir = root.join("relay");
        let origin = dir.display().to_string();
        let mut paths = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect::<Vec<_>>(),
            Err(e) => {
                return SchemaIndex {
                    load_errors: vec![format!(
                        "{origin}: {e} (--schema-root names a directory holding relay/*.json)"
                    )],
                    origin,
                    ..Default::default()
                };
            }
        };
        paths.sort();
        let texts = paths.into_iter().map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, std::fs::read_to_string(&p).map_err(|e| e.to_string()))
        });
        Self::build(origin, texts)
    }

    fn build(
        origin: String,
        files: impl Iterator<Item = (String, Result<String, String>)>,
    ) -> SchemaIndex {
        let mut index = SchemaIndex {
            origin,
            ..Default::default()
        };
        for (name, text) in files {
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            let Some((method, kind)) = stem
                .rsplit_once('.')
                .and_then(|(m, k)| Some((m, Kind::from_suffix(k)?)))
            else {
                index
                    .load_errors
                    .push(format!("{name}: not <method>.params|result|event.json"));
                continue;
            };
            let doc = match text
                .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
            {
                Ok(d) => d,
                Err(e) => {
                    index.load_errors.push(format!("{name}: {e}"));
                    continue;
                }
            };
            let validator = match jsonschema::draft202012::new(&doc) {
                Ok(v) => v,
                Err(e) => {
                    index.load_errors.push(format!("{name}: {e}"));
                    continue;
                }
            };
            let properties = doc
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            let spec = Spec {
                method: method.to_owned(),
                kind,
                file: name.clone(),
                source: doc
                    .get("x-source")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                permissive: doc.get("x-permissive").and_then(Value::as_bool) == Some(true),
                properties,
                validator,
            };
            index.specs.insert((method.to_owned(), kind), spec);
        }
        index
    }

    /// The document for `method`'s `kind`, if loaded.
    pub fn get(&self, method: &str, kind: Kind) -> Option<&Spec> {
        self.specs.get(&(method.to_owned(), kind))
    }

    /// Whether any document describes `method`.
    pub fn knows(&self, method: &str) -> bool {
        self.get(method, Kind::Params).is_some() || self.get(method, Kind::Result).is_some()
    }

    /// Checks `value` against `method`'s `kind` document: `Err` names the
    /// first problem and where. No document, or a permissive one: `Ok`.
    pub fn validate(&self, method: &str, kind: Kind, value: &Value) -> Result<(), String> {
        let Some(spec) = self.get(method, kind) else {
            return Ok(());
        };
        if spec.permissive {
            return Ok(());
        }
        let mut errors: Vec<_> = spec
            .validator
            .iter_errors(value)
            .map(|e| (e.instance_path().to_string(), e.to_string()))
            .collect();
        errors.sort();
        match errors.into_iter().next() {
            None => Ok(()),
            Some((path, msg)) => {
                let path = if path.is_empty() {
                    "/".to_owned()
                } else {
                    path
                };
                Err(format!(
                    "{method} {} validation: {msg} at {path}",
                    kind.as_str()
                ))
            }
        }
    }

    /// Number of loaded documents.
    pub fn total(&self) -> usize {
        self.specs.len()
    }

    /// Documents per source (the `x-source` file they were derived from).
    pub fn by_source(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for s in self.specs.values() {
            *m.entry(source_file(&s.source)).or_insert(0) += 1;
        }
        m
    }

    /// Every document, sorted by method then kind.
    pub fn list(&self) -> Vec<SpecInfo> {
        self.specs
            .values()
            .map(|s| SpecInfo {
                method: s.method.clone(),
                kind: s.kind,
                file: s.file.clone(),
                source: s.source.clone(),
                permissive: s.permissive,
            })
            .collect()
    }
}

/// The file part of an `x-source` ("signalwire-sdk 3.7.5 signalwire/relay/event.py PlayEvent"
/// → "signalwire-sdk 3.7.5 signalwire/relay/event.py").
fn source_file(source: &str) -> String {
    let words: Vec<&str> = source.split_whitespace().collect();
    match words
        .iter()
        .position(|w| w.ends_with(".py") || w.ends_with(".ts") || w.ends_with(".js"))
    {
        Some(i) => words[..=i].join(" "),
        None if source.is_empty() => "(no x-source)".to_owned(),
        None => source.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn index_of(files: &[(&str, &str)]) -> SchemaIndex {
        SchemaIndex::build(
            "test".into(),
            files
                .iter()
                .map(|(n, t)| ((*n).to_owned(), Ok((*t).to_owned())))
                .collect::<Vec<_>>()
                .into_iter(),
        )
    }

    #[test]
    fn validates_types_and_reports_where() {
        let idx = index_of(&[(
            "calling.answer.params.json",
            r#"{"type":"object","properties":{"call_id":{"type":"string"}},"x-source":"sdk x.py A"}"#,
        )]);
        assert!(
            idx.validate("calling.answer", Kind::Params, &json!({"call_id":"c"}))
                .is_ok()
        );
        let e = idx
            .validate("calling.answer", Kind::Params, &json!({"call_id": 5}))
            .unwrap_err();
        assert!(
            e.contains("/call_id") && e.contains("params validation"),
            "{e}"
        );
        // No document: nothing to check.
        assert!(
            idx.validate("calling.nope", Kind::Params, &json!(1))
                .is_ok()
        );
        assert_eq!(idx.by_source().get("sdk x.py"), Some(&1));
    }

    #[test]
    fn permissive_documents_pass_anything_and_bad_files_are_reported() {
        let idx = index_of(&[
            ("a.params.json", r#"{"type":"object","x-permissive":true}"#),
            ("b.params.json", "{not json"),
            ("c.bogus.json", "{}"),
            ("d.params.json", r#"{"type": 12}"#),
        ]);
        assert!(idx.validate("a", Kind::Params, &json!("x")).is_ok());
        assert_eq!(idx.total(), 1);
        assert_eq!(idx.load_errors.len(), 3, "{:?}", idx.load_errors);
    }

    #[test]
    fn the_embedded_set_loads_cleanly() {
        let idx = SchemaIndex::embedded();
        assert!(idx.load_errors.is_empty(), "{:?}", idx.load_errors);
        assert!(idx.get("calling.play", Kind::Params).is_some());
        assert!(idx.get("calling.call.state", Kind::Event).is_some());
    }
}

//! CDRs out of the store: CSV and NDJSON with every column of the table, in
//! its order, and each timestamp twice: as stored (µs since the Unix epoch)
//! and readable (`<column>_utc`, RFC 3339 with µs).

use crate::cdr::{CDR_COLUMNS, Cdr};
use serde_json::Value;

/// Columns holding µs since the Unix epoch (FreeSWITCH's clock, except
/// `caller_req_originate`/`job_launch` on the controller's and
/// `originate_*_agent` on the agent's).
pub const TIME_COLUMNS: &[&str] = &[
    "caller_create",
    "caller_answer",
    "caller_req_originate",
    "caller_originate",
    "caller_hangup",
    "job_launch",
    "callee_create",
    "callee_answer",
    "callee_hangup",
    "originate_sent_agent",
    "originate_done_agent",
    "caller_progress",
];

/// The export's column names: the table's, each time column followed by
/// its `_utc` twin.
pub fn header() -> Vec<String> {
    let mut h = Vec::new();
    for c in CDR_COLUMNS.split(", ") {
        h.push(c.to_owned());
        if TIME_COLUMNS.contains(&c) {
            h.push(format!("{c}_utc"));
        }
    }
    h
}

fn utc(us: i64) -> Option<String> {
    let t = std::time::UNIX_EPOCH
        .checked_add(std::time::Duration::from_micros(u64::try_from(us).ok()?))?;
    Some(humantime::format_rfc3339_micros(t).to_string())
}

/// One CDR as an ordered record.
pub fn record(c: &Cdr) -> Vec<(String, Value)> {
    let v = serde_json::to_value(c).unwrap_or(Value::Null);
    let obj = v.as_object().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for col in CDR_COLUMNS.split(", ") {
        let val = obj.get(col).cloned().unwrap_or(Value::Null);
        if TIME_COLUMNS.contains(&col) {
            let readable = val
                .as_i64()
                .and_then(utc)
                .map_or(Value::Null, Value::String);
            out.push((col.to_owned(), val));
            out.push((format!("{col}_utc"), readable));
        } else {
            out.push((col.to_owned(), val));
        }
    }
    out
}

fn csv_field(v: &Value) -> String {
    let s = match v {
        Value::Null => return String::new(),
        Value::Bool(b) => return u8::from(*b).to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// CDRs as CSV (header row first).
pub fn to_csv(cdrs: &[Cdr]) -> String {
    let mut out = header().join(",");
    out.push('\n');
    for c in cdrs {
        let row: Vec<String> = record(c).iter().map(|(_, v)| csv_field(v)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// CDRs as NDJSON: one object per line, keys in the table's order.
pub fn to_ndjson(cdrs: &[Cdr]) -> String {
    let mut out = String::new();
    for c in cdrs {
        // An object built in column order, written by hand so the order
        // holds whatever serde_json's map type is.
        let parts: Vec<String> = record(c)
            .into_iter()
            .map(|(k, v)| format!("{}:{}", Value::String(k), v))
            .collect();
        out.push('{');
        out.push_str(&parts.join(","));
        out.push_str("}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_carry_every_column_and_readable_times() {
        let c = Cdr {
            call_id: "c1".into(),
            node: "fs1".into(),
            hangup_cause: "USER_BUSY".into(),
            failed: true,
            caller_create: Some(1_796_154_416_605_389),
            caller_name: Some("Alice, \"A\"".into()),
            sip_status: Some(486),
            q850: Some(17),
            run_id: Some("r1".into()),
            billsec_s: Some(0.0),
            ..Cdr::default()
        };
        let csv = to_csv(std::slice::from_ref(&c));
        let mut lines = csv.lines();
        let head: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
        assert_eq!(
            head.len(),
            CDR_COLUMNS.split(", ").count() + TIME_COLUMNS.len()
        );
        let i = |n: &str| head.iter().position(|h| *h == n).unwrap_or(usize::MAX);
        assert_eq!(i("caller_create_utc"), i("caller_create") + 1);
        let row = lines.next().unwrap_or_default();
        assert!(
            row.contains(",1796154416605389,2026-12-01T19:46:56.605389Z,"),
            "{row}"
        );
        assert!(row.contains(",\"Alice, \"\"A\"\"\","), "{row}");
        let nd = to_ndjson(&[c]);
        let v: Value = serde_json::from_str(nd.trim()).unwrap_or(Value::Null);
        assert_eq!(v["sip_status"], 486);
        assert_eq!(v["q850"], 17);
        assert_eq!(v["run_id"], "r1");
        assert_eq!(v["caller_create_utc"], "2026-12-01T19:46:56.605389Z");
        assert_eq!(v["caller_answer_utc"], Value::Null);
        assert!(
            nd.starts_with("{\"call_id\":\"c1\",\"node\":\"fs1\""),
            "{nd}"
        );
    }
}

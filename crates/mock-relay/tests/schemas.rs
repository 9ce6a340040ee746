//! relay-protocol/esl and the mock must not drift: every command the mock
//! implements has a schema and vice versa, and every event it synthesizes
//! satisfies its event schema.

mod common;
use common::*;
use mock_relay::{MockCluster, MockConfig, api, schema};
use std::collections::BTreeSet;
use switchy_protocol::esl::{Command, EventFormat, SendMsg};

#[test]
fn command_table_and_schemas_match() {
    let s = schema::Schemas::load(&schema::default_dir());
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let schema_api: BTreeSet<String> = s.api_commands().into_iter().collect();
    let mock_api: BTreeSet<String> = api::API_COMMANDS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        schema_api, mock_api,
        "API commands: schemas vs the mock's table"
    );
    let schema_esl: BTreeSet<String> = s.esl_commands().into_iter().collect();
    let mock_esl: BTreeSet<String> = api::ESL_COMMANDS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        schema_esl, mock_esl,
        "socket commands: schemas vs the mock's table"
    );
}

#[test]
fn the_built_in_schemas_are_the_source_trees() {
    let dir = schema::Schemas::load(&schema::default_dir());
    let built_in = schema::Schemas::embedded();
    assert!(built_in.errors.is_empty(), "{:?}", built_in.errors);
    assert_eq!(built_in.dir, schema::EMBEDDED_NAME);
    assert_eq!(built_in.loaded(), dir.loaded());
    assert_eq!(built_in.api_commands(), dir.api_commands());
    assert_eq!(built_in.esl_commands(), dir.esl_commands());
    assert_eq!(built_in.event_names(), dir.event_names());
    assert!(built_in.loaded() > 50, "{}", built_in.loaded());
}

#[test]
fn a_broken_schema_is_reported_not_fatal() {
    let dir = std::env::temp_dir().join(format!("mock-relay-schemas-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("commands")).unwrap();
    std::fs::create_dir_all(dir.join("events")).unwrap();
    std::fs::write(dir.join("commands/broken.json"), "{ not json").unwrap();
    std::fs::write(dir.join("events/BAD.json"), r#"{"type": 12}"#).unwrap();
    let s = schema::Schemas::load(&dir);
    assert_eq!(s.errors.len(), 2, "{:?}", s.errors);
    assert_eq!(s.loaded(), 0);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn bad_api_arguments_get_the_schema_usage() {
    let m = MockCluster::start(MockConfig::ephemeral(1)).await.unwrap();
    let mut c = Esl::connect(m.esl_addr(0)).await;
    assert!(c.api("uuid_kill", "").await.starts_with("-USAGE"));
    assert!(
        c.api("uuid_setvar", "only-uuid")
            .await
            .starts_with("-USAGE")
    );
    m.stop().await;
}

/// Every event of a call flow covering most event kinds validates.
#[tokio::test]
async fn synthesized_events_satisfy_their_schemas() {
    let m = MockCluster::start(MockConfig::ephemeral(1)).await.unwrap();
    let mut c = Esl::connect(m.esl_addr(0)).await;
    c.subscribe(EventFormat::Json, &["ALL"]).await;
    c.cmd(
        Command::bgapi(
            "originate",
            "sofia/external/1@127.0.0.1:5080 &park()",
            Some("j"),
        )
        .unwrap(),
    )
    .await;
    let park = c
        .wait_event(|e| {
            e.event_name() == Some("CHANNEL_PARK") && e.get("Call-Direction") == Some("inbound")
        })
        .await;
    let b = park.unique_id().unwrap().to_owned();
    c.api("uuid_answer", &b).await;
    let job = c.wait_event(|e| e.job_uuid() == Some("j")).await;
    let a = job.body_text().unwrap().trim()[4..].to_owned();
    c.wait_event(is_on("CHANNEL_PARK", a.clone())).await;
    c.cmd(Command::sendmsg(&a, &SendMsg::execute("playback", Some("/x.wav"))).unwrap())
        .await;
    c.wait_event(is("PLAYBACK_STOP")).await;
    c.api("uuid_record", &format!("{a} start /r.wav")).await;
    c.api("uuid_record", &format!("{a} stop /r.wav")).await;
    c.api("uuid_send_dtmf", &format!("{a} 1")).await;
    c.wait_event(is("DTMF")).await;
    c.api("hupall", "").await;
    c.wait_event(|e| {
        e.event_name() == Some("CHANNEL_DESTROY") && e.unique_id() == Some(a.as_str())
    })
    .await;
    let schemas = &m.cluster().schemas;
    let mut checked = BTreeSet::new();
    for e in &c.events {
        let obj: serde_json::Map<String, serde_json::Value> = e
            .headers
            .iter()
            .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned())))
            .collect();
        let name = e.event_name().unwrap();
        if let Some(errors) = schemas.check_event(name, &serde_json::Value::Object(obj)) {
            assert!(errors.is_empty(), "{name}: {errors:?}");
            checked.insert(name.to_owned());
        }
    }
    for must in [
        "CHANNEL_CREATE",
        "CHANNEL_PARK",
        "CHANNEL_ANSWER",
        "PLAYBACK_START",
        "PLAYBACK_STOP",
        "RECORD_START",
        "RECORD_STOP",
        "DTMF",
        "BACKGROUND_JOB",
        "CHANNEL_HANGUP_COMPLETE",
        "API",
    ] {
        assert!(checked.contains(must), "{must} not checked: {checked:?}");
    }
    m.stop().await;
}

#[tokio::test]
async fn heartbeat_comes_on_its_interval_and_satisfies_its_schema() {
    let config = MockConfig {
        heartbeat: std::time::Duration::from_millis(100),
        ..MockConfig::ephemeral(1)
    };
    let m = MockCluster::start(config).await.unwrap();
    let mut c = Esl::connect(m.esl_addr(0)).await;
    c.subscribe(EventFormat::Plain, &["HEARTBEAT", "RE_SCHEDULE"])
        .await;
    let hb = c.wait_event(is("HEARTBEAT")).await;
    assert_eq!(hb.get("Event-Info"), Some("System Ready"));
    assert_eq!(hb.get("Session-Count"), Some("0"));
    c.wait_event(is("RE_SCHEDULE")).await;
    {
        let e = &hb;
        let obj: serde_json::Map<String, serde_json::Value> = e
            .headers
            .iter()
            .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned())))
            .collect();
        let errors = m
            .cluster()
            .schemas
            .check_event("HEARTBEAT", &serde_json::Value::Object(obj))
            .unwrap();
        assert!(errors.is_empty(), "{errors:?}");
    }
    m.stop().await;
}

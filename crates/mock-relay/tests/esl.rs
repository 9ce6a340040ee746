//! mock-relay over real TCP sockets, with switchy-protocol as the client.

mod common;
use common::*;
use switchy_protocol::esl::{Command, EventFormat, Message, SendMsg};

#[tokio::test]
async fn auth_ok_and_wrong_password() {
    let m = cluster(1).await;
    let mut ok = Esl::connect(m.esl_addr(0)).await;
    assert!(ok.api("status", "").await.contains("is ready"));

    let mut bad = Esl::raw(m.esl_addr(0)).await;
    assert_eq!(bad.next().await, Some(Message::AuthRequest));
    let r = bad.cmd(Command::auth("WrongPassword").unwrap()).await;
    assert_eq!(reply_text(&r), "-ERR invalid");
    match bad.next().await {
        Some(Message::DisconnectNotice(f)) => assert_eq!(
            f.body.as_deref(),
            Some(switchy_protocol::esl::server::GOODBYE.as_bytes())
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        bad.next().await,
        None,
        "socket closed after a wrong password"
    );

    let mut early = Esl::raw(m.esl_addr(0)).await;
    early.next().await;
    let r = early.cmd(Command::api("status", "").unwrap()).await;
    assert_eq!(reply_text(&r), "-ERR command not found");
    let r = early.cmd(Command::auth("ClueCon").unwrap()).await;
    assert_eq!(reply_text(&r), "+OK accepted");
    m.stop().await;
}

#[tokio::test]
async fn api_status_and_discovery() {
    let m = cluster(2).await;
    let mut c = Esl::connect(m.esl_addr(1)).await;
    let status = c.api("status", "").await;
    assert!(status.starts_with("UP 0 years"), "{status}");
    assert!(status.contains("FreeSWITCH (Version"), "{status}");
    assert_eq!(c.api("global_getvar", "local_ip_v4").await, "127.0.0.2");
    let sofia = c.api("sofia", "status").await;
    assert!(
        sofia.contains("sip:mod_sofia@127.0.0.2:5080\tRUNNING (0)"),
        "{sofia}"
    );
    assert!(sofia.contains("sip:mod_sofia@127.0.0.2:5060"), "{sofia}");
    assert!(sofia.ends_with("2 profiles 0 aliases\n"), "{sofia}");
    assert_eq!(
        c.api("show", "channels as json").await,
        "{\"row_count\": 0}\n"
    );
    assert_eq!(
        c.api("nosuchcommand", "foo").await,
        "-ERR nosuchcommand Command not found!\n"
    );
    assert_eq!(
        c.api("uuid_kill", "00000000-0000-0000-0000-000000000000")
            .await,
        "-ERR No such channel!\n"
    );
    assert_eq!(
        c.api("uuid_answer", "00000000-0000-0000-0000-000000000000")
            .await,
        "-ERROR\n"
    );
    assert!(
        c.api("originate", "")
            .await
            .starts_with("-USAGE: <call url>")
    );
    assert_eq!(
        c.api("originate", "error/user_busy &park()").await,
        "-ERR USER_BUSY\n"
    );
    assert_eq!(
        c.api("originate", "bogus/nowhere &park()").await,
        "-ERR CHAN_NOT_IMPLEMENTED\n"
    );
    assert_eq!(
        c.api("originate", "sofia/nosuchprofile/x@127.0.0.1 &park()")
            .await,
        "-ERR INVALID_PROFILE\n"
    );
    m.stop().await;
}

/// bgapi originate looping back into the same node: both legs' events in
/// FreeSWITCH's order, the X- header handed over, BACKGROUND_JOB last.
#[tokio::test]
async fn originate_loops_back_to_the_same_node() {
    let m = cluster(1).await;
    let mut c = Esl::connect(m.esl_addr(0)).await;
    c.subscribe(EventFormat::Plain, &["ALL"]).await;
    let a = "7d5a3f0e-2c61-4b8a-9f3e-1b2c3d4e5f60";
    let r = c
        .cmd(Command::bgapi("originate", &format!("{{origination_uuid={a},sip_h_X-switchy-orig-uuid={a}}}sofia/external/doggy@127.0.0.1:5080 &park()"), Some("job-1")).unwrap())
        .await;
    assert_eq!(reply_text(&r), "+OK Job-UUID: job-1");
    let park_b = c
        .wait_event(|e| {
            e.event_name() == Some("CHANNEL_PARK") && e.get("Call-Direction") == Some("inbound")
        })
        .await;
    let b = park_b.unique_id().unwrap().to_owned();
    assert_eq!(park_b.variable("sip_h_X-switchy-orig-uuid"), Some(a));
    assert_eq!(park_b.get("Caller-Destination-Number"), Some("doggy"));
    assert_eq!(park_b.variable("sip_req_uri"), Some("doggy@127.0.0.1:5080"));
    assert_eq!(
        c.names_of(a),
        vec![
            "CHANNEL_OUTGOING",
            "CHANNEL_STATE:CS_INIT",
            "CHANNEL_CREATE",
            "CHANNEL_ORIGINATE",
            "CHANNEL_STATE:CS_ROUTING",
            "CHANNEL_STATE:CS_CONSUME_MEDIA",
        ]
    );
    assert_eq!(
        c.names_of(&b),
        vec![
            "CHANNEL_STATE:CS_NEW",
            "CODEC",
            "CODEC",
            "CHANNEL_STATE:CS_INIT",
            "CHANNEL_CREATE",
            "CHANNEL_CALLSTATE",
            "CHANNEL_STATE:CS_ROUTING",
            "CHANNEL_STATE:CS_EXECUTE",
            "CHANNEL_EXECUTE",
            "CHANNEL_PARK",
        ]
    );
    let create_a = c
        .events
        .iter()
        .find(|e| e.event_name() == Some("CHANNEL_CREATE") && e.unique_id() == Some(a))
        .unwrap();
    assert_eq!(create_a.variable("sip_h_X-switchy-orig-uuid"), Some(a));
    assert_eq!(c.api("uuid_answer", &b).await, "+OK\n");
    let job = c.wait_event(is("BACKGROUND_JOB")).await;
    assert_eq!(job.job_uuid(), Some("job-1"));
    assert_eq!(job.body_text().unwrap(), format!("+OK {a}\n"));
    c.wait_event(is_on("CHANNEL_PARK", a.to_owned())).await;
    let answer_a = c
        .events
        .iter()
        .find(|e| e.event_name() == Some("CHANNEL_ANSWER") && e.unique_id() == Some(a))
        .unwrap();
    assert_eq!(
        answer_a.variable("sip_call_id"),
        park_b.variable("sip_call_id"),
        "one SIP dialog"
    );
    let after_answer: Vec<String> = c.names_of(a)[6..].to_vec();
    assert_eq!(
        after_answer,
        vec![
            "CODEC",
            "CODEC",
            "CHANNEL_ANSWER",
            "CHANNEL_CALLSTATE",
            "CALL_UPDATE",
            "CHANNEL_STATE:CS_EXECUTE",
            "CHANNEL_EXECUTE",
            "CHANNEL_PARK"
        ]
    );
    // Hang up: both legs end, the far one with NORMAL_CLEARING.
    assert_eq!(c.api("uuid_kill", a).await, "+OK\n");
    let hc = c
        .wait_event(is_on("CHANNEL_HANGUP_COMPLETE", b.clone()))
        .await;
    assert_eq!(
        hc.headers.get_all("Hangup-Cause").collect::<Vec<_>>(),
        vec!["NORMAL_CLEARING", "NORMAL_CLEARING"]
    );
    c.wait_event(|e| {
        e.event_name() == Some("CHANNEL_STATE")
            && e.unique_id() == Some(a)
            && e.get("Channel-State") == Some("CS_DESTROY")
    })
    .await;
    let tail: Vec<String> = c
        .names_of(a)
        .into_iter()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert_eq!(
        tail,
        vec![
            "CHANNEL_HANGUP",
            "CHANNEL_UNPARK",
            "CHANNEL_EXECUTE_COMPLETE",
            "CHANNEL_STATE:CS_HANGUP",
            "CHANNEL_CALLSTATE",
            "CHANNEL_STATE:CS_REPORTING",
            "CHANNEL_HANGUP_COMPLETE",
            "CHANNEL_DESTROY"
        ]
        .into_iter()
        .chain(std::iter::once("CHANNEL_STATE:CS_DESTROY"))
        .skip(1)
        .map(String::from)
        .collect::<Vec<_>>()
    );
    assert_eq!(c.api("show", "channels count").await, "\n0 total.\n");
    m.stop().await;
}

#[tokio::test]
async fn originate_to_another_node_hands_over_x_headers() {
    let m = cluster(2).await;
    let mut n0 = Esl::connect(m.esl_addr(0)).await;
    let mut n1 = Esl::connect(m.esl_addr(1)).await;
    n0.subscribe(EventFormat::Plain, &["ALL"]).await;
    n1.subscribe(
        EventFormat::Json,
        &["CHANNEL_PARK", "CHANNEL_HANGUP_COMPLETE"],
    )
    .await;
    let r = n0.cmd(Command::bgapi("originate", "{sip_h_X-Test='abc 123',origination_caller_id_number=5551000}sofia/internal/1234@127.0.0.2:5060 &park()", None).unwrap()).await;
    let job = match &r {
        Message::CommandReply(c) => c.job_uuid().unwrap().to_owned(),
        _ => panic!(),
    };
    let park = n1.wait_event(is("CHANNEL_PARK")).await;
    assert_eq!(park.get("Call-Direction"), Some("inbound"));
    assert_eq!(park.variable("sip_h_X-Test"), Some("abc 123"));
    assert_eq!(park.get("Caller-Caller-ID-Number"), Some("5551000"));
    assert_eq!(park.get("FreeSWITCH-Hostname"), Some("mock-fs2"));
    assert_eq!(park.variable("sofia_profile_name"), Some("internal"));
    let b = park.unique_id().unwrap().to_owned();
    assert_eq!(n1.api("uuid_answer", &b).await, "+OK\n");
    let done = n0.wait_event(is("BACKGROUND_JOB")).await;
    assert_eq!(done.job_uuid(), Some(job.as_str()));
    let a = done
        .body_text()
        .unwrap()
        .trim()
        .strip_prefix("+OK ")
        .unwrap()
        .to_owned();
    // Hangup from the callee side: the caller gets NORMAL_CLEARING.
    assert_eq!(
        n1.api("uuid_kill", &format!("{b} USER_BUSY")).await,
        "+OK\n"
    );
    let hc = n0
        .wait_event(is_on("CHANNEL_HANGUP_COMPLETE", a.clone()))
        .await;
    assert_eq!(hc.get("Hangup-Cause"), Some("NORMAL_CLEARING"));
    m.stop().await;
}

#[tokio::test]
async fn forking_has_one_winner_and_losers_get_lose_race() {
    let m = cluster(2).await;
    let mut n0 = Esl::connect(m.esl_addr(0)).await;
    let mut n1 = Esl::connect(m.esl_addr(1)).await;
    n0.subscribe(
        EventFormat::Plain,
        &["CHANNEL_HANGUP_COMPLETE", "BACKGROUND_JOB"],
    )
    .await;
    n1.subscribe(
        EventFormat::Plain,
        &["CHANNEL_PARK", "CHANNEL_HANGUP_COMPLETE"],
    )
    .await;
    n0.cmd(
        Command::bgapi(
            "originate",
            "sofia/external/a@127.0.0.2:5080,sofia/external/b@127.0.0.2:5080 &park()",
            None,
        )
        .unwrap(),
    )
    .await;
    let p1 = n1.wait_event(is("CHANNEL_PARK")).await;
    let first = p1.unique_id().unwrap().to_owned();
    n1.wait_event(|e| {
        e.event_name() == Some("CHANNEL_PARK") && e.unique_id() != Some(first.as_str())
    })
    .await;
    let winner = first.clone();
    assert_eq!(n1.api("uuid_answer", &winner).await, "+OK\n");
    let job = n0.wait_event(is("BACKGROUND_JOB")).await;
    assert!(job.body_text().unwrap().starts_with("+OK "));
    let loser_out = n0.wait_event(is("CHANNEL_HANGUP_COMPLETE")).await;
    assert_eq!(loser_out.get("Hangup-Cause"), Some("LOSE_RACE"));
    let loser_in = n1.wait_event(is("CHANNEL_HANGUP_COMPLETE")).await;
    assert_ne!(loser_in.unique_id(), Some(winner.as_str()));
    assert_eq!(loser_in.get("Hangup-Cause"), Some("ORIGINATOR_CANCEL"));
    m.stop().await;
}

#[tokio::test]
async fn sequential_failover_and_no_answer_timeout() {
    let m = cluster(1).await;
    let mut c = Esl::connect(m.esl_addr(0)).await;
    c.subscribe(EventFormat::Plain, &["BACKGROUND_JOB", "CHANNEL_PARK"])
        .await;
    // First group fails at once, the second loops back.
    c.cmd(
        Command::bgapi(
            "originate",
            "error/user_busy|sofia/external/x@127.0.0.1:5080 &park()",
            None,
        )
        .unwrap(),
    )
    .await;
    let park = c.wait_event(is("CHANNEL_PARK")).await;
    assert_eq!(park.get("Caller-Destination-Number"), Some("x"));
    // Nobody answers within originate_timeout: NO_ANSWER.
    c.cmd(
        Command::bgapi(
            "originate",
            "{originate_timeout=1}sofia/external/y@127.0.0.1:5080 &park()",
            Some("j2"),
        )
        .unwrap(),
    )
    .await;
    let job = c.wait_event(|e| e.job_uuid() == Some("j2")).await;
    assert_eq!(job.body_text().unwrap(), "-ERR NO_ANSWER\n");
    m.stop().await;
}

async fn answered_pair(c: &mut Esl) -> (String, String) {
    let r = c
        .cmd(
            Command::bgapi(
                "originate",
                "sofia/external/1000@127.0.0.1:5080 &park()",
                None,
            )
            .unwrap(),
        )
        .await;
    let job = match &r {
        Message::CommandReply(x) => x.job_uuid().unwrap().to_owned(),
        _ => panic!(),
    };
    let park = c
        .wait_event(|e| {
            e.event_name() == Some("CHANNEL_PARK") && e.get("Call-Direction") == Some("inbound")
        })
        .await;
    let b = park.unique_id().unwrap().to_owned();
    c.events.clear();
    assert_eq!(c.api("uuid_answer", &b).await, "+OK\n");
    let j = c
        .wait_event(move |e| e.job_uuid() == Some(job.as_str()))
        .await;
    let a = j
        .body_text()
        .unwrap()
        .trim()
        .strip_prefix("+OK ")
        .unwrap()
        .to_owned();
    c.wait_event(is_on("CHANNEL_PARK", a.clone())).await;
    c.events.clear();
    (a, b)
}

#[tokio::test]
async fn playback_record_dtmf_and_break() {
    let m = cluster(1).await;
    let mut c = Esl::connect(m.esl_addr(0)).await;
    c.subscribe(EventFormat::Plain, &["ALL"]).await;
    let (a, b) = answered_pair(&mut c).await;
    // Playback through sendmsg with an Event-UUID.
    let r = c
        .cmd(
            Command::sendmsg(
                &a,
                &SendMsg::execute("playback", Some("/tmp/hello.wav"))
                    .locked()
                    .with_event_uuid("app-1"),
            )
            .unwrap(),
        )
        .await;
    assert_eq!(reply_text(&r), "+OK");
    let stop = c.wait_event(is_on("PLAYBACK_STOP", a.clone())).await;
    assert_eq!(stop.get("Playback-Status"), Some("done"));
    assert_eq!(stop.get("Playback-File-Path"), Some("/tmp/hello.wav"));
    let done = c
        .wait_event(is_on("CHANNEL_EXECUTE_COMPLETE", a.clone()))
        .await;
    assert_eq!(done.get("Application-UUID"), Some("app-1"));
    assert_eq!(done.get("Application-Response"), Some("FILE PLAYED"));
    let names = c.names_of(&a);
    assert_eq!(
        names,
        vec![
            "CHANNEL_EXECUTE",
            "PLAYBACK_START",
            "PLAYBACK_STOP",
            "CHANNEL_EXECUTE_COMPLETE"
        ]
    );
    // A tone stream runs until broken.
    assert_eq!(
        c.api(
            "uuid_broadcast",
            &format!("{a} tone_stream://%(100,100,440) aleg")
        )
        .await,
        "+OK Message sent\n"
    );
    c.wait_event(is_on("PLAYBACK_START", a.clone())).await;
    assert_eq!(c.api("uuid_break", &a).await, "+OK\n");
    let stop = c
        .wait_event(|e| {
            e.event_name() == Some("PLAYBACK_STOP") && e.get("Playback-Status") == Some("break")
        })
        .await;
    assert_eq!(stop.unique_id(), Some(a.as_str()));
    // DTMF sent on one leg arrives on its peer, one event per digit.
    assert_eq!(
        c.api("uuid_send_dtmf", &format!("{a} 12#")).await,
        format!("+OK {a} sent DTMF 12#.\n")
    );
    for d in ["1", "2", "#"] {
        let ev = c
            .wait_event(|e| e.event_name() == Some("DTMF") && e.get("DTMF-Digit") == Some(d))
            .await;
        assert_eq!(ev.unique_id(), Some(b.as_str()));
        assert_eq!(ev.get("DTMF-Source"), Some("RTP"));
        assert!(
            ev.variable("sip_call_id").is_none(),
            "DTMF carries no variables"
        );
    }
    // Recording.
    assert_eq!(
        c.api("uuid_record", &format!("{a} start /tmp/rec.wav"))
            .await,
        "+OK Success\n"
    );
    let rs = c.wait_event(is_on("RECORD_START", a.clone())).await;
    assert_eq!(rs.get("Record-File-Path"), Some("/tmp/rec.wav"));
    assert_eq!(
        c.api("uuid_record", &format!("{a} mask /tmp/rec.wav"))
            .await,
        "+OK Success\n"
    );
    assert_eq!(
        c.api("uuid_record", &format!("{a} stop /tmp/rec.wav"))
            .await,
        "+OK Success\n"
    );
    c.wait_event(is_on("RECORD_STOP", a.clone())).await;
    assert_eq!(
        c.api("uuid_record", &format!("{a} stop /tmp/rec.wav"))
            .await,
        "-ERR Cannot stop record session!\n"
    );
    m.stop().await;
}

#[tokio::test]
async fn bridge_and_hangup_causes() {
    let m = cluster(1).await;
    let mut c = Esl::connect(m.esl_addr(0)).await;
    c.subscribe(EventFormat::Plain, &["ALL"]).await;
    let (a1, b1) = answered_pair(&mut c).await;
    let (a2, b2) = answered_pair(&mut c).await;
    assert_eq!(
        c.api("uuid_bridge", &format!("{a1} {a2}")).await,
        format!("+OK {a2}\n")
    );
    let br = c.wait_event(is("CHANNEL_BRIDGE")).await;
    assert_eq!(br.get("Bridge-A-Unique-ID"), Some(a1.as_str()));
    assert_eq!(br.get("Bridge-B-Unique-ID"), Some(a2.as_str()));
    assert_eq!(br.get("Other-Leg-Unique-ID"), Some(a2.as_str()));
    // DTMF across the bridge.
    c.api("uuid_send_dtmf", &format!("{a1} 5")).await;
    let d = c.wait_event(is("DTMF")).await;
    assert_eq!(d.unique_id(), Some(a2.as_str()));
    // One side hangs up with a cause: the survivor is unbridged and cleared.
    assert_eq!(
        c.api("uuid_kill", &format!("{a2} USER_BUSY")).await,
        "+OK\n"
    );
    let hc = c
        .wait_event(is_on("CHANNEL_HANGUP_COMPLETE", a2.clone()))
        .await;
    assert_eq!(hc.get("Hangup-Cause"), Some("USER_BUSY"));
    assert_eq!(hc.variable("hangup_cause_q850"), Some("17"));
    c.wait_event(is("CHANNEL_UNBRIDGE")).await;
    let hc1 = c
        .wait_event(is_on("CHANNEL_HANGUP_COMPLETE", a1.clone()))
        .await;
    assert_eq!(hc1.get("Hangup-Cause"), Some("NORMAL_CLEARING"));
    let hcb2 = c
        .wait_event(is_on("CHANNEL_HANGUP_COMPLETE", b2.clone()))
        .await;
    assert_eq!(hcb2.get("Hangup-Cause"), Some("NORMAL_CLEARING"));
    c.wait_event(is_on("CHANNEL_HANGUP_COMPLETE", b1.clone()))
        .await;
    // hupall ends the rest with MANAGER_REQUEST.
    let (a3, _) = answered_pair(&mut c).await;
    assert_eq!(
        c.api("hupall", "").await,
        "+OK hangup all channels with cause MANAGER_REQUEST\n"
    );
    let hc3 = c
        .wait_event(is_on("CHANNEL_HANGUP_COMPLETE", a3.clone()))
        .await;
    assert_eq!(hc3.get("Hangup-Cause"), Some("MANAGER_REQUEST"));
    assert_eq!(c.api("show", "channels count").await, "\n0 total.\n");
    m.stop().await;
}

#[tokio::test]
async fn garbage_and_injection_from_one_client_do_not_disturb_others() {
    let m = cluster(1).await;
    let mut good = Esl::connect(m.esl_addr(0)).await;
    let mut evil = Esl::connect(m.esl_addr(0)).await;
    // CR/LF injection: FreeSWITCH ends the command line at CR; the rest of
    // the line is not a second command.
    evil.send_raw(b"api status\r\napi hupall\n\n").await;
    let r = evil.reply().await;
    assert!(reply_text(&r).starts_with("UP 0 years"));
    evil.send_raw(b"\x00\xff garbage \x01\n\n").await;
    assert_eq!(reply_text(&evil.reply().await), "-ERR command not found");
    evil.send_raw(b"sendevent CUSTOM\nContent-Length: 99999999999\n\n")
        .await;
    loop {
        match evil.next().await {
            Some(Message::DisconnectNotice(_)) => continue,
            None => break,
            Some(other) => panic!("{other:?}"),
        }
    }
    assert!(good.api("status", "").await.contains("is ready"));
    m.stop().await;
}

#[tokio::test]
async fn subscriptions_filters_and_formats() {
    let m = cluster(1).await;
    let mut c = Esl::connect(m.esl_addr(0)).await;
    assert_eq!(
        reply_text(&c.cmd(Command::noevents()).await),
        "-ERR not listening for events"
    );
    assert_eq!(
        reply_text(
            &c.cmd(Command::raw("event plain NOT_AN_EVENT").unwrap())
                .await
        ),
        "-ERR no keywords supplied"
    );
    assert_eq!(
        reply_text(&c.cmd(Command::raw("event bogusformat ALL").unwrap()).await),
        "+OK event listener enabled plain"
    );
    assert_eq!(
        reply_text(
            &c.cmd(Command::filter("Event-Name", "BACKGROUND_JOB").unwrap())
                .await
        ),
        "+OK filter added. [Event-Name]=[BACKGROUND_JOB]"
    );
    assert_eq!(
        reply_text(&c.cmd(Command::raw("filter Event-Name").unwrap()).await),
        "-ERR invalid syntax"
    );
    assert_eq!(
        reply_text(&c.cmd(Command::raw("filter").unwrap()).await),
        "-ERR command not found"
    );
    assert_eq!(
        reply_text(&c.cmd(Command::raw("event json ALL").unwrap()).await),
        "+OK event listener enabled json"
    );
    c.cmd(Command::bgapi("status", "", Some("11111111-2222-3333-4444-555555555555")).unwrap())
        .await;
    match c.next().await {
        Some(Message::Event(EventFormat::Json, e)) => {
            assert_eq!(e.event_name(), Some("BACKGROUND_JOB"));
            assert_eq!(e.job_uuid(), Some("11111111-2222-3333-4444-555555555555"));
            assert!(e.body_text().unwrap().starts_with("UP "));
        }
        other => panic!("filtered stream should hold only the job: {other:?}"),
    }
    assert_eq!(
        reply_text(&c.cmd(Command::filter_delete_all()).await),
        "+OK filter deleted. [all][]"
    );
    assert_eq!(
        reply_text(
            &c.cmd(Command::raw("event xml BACKGROUND_JOB").unwrap())
                .await
        ),
        "+OK event listener enabled xml"
    );
    c.cmd(Command::bgapi("status", "", None).unwrap()).await;
    loop {
        match c.next().await {
            Some(Message::Event(EventFormat::Xml, e))
                if e.event_name() == Some("BACKGROUND_JOB") =>
            {
                break;
            }
            Some(Message::Event(..)) => continue,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        reply_text(&c.cmd(Command::log("6").unwrap()).await),
        "+OK log level 6 [6]"
    );
    assert_eq!(c.api("log", "WARNING hello from test").await, "+OK\n");
    loop {
        match c.next().await {
            Some(Message::LogData(f)) => {
                assert_eq!(f.headers.get("Log-Level"), Some("4"));
                assert!(
                    String::from_utf8_lossy(f.body.as_deref().unwrap())
                        .contains("[WARNING] mod_commands.c:7247 hello from test")
                );
                break;
            }
            Some(Message::Event(..)) => continue,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        reply_text(&c.cmd(Command::nolog()).await),
        "+OK no longer logging"
    );
    assert_eq!(
        reply_text(&c.cmd(Command::linger(None)).await),
        "-ERR not controlling a session"
    );
    assert_eq!(reply_text(&c.cmd(Command::exit()).await), "+OK bye");
    m.stop().await;
}

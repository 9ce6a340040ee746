//! End to end against a real FreeSWITCH (opt-in): set
//! `SWITCHY_TEST_FREESWITCH=127.0.0.1:8021` to the ESL address of one built
//! and started with `../shared/tools/freeswitch/build.sh` (its `external`
//! profile on 127.0.0.1:5080 parks every inbound call in context
//! `switchy`). Without it the test prints one "skipped" line. Every
//! scenario runs in one test, one after another, because they share the
//! one FreeSWITCH: originate through an agent, REST session actions,
//! hangup, a route that bridges and one that rejects, every built-in app
//! (Bert needs mod_bert, which FreeSWITCH's tree lacks: skipped with a
//! message), an ESL drop and the agent's reconnect and resync, and, when
//! `SWITCHY_TEST_FREESWITCH_RESTART=1`, a FreeSWITCH restart
//! (`fsctl shutdown restart`) and the resync after it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchy_agent::{Agent, AgentConfig};
use switchy_controller::apps::builtin::{self, Params};
use switchy_controller::ca::{self, Pem};
use switchy_controller::cluster::{Tracking, Verdict};
use switchy_controller::{ClusterConfig, Controller, Router};
use switchy_e2e::{TOKEN, http, wait_for};
use tokio::net::{TcpListener, TcpStream};

/// The destination of self-calls: FreeSWITCH's own external profile.
const SELF: &str = "127.0.0.1:5080";

/// A TCP proxy in front of FreeSWITCH's ESL port, so the test can cut the
/// agent's connections as a network fault would.
struct EslProxy {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    _accept: tokio::task::JoinHandle<()>,
}

impl EslProxy {
    async fn start(target: SocketAddr) -> EslProxy {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = l.local_addr().expect("proxy address");
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let c2 = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut a, _)) = l.accept().await {
                let Ok(mut b) = TcpStream::connect(target).await else {
                    continue;
                };
                let h = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                });
                c2.lock().unwrap().push(h);
            }
        });
        EslProxy {
            addr,
            conns,
            _accept: accept,
        }
    }

    /// Closes every proxied connection (both sockets).
    fn cut(&self) {
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

struct Real {
    ctl: Controller,
    _agent: Agent,
    proxy: EslProxy,
}

async fn start(esl: SocketAddr) -> Real {
    let ca: Pem = ca::new_ca().unwrap();
    let cpem = ca::issue(&ca, "controller", &[]).unwrap();
    let config = ClusterConfig {
        tracking: Tracking::Live,
        ..ClusterConfig::default()
    };
    let ctl = Controller::start(
        config,
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        TOKEN.into(),
        ca.cert.as_bytes(),
        cpem.cert.as_bytes(),
        cpem.key.as_bytes(),
    )
    .await
    .unwrap();
    let proxy = EslProxy::start(esl).await;
    let pem = ca::issue(&ca, "fs1", &[]).unwrap();
    let mut c = AgentConfig::new(
        "fs1",
        &ctl.quic_addr.to_string(),
        ca.cert.clone().into_bytes(),
        pem.cert.clone().into_bytes(),
        pem.key.clone().into_bytes(),
    );
    c.esl_host = proxy.addr.ip().to_string();
    c.esl_port = proxy.addr.port();
    c.backoff_min = Duration::from_millis(50);
    c.backoff_max = Duration::from_millis(500);
    c.status_probe = Duration::from_millis(500);
    let agent = Agent::start(c).unwrap();
    let r = Real {
        ctl,
        _agent: agent,
        proxy,
    };
    r.wait_up().await;
    r
}

impl Real {
    async fn wait_up(&self) {
        let c = self.ctl.cluster.clone();
        wait_for(Duration::from_secs(30), || {
            c.nodes().iter().any(|n| n.ready())
        })
        .await
        .unwrap_or_else(|_| panic!("fs1 did not come up: {:?}", c.nodes()));
    }

    async fn load(&self, id: &str, name: &str, params: &[(&str, &str)]) {
        let p: Params = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.ctl
            .apps
            .load(id, vec![builtin::build(name, &p).unwrap()])
            .await
            .unwrap();
    }

    /// A self-call naming `app`: (caller UUID, its job).
    async fn call(&self, user: &str, app: &str) -> (String, switchy_controller::Job) {
        let vars = vec![
            ("switchy_app".to_owned(), app.to_owned()),
            ("sip_h_X-switchy-app".to_owned(), app.to_owned()),
        ];
        self.ctl
            .cluster
            .node("fs1")
            .originate(&format!("sofia/external/{user}@{SELF}"), "&park()", &vars)
            .await
            .unwrap()
    }

    async fn no_sessions(&self, what: &str) {
        let c = self.ctl.cluster.clone();
        wait_for(Duration::from_secs(20), || c.with_tracker(|t| t.is_empty()))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{what}: sessions left {:?}",
                    c.with_tracker(|t| t
                        .sessions()
                        .map(|s| (s.uuid.clone(), s.direction.clone(), s.state.clone()))
                        .collect::<Vec<_>>())
                )
            });
    }

    async fn counter(&self, name: &str, want: u64) {
        let apps = self.ctl.apps.clone();
        wait_for(Duration::from_secs(30), || apps.counter(name) >= want)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{name} = {} (want {want}): {:?}",
                    apps.counter(name),
                    apps.stats()
                )
            });
    }

    /// Hangs up the caller leg `a` and waits for the whole call to end.
    async fn hang_up(&self, a: &str, what: &str) {
        self.ctl
            .cluster
            .session(a)
            .unwrap_or_else(|| panic!("{what}: caller {a} not tracked"))
            .hangup("NORMAL_CLEARING")
            .await
            .unwrap();
        self.no_sessions(what).await;
    }

    async fn fs(&self, cmd: &str, args: &str) -> String {
        self.ctl.cluster.node("fs1").api(cmd, args).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_real_freeswitch() {
    let Ok(esl) = std::env::var("SWITCHY_TEST_FREESWITCH") else {
        // Straight to stderr, past the test harness' capture, so that CI
        // shows it.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "real-FreeSWITCH test skipped: set SWITCHY_TEST_FREESWITCH=127.0.0.1:8021 (build one with ../shared/tools/freeswitch/build.sh)"
        );
        return;
    };
    let esl: SocketAddr = esl.parse().expect("SWITCHY_TEST_FREESWITCH=HOST:PORT");
    // RUST_LOG=info shows what the agent and controller did.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let r = start(esl).await;
    r.fs("hupall", "NORMAL_CLEARING").await;
    r.no_sessions("before the test").await;
    r.load("park", "Park", &[]).await;
    r.ctl.apps.set_default("park");

    // 1. Originate through the agent; the Park app answers the far leg.
    let (a, job) = r.call("park", "park").await;
    job.wait().await.expect("the self-call is answered");
    let cluster = r.ctl.cluster.clone();
    wait_for(Duration::from_secs(10), || {
        cluster.with_tracker(|t| t.call(&a).is_some_and(|c| c.legs.len() == 2))
    })
    .await
    .expect("both legs form one call");
    // REST session actions on the live call.
    let (st, j) = http(r.ctl.http_addr, "GET", "/api/v1/calls", Some(TOKEN), None).await;
    assert_eq!((st, j["count"].as_u64()), (200, Some(1)), "{j}");
    let b = cluster
        .with_tracker(|t| {
            t.call(&a)
                .and_then(|c| c.legs.iter().find(|l| l.1 != a).cloned())
        })
        .expect("far leg")
        .1;
    let (st, j) = http(
        r.ctl.http_addr,
        "POST",
        &format!("/api/v1/sessions/{b}/playback"),
        Some(TOKEN),
        Some(r#"{"path": "tone_stream://%(100,0,440)"}"#),
    )
    .await;
    assert_eq!(st, 200, "{j}");
    let (st, j) = http(
        r.ctl.http_addr,
        "POST",
        &format!("/api/v1/sessions/{a}/hangup"),
        Some(TOKEN),
        Some(r#"{"cause": "NORMAL_CLEARING"}"#),
    )
    .await;
    assert_eq!(st, 200, "{j}");
    r.no_sessions("after the REST hangup").await;
    let causes: Vec<String> = cluster.with_tracker(|t| {
        t.finished()
            .iter()
            .filter(|f| f.session.call == a)
            .map(|f| f.cause.clone())
            .collect()
    });
    assert_eq!(causes, vec!["NORMAL_CLEARING", "NORMAL_CLEARING"]);
    // The legs' times come from FreeSWITCH.
    let answered = cluster.with_tracker(|t| {
        t.finished()
            .iter()
            .filter(|f| f.session.call == a)
            .all(|f| f.session.answered_us > 0 && f.session.hangup_us >= f.session.answered_us)
    });
    assert!(answered, "answer and hangup times of both legs");

    // 2. Every built-in app (Bert: FreeSWITCH's tree has no mod_bert).
    eprintln!("Bert skipped: it needs mod_bert, which FreeSWITCH's public tree lacks");
    r.load("tone", "TonePlay", &[]).await;
    let (a, job) = r.call("tone", "tone").await;
    job.wait().await.expect("TonePlay answered");
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.hang_up(&a, "TonePlay").await;

    r.load(
        "playrec",
        "PlayRec",
        &[
            ("silence_ms", "200"),
            ("iterations", "3"),
            ("rec_period", "2"),
        ],
    )
    .await;
    let (a, job) = r.call("playrec", "playrec").await;
    job.wait().await.expect("PlayRec answered");
    r.counter("playrec.passed", 1).await;
    r.no_sessions("PlayRec").await;
    assert_eq!(r.ctl.cluster.verdict(&a), Some(Verdict::Passed));
    assert_eq!(r.ctl.apps.counter("playrec.cycles"), 3);

    r.load("dtmf", "DtmfChecker", &[]).await;
    let (a, job) = r.call("dtmf", "dtmf").await;
    job.wait().await.expect("DtmfChecker answered");
    wait_for(Duration::from_secs(15), || {
        r.ctl
            .cluster
            .verdict(&a)
            .is_some_and(|v| !v.to_string().starts_with("failed: cut short"))
    })
    .await
    .unwrap_or_else(|_| panic!("DtmfChecker verdict {:?}", r.ctl.cluster.verdict(&a)));
    assert_eq!(r.ctl.cluster.verdict(&a), Some(Verdict::Passed));
    r.no_sessions("DtmfChecker").await;

    r.load("ring", "CalleeRingback", &[("ring_secs", "0.3")])
        .await;
    let (_, job) = r.call("ring", "ring").await;
    assert!(job.wait().await.is_err(), "CalleeRingback never answers");
    r.counter("ring.rang", 1).await;
    r.no_sessions("CalleeRingback").await;

    r.load("block", "CalleeBlockOnInvite", &[("code", "486")])
        .await;
    let (_, job) = r.call("block", "block").await;
    let err = job.wait().await.expect_err("blocked");
    assert!(err.contains("USER_BUSY"), "{err}");
    r.no_sessions("CalleeBlockOnInvite").await;

    // Bridger: the far leg is bridged to its own request URI, which comes
    // back once more and parks in the default app.
    r.load("bridger", "Bridger", &[("next_app", "park")]).await;
    let (a, job) = r.call("bridger", "bridger").await;
    job.wait().await.expect("bridged and answered");
    r.counter("bridger.bridged", 1).await;
    r.hang_up(&a, "Bridger").await;
    r.load(
        "proxier",
        "Proxier",
        &[("proxy", SELF), ("next_app", "park")],
    )
    .await;
    let (a, job) = r.call("proxier", "proxier").await;
    job.wait().await.expect("proxied and answered");
    r.counter("proxier.bridged", 1).await;
    r.hang_up(&a, "Proxier").await;
    assert_eq!(r.ctl.apps.stats().errors, 0, "{:?}", r.ctl.apps.stats());

    // 3. Routes: one bridges (to a number another route answers), one
    // rejects.
    let routes = r#"
start = "default"

[[routes]]
name = "reject"
pattern = '^reject$'
guards = { "Call-Direction" = "inbound" }
actions = [{ respond = 486 }]

[[routes]]
name = "bridge"
pattern = '^bridge$'
guards = { "Call-Direction" = "inbound" }
actions = [{ bridge = { dest = "answer@127.0.0.1:5080", profile = "external" } }]

# Routes end as the XML dialplan does: after `answer` alone the call would
# be hung up; `park` keeps it.
[[routes]]
name = "answer"
pattern = '^answer$'
guards = { "Call-Direction" = "inbound" }
actions = ["answer", "park"]
"#;
    let dir = std::env::temp_dir().join(format!("switchy-fs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("routes.toml");
    std::fs::write(&path, routes).unwrap();
    r.ctl
        .use_router(Router::from_file(&path).unwrap())
        .await
        .unwrap();
    let node = r.ctl.cluster.node("fs1");
    let (_, job) = node
        .originate(&format!("sofia/external/reject@{SELF}"), "&park()", &[])
        .await
        .unwrap();
    let err = job.wait().await.expect_err("the reject route refuses");
    assert!(err.contains("USER_BUSY"), "{err}");
    let (a, job) = node
        .originate(&format!("sofia/external/bridge@{SELF}"), "&park()", &[])
        .await
        .unwrap();
    job.wait().await.expect("the bridge route connects");
    let legs = |c: &switchy_controller::Cluster| c.with_tracker(|t| t.len());
    wait_for(Duration::from_secs(10), || legs(&cluster) == 4)
        .await
        .unwrap_or_else(|_| panic!("a bridged self-call has 4 legs, got {}", legs(&cluster)));
    node.api("uuid_kill", &a).await.unwrap();
    r.no_sessions("the bridge route").await;
    r.ctl.apps.unload("router").await;
    r.ctl.apps.set_default("park");

    // 4. An ESL drop: the agent reconnects and resyncs; a call that was up
    // across the drop is still one call and ends normally.
    let (a, job) = r.call("park", "park").await;
    job.wait().await.expect("answered before the drop");
    r.proxy.cut();
    wait_for(Duration::from_secs(10), || {
        cluster
            .nodes()
            .iter()
            .any(|n| n.esl != switchy_controller::cluster::EslLink::Up)
    })
    .await
    .expect("the node went down with its ESL connection");
    r.wait_up().await;
    wait_for(Duration::from_secs(10), || {
        cluster.with_tracker(|t| t.call(&a).is_some_and(|c| c.legs.len() == 2))
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the call did not survive the resync: {:?}",
            cluster.with_tracker(|t| t
                .sessions()
                .map(|s| (s.uuid.clone(), s.call.clone(), s.direction.clone()))
                .collect::<Vec<_>>())
        )
    });
    node.api("uuid_kill", &a).await.unwrap();
    r.no_sessions("after the ESL drop").await;

    // 5. FreeSWITCH restarts (opt-in: it takes the server down for a while).
    if std::env::var("SWITCHY_TEST_FREESWITCH_RESTART").as_deref() == Ok("1") {
        let before = cluster.nodes()[0].core_uuid.clone();
        let (a, job) = r.call("park", "park").await;
        job.wait().await.expect("answered before the restart");
        let _ = node.api("fsctl", "shutdown restart").await;
        wait_for(Duration::from_secs(90), || {
            let n = &cluster.nodes()[0];
            n.esl == switchy_controller::cluster::EslLink::Up && n.core_uuid != before
        })
        .await
        .expect("FreeSWITCH came back with a new Core-UUID");
        wait_for(Duration::from_secs(10), || {
            cluster.with_tracker(|t| t.session(&a).is_none())
        })
        .await
        .expect("the call that died with FreeSWITCH was closed");
        let (_, job) = r.call("park", "park").await;
        job.wait().await.expect("calls work after the restart");
        r.fs("hupall", "NORMAL_CLEARING").await;
        r.no_sessions("after the restart").await;
    } else {
        eprintln!(
            "FreeSWITCH restart part skipped: set SWITCHY_TEST_FREESWITCH_RESTART=1 to restart it (fsctl shutdown restart)"
        );
    }
}

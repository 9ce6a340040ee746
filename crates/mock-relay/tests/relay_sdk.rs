//! SignalWire's real SDKs against `mock-relay --relay`: the Python SDK's
//! test suite in tests/relay_sdk/python (pytest) and the Node SDK's probe
//! in tests/relay_sdk/node. CI installs both (`.ci/run`); elsewhere a
//! missing SDK prints one "skipped" line, unless SWITCHY_REQUIRE_RELAY_SDKS=1.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn required() -> bool {
    std::env::var("SWITCHY_REQUIRE_RELAY_SDKS").is_ok_and(|v| v == "1")
}

fn skip(why: &str) {
    assert!(!required(), "SWITCHY_REQUIRE_RELAY_SDKS=1 but {why}");
    // Straight to stderr, past the test harness' capture, so CI shows it.
    let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("skipped: {why}\n"));
}

/// A CA and a certificate for 127.0.0.1/localhost, as `switchy-controller ca` makes them.
fn tls_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("relay-sdk-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ca = switchy_link::ca::new_ca().expect("CA");
    let leaf = switchy_link::ca::issue(&ca, "relay", &[]).expect("certificate");
    std::fs::write(dir.join("ca.pem"), &ca.cert).expect("write");
    std::fs::write(dir.join("relay.pem"), &leaf.cert).expect("write");
    std::fs::write(dir.join("relay.key"), &leaf.key).expect("write");
    let other = switchy_link::ca::new_ca().expect("CA");
    std::fs::write(dir.join("other-ca.pem"), &other.cert).expect("write");
    dir
}

fn python() -> String {
    std::env::var("SWITCHY_RELAY_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[test]
fn python_sdk_suite() {
    let py = python();
    let probe = Command::new(&py)
        .args([
            "-c",
            "import signalwire.relay.client, pytest, pytest_asyncio, requests",
        ])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        _ => {
            return skip(&format!(
                "the Python SDK is not installed for {py} \
                 (pip install -r tests/relay_sdk/python/requirements.txt, or set SWITCHY_RELAY_PYTHON)"
            ));
        }
    }
    let dir = tls_dir("py");
    let out = Command::new(&py)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA"])
        .arg(repo().join("tests/relay_sdk/python"))
        .current_dir(repo().join("tests/relay_sdk/python"))
        .env("MOCK_RELAY_BIN", env!("CARGO_BIN_EXE_mock-relay"))
        .env("RELAY_TLS_DIR", &dir)
        .output()
        .expect("running pytest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "the Python SDK suite failed:\n{text}");
    assert!(text.contains(" passed"), "{text}");
}

/// A `mock-relay --relay` process on free loopback ports, killed when
/// dropped (so also when an assertion fails).
struct MockRelay {
    child: Child,
    ws_port: u16,
    http_port: u16,
    log: PathBuf,
}

impl Drop for MockRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `GET /__mock__/health` by hand (HTTP/1.0: the server closes after the
/// answer): whether it says 200 and `"status":"ok"`.
fn healthy(port: u16) -> bool {
    let get = || -> std::io::Result<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.set_write_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /__mock__/health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    };
    get().is_ok_and(|t| {
        t.lines().next().is_some_and(|l| l.contains(" 200 ")) && t.contains("\"status\":\"ok\"")
    })
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl MockRelay {
    /// Starts the mock (wss with `tls`: relay.pem and relay.key in that
    /// directory) and waits until its control plane answers.
    fn start(tls: Option<&Path>, log: PathBuf) -> MockRelay {
        let (ws_port, http_port) = (free_port(), free_port());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mock-relay"));
        cmd.args(["--relay", "--ws-port", &ws_port.to_string()])
            .args(["--http-port", &http_port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("mock-relay log file"));
        if let Some(dir) = tls {
            cmd.arg("--tls-cert").arg(dir.join("relay.pem"));
            cmd.arg("--tls-key").arg(dir.join("relay.key"));
        }
        let mut mock = MockRelay {
            child: cmd.spawn().expect("starting mock-relay"),
            ws_port,
            http_port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !healthy(http_port) {
            if let Ok(Some(status)) = mock.child.try_wait() {
                panic!(
                    "mock-relay exited ({status}) before its control plane answered:\n{}",
                    read_log(&mock.log)
                );
            }
            assert!(
                Instant::now() < deadline,
                "mock-relay's /__mock__/health on port {http_port} did not answer within 15 s:\n{}",
                read_log(&mock.log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        mock
    }
}

/// Runs `node answer.mjs` (which gives up by itself after 30 s; killed at
/// 60 s all the same); its stdout and stderr together.
fn run_node(dir: &Path, envs: &[(&str, OsString)], out: &Path) -> (bool, String) {
    let log = File::create(out).expect("node log file");
    let mut cmd = Command::new("node");
    cmd.arg("answer.mjs")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("node log file"))
        .stderr(log);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("running node");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut text = read_log(out);
    if status.is_none() {
        text.push_str("\n(killed: node answer.mjs ran past 60 s)\n");
    }
    (status.is_some_and(|s| s.success()), text)
}

#[test]
fn node_sdk_answers_and_resumes() {
    let dir = repo().join("tests/relay_sdk/node");
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return skip("`node` is not on PATH (the Node SDK test needs Node 18 or later)");
    }
    if !dir.join("node_modules/@signalwire/realtime-api").is_dir() {
        return skip("the Node SDK is not installed (run `npm ci --prefix tests/relay_sdk/node`)");
    }
    let tls = tls_dir("node");
    for scheme in ["ws", "wss"] {
        let mock = MockRelay::start(
            (scheme == "wss").then_some(tls.as_path()),
            tls.join(format!("mock-relay-{scheme}.log")),
        );
        let mut envs: Vec<(&str, OsString)> = vec![
            (
                "MOCK_WS_URL",
                format!("{scheme}://127.0.0.1:{}", mock.ws_port).into(),
            ),
            (
                "MOCK_HTTP_URL",
                format!("http://127.0.0.1:{}", mock.http_port).into(),
            ),
        ];
        if scheme == "wss" {
            envs.push(("NODE_EXTRA_CA_CERTS", tls.join("ca.pem").into()));
        }
        let (passed, text) = run_node(&dir, &envs, &tls.join(format!("node-{scheme}.log")));
        let mock_log = read_log(&mock.log);
        drop(mock);
        eprintln!("--- the Node SDK over {scheme} ---\n{text}");
        assert!(
            passed && text.contains("PASS:"),
            "the Node SDK over {scheme} failed (node answer.mjs in {}):\n{text}\n--- mock-relay's log ---\n{mock_log}",
            dir.display()
        );
    }
    let _ = std::fs::remove_dir_all(&tls);
}

//! SignalWire's real SDKs against `mock-relay --relay`: the Python SDK's
//! test suite in tests/relay_sdk/python (pytest) and the Node SDK's probe
//! in tests/relay_sdk/node. CI installs both (`.ci/run`); elsewhere a
//! missing SDK prints one "skipped" line, unless SWITCHY_REQUIRE_RELAY_SDKS=1.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn required() -> bool {
    std::env::var("SWITCHY_REQUIRE_RELAY_SDKS").is_ok_and(|v| v == "1")
}

fn skip(why: &str) {
    assert!(!required(), "SWITCHY_REQUIRE_RELAY_SDKS=1 but {why}");
    eprintln!("skipped: {why}");
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

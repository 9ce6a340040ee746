//! `switchy-controller serve --routes` as a process: SIGHUP reloads the
//! routes file; a broken file is refused and the old routes keep serving.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchy-controller");

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-123\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn wait_routes(port: u16, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(r) = get(port, "/api/v1/routes") {
            if r.contains(want) {
                return r;
            }
            last = r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("routes never showed {want:?}; last answer:\n{last}");
}

fn route(name: &str, code: u16) -> String {
    format!("[[routes]]\nname = \"{name}\"\npattern = '^2'\nactions = [{{ respond = {code} }}]\n")
}

#[test]
fn sighup_reloads_routes_and_a_broken_file_keeps_the_old_ones() {
    let dir = std::env::temp_dir().join(format!("switchy-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    for args in [
        vec!["ca", "init", "--dir", d],
        vec!["ca", "issue", "--name", "controller", "--dir", d],
    ] {
        let st = Command::new(BIN).args(&args).output().unwrap();
        assert!(
            st.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
    let routes = dir.join("routes.toml");
    std::fs::write(&routes, route("first", 486)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(BIN)
        .args([
            "serve",
            "--tls-dir",
            d,
            "--listen",
            "127.0.0.1:0",
            "--http",
            &format!("127.0.0.1:{port}"),
            "--routes",
            routes.to_str().unwrap(),
        ])
        .env("SWITCHY_API_TOKEN", "tok-123")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Kill(child);
    let sighup = |pid: &str| {
        assert!(
            Command::new("kill")
                .args(["-HUP", pid])
                .status()
                .unwrap()
                .success()
        )
    };
    let pid = child.0.id().to_string();
    wait_routes(port, "\"first\"");

    std::fs::write(&routes, route("second", 480)).unwrap();
    sighup(&pid);
    wait_routes(port, "\"second\"");

    // Broken: refused, the old table keeps serving.
    std::fs::write(
        &routes,
        "[[routes]]\nname = \"bad\"\npattern = '('\nactions = []\n",
    )
    .unwrap();
    sighup(&pid);
    std::thread::sleep(Duration::from_millis(500));
    let r = wait_routes(port, "\"second\"");
    assert!(!r.contains("\"bad\""), "{r}");
    // Still alive after the refused reload.
    assert!(get(port, "/health").is_some_and(|h| h.contains("200 OK")));
}

/// `serve`'s RELAY settings are checked before anything listens, each
/// refusal saying what to give.
#[test]
fn relay_settings_are_refused_with_what_to_fix() {
    let dir = std::env::temp_dir().join(format!("switchy-serve-relay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let routes = dir.join("routes.toml");
    std::fs::write(
        &routes,
        "start = \"default\"\n[[routes]]\nname = \"office\"\npattern = '^4'\nactions = [{ relay = \"office\" }]\n",
    )
    .unwrap();
    let r = routes.to_str().unwrap();
    let d = dir.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--routes", r], "add --relay-listen"),
        (&["--relay-listen", "127.0.0.1:0"], "--relay-tls-cert"),
        (
            &["--relay-listen", "127.0.0.1:0", "--relay-plain-ws"],
            "--relay-project",
        ),
        (
            &[
                "--relay-listen",
                "127.0.0.1:0",
                "--relay-plain-ws",
                "--relay-project",
                "p",
            ],
            "PROJECT:TOKEN",
        ),
        (
            &[
                "--relay-listen",
                "127.0.0.1:0",
                "--relay-plain-ws",
                "--relay-project",
                "p:t",
                "--relay-phone",
                "sofia/x",
            ],
            "{to}",
        ),
    ];
    for (args, want) in cases {
        let out = Command::new(BIN)
            .args([
                "serve",
                "--tls-dir",
                d,
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
            ])
            .args(*args)
            .env("SWITCHY_API_TOKEN", "t0123456789")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(want), "{args:?}: wanted {want:?} in: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

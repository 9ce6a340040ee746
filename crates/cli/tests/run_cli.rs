//! `switchy-controller run` as a process: SIGTERM in the middle of a load
//! test hangs up the run's calls and flushes every CDR before exiting.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use switchy_controller::cdr::CdrStore;

fn field(out: &str, name: &str) -> u64 {
    out.lines()
        .find_map(|l| {
            let l = l.trim();
            l.strip_prefix(name)
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or_else(|| panic!("no `{name}` in the summary:\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_loses_no_cdr() {
    let db = std::env::temp_dir().join(format!("switchy-sigterm-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&db);
    let url = format!("sqlite://{}", db.display());
    let child = Command::new(env!("CARGO_BIN_EXE_switchy-controller"))
        .args([
            "run",
            "--mock",
            "2",
            "--rate",
            "100",
            "--limit",
            "150",
            "--duration",
            "0.5",
            "--http",
            "127.0.0.1:0",
            "--db",
            &url,
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchy-controller run");
    let pid = child.id();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let t0 = Instant::now();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    assert!(t0.elapsed() < Duration::from_secs(30), "slow shutdown");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{stdout}\n{stderr}");
    let offered = field(&stdout, "offered");
    let written = field(&stdout, "CDRs written");
    assert!(
        offered > 100,
        "the run was interrupted too early: {offered}"
    );
    assert_eq!(written, offered, "{stdout}");
    let store = CdrStore::connect(&url).await.expect("open the CDR file");
    assert_eq!(store.count().await.expect("count") as u64, offered);
    store.close().await;
}

/// Logs go to stderr, without colour codes when stderr is not a terminal;
/// stdout carries only what the command prints (its summary).
#[test]
fn logs_go_to_stderr_without_colour_when_piped() {
    let db = std::env::temp_dir().join(format!("switchy-logs-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&db);
    let url = format!("sqlite://{}", db.display());
    let out = Command::new(env!("CARGO_BIN_EXE_switchy-controller"))
        .args([
            "run",
            "--mock",
            "1",
            "--rate",
            "20",
            "--max-offered",
            "5",
            "--duration",
            "0.2",
            "--http",
            "127.0.0.1:0",
            "--db",
            &url,
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run switchy-controller run");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(" INFO "),
        "no log line on stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in piped logs:\n{stderr}"
    );
    assert!(
        !stdout
            .lines()
            .any(|l| l.contains(" INFO ") || l.contains(" WARN ")),
        "log lines on stdout:\n{stdout}"
    );
    assert!(stdout.contains("== switchy run summary"), "{stdout}");
}

/// `cdr export` and `plot` on a database that does not exist say so and
/// create no empty file.
#[test]
fn reading_commands_do_not_create_a_missing_database() {
    let db = std::env::temp_dir().join(format!("switchy-missing-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&db);
    let url = format!("sqlite://{}", db.display());
    let svg = std::env::temp_dir().join(format!("switchy-missing-{}.svg", std::process::id()));
    for args in [
        vec!["cdr", "export", "--db", url.as_str()],
        vec![
            "plot",
            "--db",
            url.as_str(),
            "--out",
            svg.to_str().unwrap_or("x.svg"),
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_switchy-controller"))
            .args(&args)
            .output()
            .expect("run switchy-controller");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains("no CDR database at"), "{args:?}: {stderr}");
        assert!(!db.exists(), "{args:?} created {}", db.display());
    }
}

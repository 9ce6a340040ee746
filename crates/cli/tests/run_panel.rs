//! `switchy-controller run` on a real terminal: tmux, 80 columns. The live
//! panel is redrawn in place with no log line in it, `q` ends the run
//! gracefully, and the summary on a redirected stdout is plain text.
//! Needs tmux (CI installs it; elsewhere the test says it was skipped,
//! unless SWITCHY_REQUIRE_TMUX is set).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn tmux(sock: &str, args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(["-L", sock])
        .args(args)
        .output()
        .expect("run tmux");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kills the test's tmux server (and the run in it) however the test ends.
struct Server(String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .status();
    }
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_panel_redraws_in_place_and_q_ends_the_run() {
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(
            std::env::var_os("SWITCHY_REQUIRE_TMUX").is_none(),
            "SWITCHY_REQUIRE_TMUX is set but tmux is not installed"
        );
        eprintln!("skipped: the_panel_redraws_in_place_and_q_ends_the_run needs tmux");
        return;
    }
    let dir = std::env::temp_dir().join(format!("switchy-panel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = dir.join("summary.txt");
    let rc = dir.join("rc");
    let cmd = format!(
        "{} run --mock 2 --rate 50 --limit 200 --duration 2 --http 127.0.0.1:0 --db sqlite://{} > {} ; echo $? > {}",
        env!("CARGO_BIN_EXE_switchy-controller"),
        dir.join("cdr.db").display(),
        out.display(),
        rc.display()
    );
    let sock = format!("switchy-test-{}", std::process::id());
    // A clean environment: no RUST_LOG, so run's WARN default applies.
    let status = Command::new("tmux")
        .args([
            "-L",
            &sock,
            "new-session",
            "-d",
            "-x",
            "80",
            "-y",
            "24",
            "-s",
            "run",
        ])
        .arg(format!(
            "env -u RUST_LOG -u NO_COLOR TERM=xterm sh -c '{cmd}'"
        ))
        .status()
        .expect("tmux new-session");
    assert!(status.success());
    let _server = Server(sock.clone());
    let pane = || tmux(&sock, &["capture-pane", "-p", "-t", "run"]);
    wait_for("the panel", 30, || {
        let p = pane();
        p.contains("ORIGINATING") && p.contains("answered")
    });
    std::thread::sleep(Duration::from_millis(2500));
    let a = pane();
    std::thread::sleep(Duration::from_millis(1500));
    let b = pane();
    for p in [&a, &b] {
        // One panel, redrawn in place: its header once, nothing scrolled.
        assert_eq!(p.matches("switchy run ").count(), 1, "{p}");
        assert!(p.lines().all(|l| l.chars().count() <= 80), "{p}");
        assert!(
            !p.contains("INFO") && !p.contains("WARN"),
            "a log line in the panel:\n{p}"
        );
        assert!(p.contains("KPIs        ASR 100.0 %"), "{p}");
        assert!(p.contains("nodes live  fs1 "), "{p}");
    }
    assert_ne!(a, b, "the panel did not change in 1.5 s");
    tmux(&sock, &["send-keys", "-t", "run", "q"]);
    wait_for("the run to end", 30, || {
        rc.exists() && std::fs::read_to_string(&rc).is_ok_and(|s| !s.trim().is_empty())
    });
    let code = std::fs::read_to_string(&rc).expect("rc");
    let summary = std::fs::read_to_string(&out).expect("summary");
    let last = pane();
    tmux(&sock, &["kill-server"]);
    assert_eq!(code.trim(), "0", "{summary}\n{last}");
    assert!(summary.contains("== switchy run summary =="), "{summary}");
    assert!(
        !summary.contains('\x1b'),
        "escape codes in the redirected summary"
    );
    let offered: u64 = summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("offered")?.trim().parse().ok())
        .expect("offered");
    let cdrs = summary
        .lines()
        .find(|l| l.trim_start().starts_with("CDRs written"))
        .expect("CDRs written");
    assert!(offered >= 100, "{summary}");
    assert!(cdrs.contains("one per offered call"), "{summary}");
    assert!(
        !last.contains("WARN"),
        "a warning after a clean exit:\n{last}"
    );
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}

//! The README's commands, run as written: its code blocks are read from
//! README.md and run with `sh`, with a `cargo` on PATH that runs the
//! binaries this test build made (`cargo run --release --bin X -- ARGS` →
//! `X ARGS`), so what a reader types is what is tested. Every curl answer
//! must be JSON without an `error`. Uses the README's fixed ports (9080,
//! 4433, 18021–18022, 19021) and /tmp/switchy-demo.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const README: &str = include_str!("../../../README.md");

/// The ```sh blocks of the README, in order.
fn sh_blocks() -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in README.lines() {
        match (&mut cur, line.trim_start()) {
            (None, l) if l.starts_with("```sh") => cur = Some(String::new()),
            (Some(_), "```") => out.extend(cur.take()),
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    out
}

fn block(containing: &str) -> String {
    sh_blocks()
        .into_iter()
        .find(|b| b.contains(containing))
        .unwrap_or_else(|| panic!("no README block with {containing:?}"))
}

/// Joins `\` continuations; drops comments and blank lines.
fn commands(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in block.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some(head) = l.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
        } else {
            cur.push_str(l);
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

struct Env {
    shim: PathBuf,
    work: PathBuf,
    children: Vec<Child>,
}

impl Env {
    fn new() -> Env {
        let bin = Path::new(env!("CARGO_BIN_EXE_switchy-controller"))
            .parent()
            .expect("target dir")
            .to_path_buf();
        for b in ["mock-relay", "switchy-agent"] {
            assert!(
                bin.join(b).exists(),
                "{} is not built: `cargo test --workspace` builds it (or cargo build --bins)",
                bin.join(b).display()
            );
        }
        let work = std::env::temp_dir().join(format!("switchy-readme-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        let shim = work.join("shim");
        std::fs::create_dir_all(&shim).expect("shim dir");
        // cargo run [--release] (--bin NAME | -p PKG) -- ARGS
        let script = format!(
            r#"#!/bin/sh
[ "$1" = run ] || {{ echo "readme test: only 'cargo run' is shimmed" >&2; exit 2; }}
shift
name=
while [ $# -gt 0 ]; do
  case "$1" in
    --release) shift ;;
    --bin|-p) name="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "readme test: unexpected cargo argument $1" >&2; exit 2 ;;
  esac
done
case "$name" in switchy-cli) name=switchy-controller ;; esac
exec "{}/$name" "$@"
"#,
            bin.display()
        );
        let p = shim.join("cargo");
        std::fs::write(&p, script).expect("shim");
        let _ = Command::new("chmod").arg("+x").arg(&p).status();
        Env {
            shim,
            work,
            children: Vec::new(),
        }
    }

    fn sh(&self, script: &str) -> Command {
        let mut c = Command::new("setsid");
        c.arg("sh")
            .arg("-c")
            .arg(script)
            .current_dir(&self.work)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.shim.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env_remove("RUST_LOG")
            .env_remove("SWITCHY_API_TOKEN")
            .env_remove("SWITCHY_DB");
        c
    }

    /// Runs in the background (its own process group), output to a log.
    fn spawn(&mut self, name: &str, script: &str) {
        let log = std::fs::File::create(self.work.join(format!("{name}.log"))).expect("log");
        let child = self
            .sh(script)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn");
        self.children.push(child);
    }

    /// Waits until the README's controller lists both nodes with ESL up;
    /// on a timeout the `logs` named are shown.
    fn wait_nodes_up(&self, exports: &str, logs: &[&str]) {
        let t0 = Instant::now();
        loop {
            let (_, out) = self.run(&format!(
                "{exports}\ncurl -s -H \"$H\" localhost:9080/api/v1/nodes"
            ));
            if out.matches("\"esl\":\"up\"").count() == 2 {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the agents did not come up: {out}\n{}",
                logs.iter()
                    .map(|l| self.log(l))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.work.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Runs to the end; (exit code, stdout).
    fn run(&self, script: &str) -> (i32, String) {
        let out = self
            .sh(script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for c in &self.children {
            kill_group(c);
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

/// SIGTERM to a spawned script's whole process group: its `sh` and what
/// it started in the background.
fn kill_group(c: &Child) {
    let _ = Command::new("kill")
        .args(["-s", "TERM", "--", &format!("-{}", c.id())])
        .status();
}

fn wait_http(url: &str, secs: u64) {
    let t0 = Instant::now();
    loop {
        let ok = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", url])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with('2'));
        if ok {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "{url} did not come up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A command's answer: JSON with no `error` (one line may print several
/// JSON documents: `a ; b`).
fn assert_json_ok(cmd: &str, out: &str) {
    let mut n = 0;
    for v in serde_json::Deserializer::from_str(out).into_iter::<serde_json::Value>() {
        let v = v.unwrap_or_else(|e| panic!("`{cmd}` printed no JSON ({e}): {out}"));
        assert!(v.get("error").is_none(), "`{cmd}` answered an error: {v}");
        n += 1;
    }
    assert!(n > 0, "`{cmd}` printed nothing");
}

#[test]
fn the_readmes_commands_run_as_written() {
    if Command::new("curl").arg("--version").output().is_err() {
        panic!("the README test needs curl (CI installs it)");
    }
    let mut env = Env::new();
    // The main job, on embedded defaults.
    let main_job = README
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cargo run --release --bin switchy-controller -- run --mock 2"))
        .expect("the README's main command");
    let (code, out) = env.run(main_job);
    assert_eq!(code, 0, "{main_job}\n{out}");
    assert!(out.contains("(one per offered call)"), "{out}");

    // Controller and agents by hand: three terminals.
    let exports = commands(&block("export D=/tmp/switchy-demo")).join("\n");
    let _ = std::fs::remove_dir_all("/tmp/switchy-demo");
    let terminal1 = block("# 1. two simulated FreeSWITCH nodes");
    let (t1, rest) = terminal1
        .split_once("# 2.")
        .expect("the three-terminal block");
    let (t2, t3) = rest.split_once("# 3.").expect("terminal 3");
    env.spawn("terminal1", &format!("{exports}\n{t1}"));
    wait_http("http://127.0.0.1:19021/__mock__/health", 30);
    env.spawn("terminal2", &format!("{exports}\n# 2.{t2}"));
    wait_http("http://127.0.0.1:9080/health", 60);
    env.spawn("terminal3", &format!("{exports}\n# 3.{t3}\nwait"));
    env.wait_nodes_up(&exports, &["terminal2", "terminal3"]);
    // Drive the cluster over REST, line by line.
    let mut uuid = String::new();
    for cmd in commands(&block("localhost:9080/api/v1/nodes/fs1/originate")) {
        if cmd.contains("<uuid>") && uuid.is_empty() {
            let (_, out) = env.run(&format!(
                "{exports}\ncurl -s -H \"$H\" 'localhost:9080/api/v1/sessions?direction=inbound'"
            ));
            let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            uuid = v["sessions"][0]["uuid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(!uuid.is_empty(), "no inbound session to act on: {out}");
        }
        let line = cmd.replace("<uuid>", &uuid);
        let (code, out) = env.run(&format!("{exports}\n{line}"));
        assert_eq!(code, 0, "{line}");
        if line.contains("/metrics") {
            assert!(out.contains("switchy_nodes 2"), "{out}");
        } else {
            assert_json_ok(&line, &out);
        }
        if line.contains("/originate") {
            // Its callee leg reaches fs2 and parks.
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    // The mock's control plane, line by line.
    for cmd in commands(&block("localhost:19021/__mock__/health")) {
        let (code, out) = env.run(&format!("{exports}\n{cmd}"));
        assert_eq!(code, 0, "{cmd}");
        assert_json_ok(&cmd, &out);
    }
    // Central routing: serve again, with the example routes.
    let routing = commands(&block("--routes deploy/routes.example.toml"));
    let serve = routing
        .iter()
        .find(|c| c.contains(" serve "))
        .expect("the routing serve command");
    // The routes file is named relative to the repository.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let serve = serve.replace(
        "deploy/routes.example.toml",
        &repo
            .join("deploy/routes.example.toml")
            .display()
            .to_string(),
    );
    // Stop the first controller (terminal 2's group), start this one.
    let mut first = env.children.remove(1);
    kill_group(&first);
    let _ = first.wait();
    env.spawn("routing-serve", &format!("{exports}\n{serve}"));
    wait_http("http://127.0.0.1:9080/health", 60);
    env.wait_nodes_up(&exports, &["routing-serve"]);
    for cmd in routing.iter().filter(|c| !c.contains(" serve ")) {
        let line = cmd.replace("<controller pid>", "$(pidof switchy-controller)");
        let (code, out) = env.run(&format!("{exports}\n{line}"));
        assert_eq!(code, 0, "{line}");
        if line.starts_with("curl") {
            assert_json_ok(&line, &out);
        }
        if line.contains("inbound_call") {
            std::thread::sleep(Duration::from_millis(500));
        }
        if line.contains("journal") {
            assert!(out.contains("respond") && out.contains("403"), "{out}");
        }
    }
    if routing.iter().any(|c| c.contains("kill -HUP")) {
        let t0 = Instant::now();
        while !env.log("routing-serve").contains("SIGHUP: routes reloaded") {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the README's kill -HUP did not reload the routes:\n{}",
                env.log("routing-serve")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // mock-relay's RELAY mode and its control plane, as written.
    let relay = commands(&block("localhost:9773/__mock__/inbound_call"));
    let start = relay
        .iter()
        .find(|c| c.contains("-- --relay"))
        .expect("the RELAY mode command");
    env.spawn("relay", start);
    wait_http("http://127.0.0.1:9773/__mock__/health", 30);
    for cmd in relay.iter().filter(|c| c.starts_with("curl")) {
        let (code, out) = env.run(cmd);
        assert_eq!(code, 0, "{cmd}");
        assert_json_ok(cmd, &out);
        if cmd.contains("/journal") {
            assert!(out.trim_start().starts_with('['), "{out}");
        }
    }
    let _ = std::fs::remove_dir_all(&env.work);
}

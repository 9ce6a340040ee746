//! The switchy-agent command: `--help` names every option's default (the
//! guide's rule), and a bad fallback action is refused with what to write.

use std::process::Command;

#[test]
fn help_shows_every_default_and_a_bad_fallback_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchy-agent"))
        .arg("--help")
        .output()
        .expect("run switchy-agent --help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    // Options that have a default say it; the required ones have none.
    let required = [
        "--config",
        "--node-id",
        "--controller ",
        "--tls-ca",
        "--tls-cert",
        "--tls-key",
        "--help",
        "--version",
    ];
    // Each option: its flag line (indented 2–6), then its description.
    let mut entries: Vec<String> = Vec::new();
    for line in help.lines() {
        let indent = line.len() - line.trim_start().len();
        if line.trim_start().starts_with('-') && indent <= 6 {
            entries.push(line.trim().to_owned());
        } else if let Some(e) = entries.last_mut() {
            e.push(' ');
            e.push_str(line.trim());
        }
    }
    let options = entries.len();
    for p in &entries {
        if required
            .iter()
            .any(|r| p.starts_with(r) || p.contains(&format!(" {r}")))
        {
            continue;
        }
        assert!(p.contains("[default"), "no default shown for:\n{p}");
    }
    assert!(options > 20, "{options} options in:\n{help}");
    let out = Command::new(env!("CARGO_BIN_EXE_switchy-agent"))
        .args([
            "--node-id",
            "fs1",
            "--controller",
            "127.0.0.1:4433",
            "--fallback-action",
            "reboot now",
        ])
        .output()
        .expect("run switchy-agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("hangup [CAUSE]") && err.contains("transfer EXTENSION XML CONTEXT"),
        "{err}"
    );
}

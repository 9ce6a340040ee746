//! Records call flows from a real FreeSWITCH and holds mock-relay (or a
//! fresh real run) against the recordings. See tests/fidelity/README.md.

use anyhow::Context;
use switchy_e2e::fidelity::{self, Recording};

const USAGE: &str = "usage: fidelity record|compare|mock [--esl HOST:PORT] [--password PW] [--self SIP_HOST:PORT] [--runs N] [FLOW…]
  record   run each flow --runs times (default 3) against the FreeSWITCH at --esl and store the merged recording
           (--add: merge into the stored one instead of replacing it)
  compare  run each flow once against --esl and compare it with its stored recording
  mock     start mock-relay in this process and compare each flow's run on it with its recording
defaults: --esl 127.0.0.1:8021, --password ClueCon, --self 127.0.0.1:5080, every flow in tests/fidelity/flows";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(verb) = args.next() else {
        anyhow::bail!("{USAGE}");
    };
    let mut add = false;
    let (mut esl, mut password, mut self_addr, mut runs) = (
        "127.0.0.1:8021".to_owned(),
        "ClueCon".to_owned(),
        "127.0.0.1:5080".to_owned(),
        3usize,
    );
    let mut names = Vec::new();
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .with_context(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--esl" => esl = val()?,
            "--password" => password = val()?,
            "--self" => self_addr = val()?,
            "--add" => add = true,
            "--runs" => runs = val()?.parse().context("--runs takes a number")?,
            "-h" | "--help" => {
                eprintln!("{USAGE}");
                return Ok(());
            }
            f if f.starts_with('-') => anyhow::bail!("unknown option {f}\n{USAGE}"),
            f => names.push(f.to_owned()),
        }
    }
    let all = fidelity::flows()?;
    let chosen: Vec<(String, fidelity::Flow)> = if names.is_empty() {
        all.into_iter().collect()
    } else {
        names
            .iter()
            .map(|n| {
                all.get(n)
                    .cloned()
                    .map(|f| (n.clone(), f))
                    .with_context(|| format!("no flow {n} in {}", fidelity::dir().display()))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let mock = if verb == "mock" {
        let m = mock_relay::MockCluster::start(fidelity::mock_config()).await?;
        esl = m.esl_addr(0).to_string();
        Some(m)
    } else {
        None
    };
    let recs = fidelity::recordings()?;
    let var = fidelity::Variation::learn(recs.values());
    let (mut checks, mut failed) = (0, 0);
    for (name, flow) in &chosen {
        match verb.as_str() {
            "record" => {
                let mut rec = match recs.get(name) {
                    Some(r) if add => r.clone(),
                    _ => Recording {
                        source: version(&esl, &password).await.unwrap_or_default(),
                        ..Default::default()
                    },
                };
                for i in 0..runs {
                    let t = fidelity::run(flow, &esl, &password, &self_addr).await?;
                    if !t.errors.is_empty() {
                        anyhow::bail!("{name} run {i}: {}", t.errors.join("; "));
                    }
                    rec.merge(&t);
                }
                fidelity::save_recording(name, &rec)?;
                let variants: usize = rec.legs.values().map(|v| v.len()).sum();
                eprintln!(
                    "{name}: {} runs, {} leg classes, {variants} leg variants, {} replies",
                    rec.runs,
                    rec.legs.len(),
                    rec.replies.len()
                );
            }
            "compare" | "mock" => {
                let Some(rec) = recs.get(name) else {
                    eprintln!(
                        "{name}: no recording (run `fidelity record {name}` against a real FreeSWITCH)"
                    );
                    continue;
                };
                let t = fidelity::run(flow, &esl, &password, &self_addr).await?;
                let r = fidelity::compare(rec, &var, &t);
                checks += r.checks;
                failed += r.failures.len();
                eprintln!("{name}: {} checks, {} failed", r.checks, r.failures.len());
                for f in &r.failures {
                    eprintln!("  {f}");
                }
            }
            _ => anyhow::bail!("unknown verb {verb}\n{USAGE}"),
        }
    }
    if let Some(m) = mock {
        m.stop().await;
    }
    if verb != "record" {
        eprintln!("{} flows, {checks} checks, {failed} failed", chosen.len());
        if failed > 0 {
            std::process::exit(1);
        }
    }
    Ok(())
}

/// FreeSWITCH's `version` line.
async fn version(esl: &str, password: &str) -> anyhow::Result<String> {
    let flow = fidelity::Flow {
        about: String::new(),
        inbound: Default::default(),
        steps: vec![fidelity::Step::Api("version".into())],
        settle_ms: 0,
    };
    let t = fidelity::run(&flow, esl, password, "").await?;
    Ok(t.replies.get("0").cloned().unwrap_or_default())
}

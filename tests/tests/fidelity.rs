//! mock-relay held against real FreeSWITCH: every recorded call flow
//! (tests/fidelity/recorded, made with `fidelity record` on a real
//! FreeSWITCH) is replayed against mock-relay and compared (see
//! switchy_e2e::fidelity). Flows in tests/fidelity/known_gaps.json are
//! gaps not fixed yet: they are reported, and the test fails once one of
//! them passes (take it off the list).

use switchy_e2e::fidelity;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_relay_matches_every_recorded_freeswitch_flow() {
    let flows = fidelity::flows().unwrap();
    let recs = fidelity::recordings().unwrap();
    assert_eq!(
        flows.keys().collect::<Vec<_>>(),
        recs.keys().collect::<Vec<_>>(),
        "every flow has a recording (make one with `cargo run -p switchy-e2e --bin fidelity -- record FLOW` against a real FreeSWITCH)"
    );
    let known: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(fidelity::dir().join("known_gaps.json")).unwrap())
            .unwrap();
    let var = fidelity::Variation::learn(recs.values());
    let mock = mock_relay::MockCluster::start(fidelity::mock_config())
        .await
        .unwrap();
    let esl = mock.esl_addr(0).to_string();
    let (mut checks, mut failed) = (0, 0);
    let mut unexpected = Vec::new();
    let mut fixed = Vec::new();
    for (name, flow) in &flows {
        let t = fidelity::run(flow, &esl, "ClueCon", "127.0.0.1:5080")
            .await
            .unwrap();
        let r = fidelity::compare(&recs[name], &var, &t);
        checks += r.checks;
        failed += r.failures.len();
        eprintln!("{name}: {} checks, {} failed", r.checks, r.failures.len());
        for f in &r.failures {
            eprintln!("  {}", f.chars().take(400).collect::<String>());
        }
        match (known.contains_key(name), r.failures.is_empty()) {
            (false, false) => unexpected.push(name.clone()),
            (true, true) => fixed.push(name.clone()),
            _ => {}
        }
    }
    eprintln!(
        "{} flows, {checks} checks, {failed} failed (known gaps: {:?})",
        flows.len(),
        known.keys().collect::<Vec<_>>()
    );
    mock.stop().await;
    assert!(
        unexpected.is_empty(),
        "the mock differs from real FreeSWITCH in {unexpected:?}"
    );
    assert!(
        fixed.is_empty(),
        "{fixed:?} now pass: take them off tests/fidelity/known_gaps.json"
    );
}

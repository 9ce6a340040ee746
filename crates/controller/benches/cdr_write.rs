//! CDR rows written per second: synthetic CDRs inserted through the same
//! code path as the writer (`CdrStore::insert`, multi-row INSERTs in one
//! transaction per batch), into a fresh SQLite file (WAL) and, when
//! `SWITCHY_TEST_POSTGRES` is set, PostgreSQL.
//!
//!     cargo bench -p switchy-controller --bench cdr_write [-- ROWS]

use std::time::Instant;
use switchy_controller::cdr::{Cdr, CdrStore};

fn row(i: u64) -> Cdr {
    let t = 1_795_000_000_000_000i64 + i as i64 * 1000;
    Cdr {
        call_id: format!("{:032x}", i),
        node: format!("fs{}", i % 4 + 1),
        app: Some("Park".into()),
        hangup_cause: "NORMAL_CLEARING".into(),
        failed: false,
        caller_uuid: Some(format!("{:032x}", i)),
        caller_num: Some("1000".into()),
        callee_num: Some("2000".into()),
        caller_create: Some(t),
        caller_answer: Some(t + 1200),
        caller_req_originate: Some(t - 300),
        caller_originate: Some(t + 50),
        caller_hangup: Some(t + 9_500_000),
        job_launch: Some(t - 100),
        callee_node: Some(format!("fs{}", (i + 1) % 4 + 1)),
        callee_uuid: Some(format!("{:032x}", (i + 1) << 40)),
        callee_create: Some(t + 200),
        callee_answer: Some(t + 1000),
        callee_hangup: Some(t + 9_500_300),
        active_sessions: 15_000,
        erlangs: 7_500.0,
        originate_sent_agent: Some(t - 250),
        originate_done_agent: Some(t + 1_250),
        verdict: None,
        // A row as `run` writes it now: the operator columns filled too.
        run_id: Some("0123456789abcdef".into()),
        caller_name: Some("switchy".into()),
        context: Some("switchy".into()),
        codec: Some("PCMU".into()),
        sip_call_id: Some(format!("{:032x}@10.0.0.1", i)),
        sip_status: Some(200),
        q850: Some(16),
        caller_progress: Some(t + 800),
        duration_s: Some(9.5),
        billsec_s: Some(9.4988),
    }
}

async fn bench(url: &str, rows: u64) -> anyhow::Result<()> {
    let store = CdrStore::connect(url).await?;
    store.clear().await?;
    let batch = 4096u64;
    let data: Vec<Cdr> = (0..rows).map(row).collect();
    let t0 = Instant::now();
    for chunk in data.chunks(batch as usize) {
        store.insert(chunk).await?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let n = store.count().await?;
    anyhow::ensure!(n as u64 == rows, "wrote {n} rows, expected {rows}");
    println!(
        "{:<45} {rows} rows in {secs:.2} s = {:.0} rows/s (batches of {batch})",
        store.url,
        rows as f64 / secs
    );
    store.clear().await?;
    store.close().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let rows: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let path =
            std::env::temp_dir().join(format!("switchy-cdr-bench-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        bench(&format!("sqlite://{}", path.display()), rows).await?;
        let _ = std::fs::remove_file(&path);
        if let Ok(pg) = std::env::var("SWITCHY_TEST_POSTGRES") {
            bench(&pg, rows).await?;
        }
        Ok(())
    })
}

//! Fleet benchmarks. Run with `tests/perf/run_fleet.sh` (release build, raised file limit), or
//! `cargo bench -p tunnel-tests --bench fleet -- [exec|wordcount]`.
//!
//! - exec: `fleet exec all -- true` over 1,000 in-process peers on one `tunnel-relay`
//!   process: wall time from the request to the full reduced answer (cold: includes greeting
//!   every peer; warm: again), and the relay's RSS. Beside it, the same 1,000 `true`
//!   processes spawned locally at the same concurrency: the floor of any fleet tool here.
//!   Target: under 3 s.
//! - wordcount: word count over 200 MiB of text with 8 peers, beside the single-process
//!   baseline `tr -s ' ' '\n' | sort | uniq -c` in the same run; the answers must agree.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::sync::mpsc;
use tunnel_node::fleet::reduce::{reduce, GroupBy, Limits};
use tunnel_node::fleet::{FleetOp, FleetOptions};
use tunnel_node::mapreduce::JobSpec;
use tunnel_node::policy::Mode;
use tunnel_node::Node;
use tunnel_proto::message::{ExecCommand, ExecSpec};
use tunnel_tests::inproc::node_config;
use tunnel_tests::{memory_kib, token, RelayProc, TempDir};

const PEERS: usize = 1000;
const EXEC_TARGET: Duration = Duration::from_secs(3);
const CONCURRENCY: u32 = 64;
const WORDCOUNT_BYTES: usize = 200 << 20;
const WORDCOUNT_PEERS: usize = 8;

fn main() -> anyhow::Result<()> {
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    if want("exec") {
        rt.block_on(exec_1000())?;
    }
    if want("wordcount") {
        rt.block_on(wordcount())?;
    }
    Ok(())
}

async fn start_peers(url: &str, room: &str, t: &str, n: usize, mode: Mode) -> anyhow::Result<Vec<Node>> {
    let mut peers = Vec::with_capacity(n);
    for i in 0..n {
        let mut cfg = node_config(url, room, t, &format!("node-{i:04}"));
        cfg.policy.mode = mode;
        peers.push(Node::start(cfg).await.with_context(|| format!("starting peer {i}"))?);
    }
    Ok(peers)
}

async fn fleet_true(op: &Node) -> anyhow::Result<(Duration, usize, String)> {
    let started = Instant::now();
    let targets = op.select("all").await?;
    let spec = ExecSpec {
        request_id: 0,
        command: ExecCommand::Argv(vec!["true".into()]),
        env: vec![],
        cwd: None,
        timeout_ms: None,
        output_cap: 4096,
        stdin: false,
    };
    let (tx, mut rx) = mpsc::channel(256);
    let options = FleetOptions { concurrency: CONCURRENCY, timeout_ms: 30_000 };
    let runner = op.clone();
    let run = tokio::spawn(async move { runner.fleet(targets, FleetOp::Exec(spec), options, tx).await });
    let mut results = Vec::new();
    while let Some(r) = rx.recv().await {
        results.push(r);
    }
    run.await?;
    let red = reduce(&results, &GroupBy::Output, Limits::default());
    let took = started.elapsed();
    Ok((took, results.len(), serde_json::to_string(&red)?))
}

async fn exec_1000() -> anyhow::Result<()> {
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let setup = Instant::now();
    let peers = start_peers(&relay.url, "bench", &t, PEERS, Mode::Edit).await?;
    let op = Node::start(node_config(&relay.url, "bench", &t, "op")).await?;
    // Wait until the relay has told the operator about every peer.
    let deadline = Instant::now() + Duration::from_secs(60);
    while op.peers().len() < PEERS {
        if Instant::now() > deadline {
            bail!("the operator sees {} of {PEERS} peers", op.peers().len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("fleet exec: {PEERS} in-process peers joined in {:.1} s", setup.elapsed().as_secs_f64());
    let relay_before = memory_kib(relay.proc.pid(), "VmRSS");
    let (cold, n, reduced) = fleet_true(&op).await?;
    let (warm, n2, _) = fleet_true(&op).await?;
    let relay_after = memory_kib(relay.proc.pid(), "VmRSS");
    if n != PEERS || n2 != PEERS {
        bail!("results for {n} and {n2} of {PEERS} peers");
    }
    println!("  reduced answer ({} bytes): {reduced}", reduced.len());
    // The floor: the same 1,000 `true` processes spawned here at the same concurrency.
    let started = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..PEERS {
        if running.len() >= CONCURRENCY as usize {
            running.join_next().await;
        }
        running.spawn(async { tokio::process::Command::new("true").status().await });
    }
    while running.join_next().await.is_some() {}
    let local = started.elapsed();
    println!(
        "  cold (greets all {PEERS} peers first): {:.2} s   warm: {:.2} s   target {:.0} s: ratio {:.2} (cold) / {:.2} (warm)",
        cold.as_secs_f64(),
        warm.as_secs_f64(),
        EXEC_TARGET.as_secs_f64(),
        cold.as_secs_f64() / EXEC_TARGET.as_secs_f64(),
        warm.as_secs_f64() / EXEC_TARGET.as_secs_f64(),
    );
    println!(
        "  local spawn floor, same concurrency: {:.2} s; tunnel warm / floor = {:.1}",
        local.as_secs_f64(),
        warm.as_secs_f64() / local.as_secs_f64()
    );
    println!(
        "  relay RSS: {:.1} MiB before, {:.1} MiB after ({:.1} KiB per peer)",
        relay_before as f64 / 1024.0,
        relay_after as f64 / 1024.0,
        relay_after as f64 / PEERS as f64
    );
    op.shutdown().await;
    for p in peers {
        p.shutdown().await;
    }
    Ok(())
}

/// About `bytes` of words from a vocabulary of 5,000, deterministic.
fn words(bytes: usize) -> Vec<u8> {
    let vocab: Vec<String> = (0..5000).map(|i| format!("w{}x{}", i * 7919 % 10007, i % 13)).collect();
    let mut out = Vec::with_capacity(bytes + 64);
    let mut state: u64 = 42;
    let mut on_line = 0;
    while out.len() < bytes {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let w = &vocab[((state >> 33) % vocab.len() as u64) as usize];
        out.extend_from_slice(w.as_bytes());
        on_line += 1;
        if on_line == 12 {
            out.push(b'\n');
            on_line = 0;
        } else {
            out.push(b' ');
        }
    }
    out.push(b'\n');
    out
}

fn counts(text: &str, count_first: bool) -> anyhow::Result<HashMap<String, u64>> {
    let mut map = HashMap::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (a, b) = (parts.next().context("empty line")?, parts.next().context("one field")?);
        let (word, n) = if count_first { (b, a) } else { (a, b) };
        map.insert(word.to_owned(), n.parse()?);
    }
    Ok(map)
}

async fn wordcount() -> anyhow::Result<()> {
    let dir = TempDir::new("wordcount");
    let input = words(WORDCOUNT_BYTES);
    let path = dir.path().join("words.txt");
    std::fs::write(&path, &input)?;

    let started = Instant::now();
    let baseline = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("tr -s ' ' '\\n' < {} | sort | uniq -c", path.display()))
        .output()
        .await?;
    let baseline_time = started.elapsed();
    if !baseline.status.success() {
        bail!("baseline failed: {}", String::from_utf8_lossy(&baseline.stderr));
    }

    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let peers = start_peers(&relay.url, "wc", &t, WORDCOUNT_PEERS, Mode::Bypass).await?;
    let mut cfg = node_config(&relay.url, "wc", &t, "op");
    cfg.policy.mode = Mode::Bypass; // the reduce runs here
    let op = Node::start(cfg).await?;
    let targets = op.select("all").await?;
    if targets.len() != WORDCOUNT_PEERS {
        bail!("{} targets", targets.len());
    }
    let job = JobSpec {
        map: "LC_ALL=C awk '{for (i = 1; i <= NF; i++) c[$i]++} END {for (w in c) print w \"\\t\" c[w]}'".into(),
        reduce: "LC_ALL=C awk -F '\\t' '{c[$1] += $2} END {for (w in c) print w \"\\t\" c[w]}'".into(),
        partitions: WORDCOUNT_PEERS as u32,
        reducers: 1,
        retries: 1,
        timeout_ms: 600_000,
        output_cap: u64::MAX,
        caller_reduces: false,
    };
    let (tx, _progress) = mpsc::channel(1024);
    let started = Instant::now();
    let (out, report) = op.mapreduce(targets, &job, input.into(), tx).await?;
    let tunnel_time = started.elapsed();

    let ours = counts(&String::from_utf8(out)?, false)?;
    let theirs = counts(&String::from_utf8(baseline.stdout)?, true)?;
    if ours != theirs {
        bail!("the answers differ: {} words vs {} in the baseline", ours.len(), theirs.len());
    }
    println!(
        "wordcount: {} MiB, {} distinct words, {WORDCOUNT_PEERS} peers (map {} ms, reduce {} ms)",
        WORDCOUNT_BYTES >> 20,
        ours.len(),
        report.map_ms,
        report.reduce_ms
    );
    println!(
        "  tunnel mapreduce: {:.2} s   baseline `tr | sort | uniq -c`: {:.2} s   ratio {:.2} (< 1 is faster)",
        tunnel_time.as_secs_f64(),
        baseline_time.as_secs_f64(),
        tunnel_time.as_secs_f64() / baseline_time.as_secs_f64()
    );
    op.shutdown().await;
    for p in peers {
        p.shutdown().await;
    }
    Ok(())
}

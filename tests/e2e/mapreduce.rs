//! `tunnel mapreduce` between real node processes on a real relay: word count equal to a
//! local count with one reducer and with four, the same answer on every run, a peer killed
//! mid-job whose partitions are retried elsewhere, and a clear report when retries run out.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use tunnel_tests::{run_async, token, NodeProc, RelayProc, TempDir};

/// Word count as `word<TAB>count` lines (the map and the reducers speak the same format).
const MAP: &str = "tr -s ' ' '\\n' | grep -v '^$' | sort | uniq -c | awk '{print $2 \"\\t\" $1}'";
const REDUCE: &str = "awk -F '\\t' '{c[$1] += $2} END {for (w in c) print w \"\\t\" c[w]}' | sort";

struct Mesh {
    _relay: RelayProc,
    op: NodeProc,
    workers: Vec<NodeProc>,
    dir: TempDir,
}

/// A relay, the operator (plan: with one reducer the reduce runs in the CLI, not on it) and
/// `n` bypass workers; `worker-1` gets `ROLE=victim` in its environment.
fn mesh(n: usize) -> anyhow::Result<Mesh> {
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let env = |role: &'static str| vec![("TUNNEL_MODE", "bypass"), ("LC_ALL", "C"), ("ROLE", role)];
    let op = NodeProc::start_with(&relay.url, "mr", &t, "op", &[("TUNNEL_MODE", "plan"), ("ROLE", "op")])?;
    let workers: Vec<NodeProc> = (1..=n)
        .map(|i| {
            NodeProc::start_with(
                &relay.url,
                "mr",
                &t,
                &format!("worker-{i}"),
                &env(if i == 1 { "victim" } else { "worker" }),
            )
        })
        .collect::<anyhow::Result<_>>()?;
    let names: Vec<String> = workers.iter().map(|w| w.name.clone()).collect();
    op.wait_for_peers(&names.iter().map(String::as_str).collect::<Vec<_>>(), Duration::from_secs(15))?;
    Ok(Mesh { _relay: relay, op, workers, dir: TempDir::new("mapreduce") })
}

/// A text of `lines` lines of words from a small vocabulary (so counts are interesting).
fn text(lines: usize, seed: u64) -> String {
    let vocab = ["alpha", "beta", "gamma", "delta", "tunnel", "mesh", "peer", "relay", "noise", "quic", "fleet", "x"];
    let mut state = seed;
    let mut out = String::new();
    for _ in 0..lines {
        let words = 1 + (state % 9) as usize;
        for w in 0..words {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            if w > 0 {
                out.push(' ');
            }
            out.push_str(vocab[(state >> 33) as usize % vocab.len()]);
            if (state >> 20).is_multiple_of(7) {
                out.push_str(&format!("{}", (state >> 40) % 50));
            }
        }
        out.push('\n');
    }
    out
}

fn local_count(text: &str) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for w in text.split_whitespace() {
        *counts.entry(w.to_owned()).or_insert(0) += 1;
    }
    counts
}

fn parse_counts(out: &str) -> HashMap<String, u64> {
    out.lines()
        .map(|l| {
            let (w, c) = l.split_once('\t').unwrap_or_else(|| panic!("not word<TAB>count: {l:?}"));
            (w.to_owned(), c.parse().unwrap())
        })
        .collect()
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

fn mapreduce(op: &NodeProc, args: &[&str]) -> (Option<i32>, String, String) {
    let o = op.cli(&[&["mapreduce"], args].concat());
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn word_count_matches_a_local_count_with_one_and_four_reducers() -> anyhow::Result<()> {
    let m = mesh(4)?;
    let input = text(20_000, 7);
    let path = write(m.dir.path(), "words.txt", &input);
    let expected = local_count(&input);
    let base = ["all", "--input", &path, "--map", MAP, "--reduce", REDUCE, "--partitions", "8"];
    let (code, one, err) = mapreduce(&m.op, &base);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(parse_counts(&one), expected);
    let (code, four, err) = mapreduce(&m.op, &[&base[..], &["--reducers", "4"]].concat());
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(parse_counts(&four), expected);
    // Deterministic: the same bytes again, whichever peers ran which partition.
    let (_, again, _) = mapreduce(&m.op, &[&base[..], &["--reducers", "4"]].concat());
    assert_eq!(four, again);
    // --json: per-partition statistics that add up.
    let (code, json, err) = mapreduce(&m.op, &[&base[..], &["--json"]].concat());
    assert_eq!(code, Some(0), "{err}");
    let doc: serde_json::Value = serde_json::from_str(&json)?;
    let parts = doc["report"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 8);
    let bytes: u64 = parts.iter().map(|p| p["input_bytes"].as_u64().unwrap()).sum();
    let lines: u64 = parts.iter().map(|p| p["lines"].as_u64().unwrap()).sum();
    assert_eq!((bytes, lines), (input.len() as u64, 20_000));
    assert_eq!(doc["output"].as_str().unwrap(), one);
    // The one reduce ran in the CLI's process (no ROLE there; the plan-mode node has one and
    // would refuse a shell), and its failure is the command's.
    let reduce = "cat > /dev/null; echo role=${ROLE:-none}";
    let (code, out, err) = mapreduce(&m.op, &["all", "--input", &path, "--map", "cat", "--reduce", reduce]);
    assert_eq!((code, out.as_str()), (Some(0), "role=none\n"), "{err}");
    let (code, _, err) = mapreduce(&m.op, &["all", "--input", &path, "--map", "cat", "--reduce", "exit 3"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("the reduce (exit 3) failed here"), "{err}");
    // The input may also be a file on a peer, read through that peer's policy.
    let remote = format!("worker-2:{path}");
    let (code, out, err) =
        mapreduce(&m.op, &["tag:none-such,all", "--input", &remote, "--map", MAP, "--reduce", REDUCE]);
    assert_eq!(code, Some(1), "a target term that selects nothing is an error: {out}");
    assert!(err.contains("\"tag:none-such\" selects no peers"), "{err}");
    let (code, out, err) = mapreduce(&m.op, &["all", "--input", &remote, "--map", MAP, "--reduce", REDUCE]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(parse_counts(&out), expected);
    Ok(())
}

#[test]
fn a_peer_killed_mid_job_has_its_partition_retried_elsewhere() -> anyhow::Result<()> {
    let mut m = mesh(4)?;
    let input = text(8_000, 11);
    let path = write(m.dir.path(), "words.txt", &input);
    let mark = m.dir.path().join("victim-started");
    let map = format!("if [ \"$ROLE\" = victim ]; then touch {}; sleep 60; fi; {MAP}", mark.display());
    let (victim, op) = (&mut m.workers[0], &m.op);
    let (code, json, err) = std::thread::scope(|s| {
        let job = s.spawn(|| {
            mapreduce(op, &["all", "--input", &path, "--map", &map, "--reduce", REDUCE, "--partitions", "8", "--json"])
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !mark.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(mark.exists(), "the victim never started a partition");
        victim.proc.kill();
        job.join().expect("job thread")
    });
    assert_eq!(code, Some(0), "{err}");
    let doc: serde_json::Value = serde_json::from_str(&json)?;
    assert_eq!(parse_counts(doc["output"].as_str().unwrap()), local_count(&input));
    let parts = doc["report"]["partitions"].as_array().unwrap();
    let retried: Vec<&serde_json::Value> = parts.iter().filter(|p| p["attempts"].as_u64() > Some(1)).collect();
    assert!(!retried.is_empty(), "{doc}");
    for p in &retried {
        assert_ne!(p["target"], "worker-1", "{p}");
        assert!(p["failures"][0].as_str().unwrap().starts_with("on worker-1: "), "{p}");
    }
    assert!(parts.iter().all(|p| p["target"] != "worker-1"), "the victim finished nothing: {doc}");
    Ok(())
}

#[test]
fn a_partition_out_of_retries_fails_the_job_naming_it_and_why() -> anyhow::Result<()> {
    let m = mesh(3)?;
    let mut input = text(3_000, 5);
    input.push_str("POISON here\n");
    input.push_str(&text(3_000, 6));
    let path = write(m.dir.path(), "poisoned.txt", &input);
    let map = "if grep -q POISON; then echo poisoned input >&2; exit 3; fi";
    let (code, out, err) = mapreduce(
        &m.op,
        &["all", "--input", &path, "--map", map, "--reduce", "cat", "--partitions", "6", "--retries", "1"],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("mapreduce failed: partition "), "{err}");
    assert!(err.contains("of 6 (lines "), "{err}");
    assert!(err.contains("failed 2 times, out of retries"), "{err}");
    assert_eq!(err.matches("exit code 3: poisoned input").count(), 2, "{err}");
    // Bad jobs are refused before anything runs.
    for (args, needle) in [
        (vec!["all", "--input", &path, "--map", " ", "--reduce", "cat"], "map command is empty"),
        (vec!["all", "--input", "/nonexistent/x", "--map", "cat", "--reduce", "cat"], "cannot open the input"),
        (vec!["all", "--input", &path, "--map", "cat", "--reduce", "cat", "--reducers", "0"], "--reducers"),
        (vec!["all", "--input", &path, "--map", "cat", "--reduce", "cat", "--reducers", "99999"], "from 1 to 1024"),
        (
            vec!["all", "--input", &path, "--map", "cat", "--reduce", "cat", "--partitions", "4000000000"],
            "at most 100000",
        ),
        (vec!["nobody", "--input", &path, "--map", "cat", "--reduce", "cat"], "no peer named \"nobody\""),
    ] {
        let (code, _, err) = mapreduce(&m.op, &args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    Ok(())
}

/// The job's engine without the CLI: in-process nodes on one relay, R = 2.
#[test]
fn in_process_job_with_two_reducers() -> anyhow::Result<()> {
    run_async(Duration::from_secs(60), async {
        let relay = tunnel_relay::Relay::bind("127.0.0.1:0", Default::default()).await?;
        let t = token();
        let op = tunnel_node::Node::start(tunnel_tests::inproc::node_config(&relay.url(), "r", &t, "op")).await?;
        let mut workers = Vec::new();
        for i in 0..3 {
            let mut cfg = tunnel_tests::inproc::node_config(&relay.url(), "r", &t, &format!("w{i}"));
            cfg.policy.mode = tunnel_node::policy::Mode::Bypass;
            workers.push(tunnel_node::Node::start(cfg).await?);
            tunnel_tests::inproc::wait_named(&op, &format!("w{i}"), Duration::from_secs(10)).await?;
        }
        let job = tunnel_node::mapreduce::JobSpec {
            map: MAP.into(),
            reduce: REDUCE.into(),
            partitions: 5,
            reducers: 2,
            retries: 0,
            timeout_ms: 30_000,
            output_cap: u64::MAX,
            caller_reduces: false,
        };
        let input = text(2_000, 3);
        let (tx, mut progress) = tokio::sync::mpsc::channel(1024);
        let targets = op.select("all").await?;
        let (out, report) = op.mapreduce(targets, &job, input.clone().into(), tx).await?;
        let out = String::from_utf8(out)?;
        // `sort` without LC_ALL=C here: compare as counts, not bytes.
        assert_eq!(parse_counts(&out), local_count(&input));
        assert_eq!((report.partitions.len(), report.reducers.len()), (5, 2));
        let mut last = None;
        while let Ok(p) = progress.try_recv() {
            last = Some(p);
        }
        let last = last.expect("progress was reported");
        assert_eq!((last.phase, last.done, last.total), (tunnel_node::mapreduce::Phase::Reduce, 2, 2));
        op.shutdown().await;
        for w in workers {
            w.shutdown().await;
        }
        Ok(())
    })
}

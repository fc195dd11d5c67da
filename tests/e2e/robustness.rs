//! Nothing hangs, nothing is lost: calls to a peer that cannot be reached wait a bounded time
//! and say why; nodes are back in the room within seconds of their relay's return.

use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use tunnel_tests::{token, NodeProc, RelayProc};

/// Relay-only nodes: a direct path would (rightly) keep them talking through a relay outage.
const RELAY_ONLY: &[(&str, &str)] = &[("TUNNEL_DIRECT", "relay-only")];

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs `tunnel ARGS` on `node`; how long it took and what it said.
fn timed(node: &NodeProc, args: &[&str]) -> (Duration, Output) {
    let started = Instant::now();
    let out = node.cli(args);
    (started.elapsed(), out)
}

/// Waits until every node says its relay is connected; how long that took.
fn all_connected(nodes: &[&NodeProc], within: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let connected = nodes.iter().all(|n| {
            let out = n.cli(&["status", "--json"]);
            serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .is_ok_and(|s| s["relay"]["connected"].as_bool() == Some(true))
        });
        if connected {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            bail!("not every node reconnected within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn calls_wait_a_bounded_time_say_why_and_nodes_rejoin_within_seconds() -> anyhow::Result<()> {
    let mut relay = RelayProc::start("127.0.0.1:0", &[])?;
    let addr = format!("127.0.0.1:{}", relay.port());
    let t = token();
    let a = NodeProc::start_with(&relay.url, "r", &t, "a", RELAY_ONLY)?;
    let mut b = NodeProc::start_with(&relay.url, "r", &t, "b", RELAY_ONLY)?;
    a.wait_for_peers(&["b"], Duration::from_secs(10))?;

    // A name nobody in the room ever had fails at once: waiting would not fix a typo.
    let (took, out) = timed(&a, &["exec", "no-such-peer", "--", "true"]);
    ensure!(!out.status.success() && text(&out).contains("no peer \"no-such-peer\""), "{}", text(&out));
    ensure!(took < Duration::from_secs(6), "a typo took {took:?}");

    // The relay dies. Calls wait their connect timeout, then name the reason.
    relay.proc.kill();
    // Long enough that the old 30 s backoff would have grown past 5 s.
    std::thread::sleep(Duration::from_secs(8));
    let (took, out) = timed(&a, &["--connect-timeout", "2", "exec", "b", "--", "true"]);
    ensure!(!out.status.success(), "exec succeeded with the relay down");
    ensure!(text(&out).contains("relay unreachable since"), "{}", text(&out));
    ensure!(text(&out).contains("waited 2 s"), "{}", text(&out));
    ensure!(took >= Duration::from_secs(2) && took < Duration::from_secs(6), "gave up after {took:?}");

    // A call issued while the relay is down completes once it is back within the bound.
    let waiting = {
        let dir = a.dir.path().to_owned();
        std::thread::spawn(move || tunnel_tests::cli_in(&dir, &["exec", "b", "--", "echo", "waited"]))
    };
    std::thread::sleep(Duration::from_secs(1));
    relay = RelayProc::start(&addr, &[])?;
    let back = all_connected(&[&a, &b], Duration::from_secs(20))?;
    eprintln!("every node back in the room {:.2} s after the relay", back.as_secs_f64());
    ensure!(back < Duration::from_secs(5), "nodes took {back:?} to rejoin");
    let out = waiting.join().expect("exec thread");
    ensure!(out.status.success() && String::from_utf8_lossy(&out.stdout) == "waited\n", "{}", text(&out));

    // A peer that left is named as such, with when.
    b.proc.terminate(Duration::from_secs(10))?;
    let (took, out) = timed(&a, &["--connect-timeout", "1", "exec", "b", "--", "true"]);
    ensure!(text(&out).contains("peer b left the room") && text(&out).contains("s ago"), "{}", text(&out));
    ensure!(took < Duration::from_secs(5), "gave up after {took:?}");
    // A call waiting for it ends when it returns (same key, same state): it runs there, or,
    // if it raced the restart, fails saying so. It is never sent again to the new life of
    // the peer, which could run a command twice.
    let waiting = {
        let dir = a.dir.path().to_owned();
        std::thread::spawn(move || tunnel_tests::cli_in(&dir, &["exec", "b", "--", "echo", "back"]))
    };
    b = NodeProc::restart(b, &relay.url, "r", &t, RELAY_ONLY)?;
    let out = waiting.join().expect("exec thread");
    let raced = text(&out).contains("left and rejoined") || text(&out).contains("restarted");
    ensure!((out.status.success() && String::from_utf8_lossy(&out.stdout) == "back\n") || raced, "{}", text(&out));
    let out = a.cli(&["exec", "b", "--", "echo", "again"]);
    ensure!(out.status.success() && String::from_utf8_lossy(&out.stdout) == "again\n", "{}", text(&out));
    drop(b);
    Ok(())
}

/// How long the chaos runs, and its bounds.
const CHAOS_FOR: Duration = Duration::from_secs(75);
const PEERS: usize = 10;
const FILE_BYTES: usize = 50 << 20;
/// The longest any one call may take, success or failure: its connect timeout (10 s, given
/// below) plus the work itself.
const CALL_BOUND: Duration = Duration::from_secs(45);

fn sha256_file(path: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hash)?;
    Ok(hash.finalize().into())
}

/// What the workloads saw, for the assertions and the figures.
#[derive(Default)]
struct Tally {
    calls: u64,
    ok: u64,
    clean_failures: u64,
    slowest: Duration,
    problems: Vec<String>,
    /// Per kind of call ("fleet exec", "cp up", ...): succeeded, failed.
    kinds: std::collections::BTreeMap<String, (u64, u64)>,
}

impl Tally {
    fn call(&mut self, took: Duration, ok: bool, what: &str, out: &Output) {
        self.calls += 1;
        let kind = what.split(' ').take(2).collect::<Vec<_>>().join(" ");
        let counts = self.kinds.entry(kind).or_default();
        if ok {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
        self.slowest = self.slowest.max(took);
        if ok {
            self.ok += 1;
        } else if text(out).trim().is_empty() {
            self.problems.push(format!("{what} failed without a reason"));
        } else {
            self.clean_failures += 1;
        }
        if took > CALL_BOUND {
            self.problems.push(format!("{what} took {took:?}: {}", text(out)));
        }
    }
}

/// 10 relay-only peers; fleet exec loops, 50 MB copies and a forward transfer run while the
/// relay is SIGKILLed and restarted 5 times and 2 peers restart. Nothing runs twice, no
/// output is wrong, every call ends within its bound, no partial file appears under a final
/// name, and every peer is back in the room within 5 s of the relay's return.
#[test]
fn chaos_relay_kills_and_peer_restarts_lose_nothing() -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    use std::sync::{Arc, Mutex};

    let mut relay = RelayProc::start("127.0.0.1:0", &[])?;
    let addr = format!("127.0.0.1:{}", relay.port());
    let url = relay.url.clone();
    let t = token();
    let env: &[(&str, &str)] = &[("TUNNEL_DIRECT", "relay-only"), ("TUNNEL_MODE", "edit")];
    let mut peers: Vec<Option<NodeProc>> = (0..PEERS)
        .map(|i| NodeProc::start_with(&url, "chaos", &t, &format!("p{i}"), env).map(Some))
        .collect::<Result<_, _>>()?;
    let names: Vec<String> = (1..PEERS).map(|i| format!("p{i}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let op_dir = peers[0].as_ref().expect("operator").dir.path().to_owned();
    peers[0].as_ref().expect("operator").wait_for_peers(&name_refs, Duration::from_secs(20))?;
    let work = tunnel_tests::TempDir::new("chaos-work");
    let (runs, files) = (work.path().join("runs"), work.path().join("files"));
    std::fs::create_dir_all(&runs)?;
    std::fs::create_dir_all(&files)?;
    let source = work.path().join("source.bin");
    let mut seed = 7u64;
    let mut content = vec![0u8; FILE_BYTES];
    tunnel_tests::fill(&mut seed, &mut content);
    std::fs::write(&source, &content)?;
    let source_sha = sha256_file(&source)?;
    drop(content);
    let servers = tunnel_tests::tcp::Servers::new();
    let echo = servers.echo();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let cli = move |dir: &std::path::Path, args: &[&str]| {
        let mut all = vec!["--connect-timeout", "10"];
        all.extend_from_slice(args);
        let started = Instant::now();
        let out = tunnel_tests::cli_in(dir, &all);
        (started.elapsed(), out)
    };
    let mut workers = Vec::new();

    // Fleet exec: each call appends one line per peer that runs it to a file of its own.
    for w in 0..2 {
        let (stop, tally, dir, runs) = (stop.clone(), tally.clone(), op_dir.clone(), runs.clone());
        workers.push(std::thread::spawn(move || {
            let mut call = 0;
            while !stop.load(Relaxed) {
                call += 1;
                let id = format!("w{w}-c{call}");
                let script = format!("echo ran >> {}/{id}; echo {id}", runs.display());
                let (took, out) = cli(&dir, &["fleet", "exec", "all", "--json", "--timeout", "20", "--shell", &script]);
                let doc: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
                let mut tally = tally.lock().expect("tally");
                tally.call(took, doc.is_some(), &format!("fleet exec {id}"), &out);
                let Some(doc) = doc else { continue };
                let ran = std::fs::read_to_string(runs.join(&id)).unwrap_or_default().lines().count();
                let results = doc["targets"].as_array().cloned().unwrap_or_default();
                let ok = results.iter().filter(|r| r["status"] == "ok").count();
                for r in results.iter().filter(|r| r["status"] == "ok") {
                    if r["stdout"].as_str() != Some(&format!("{id}\n")) {
                        tally.problems.push(format!("{id}: wrong output from {}: {}", r["name"], r["stdout"]));
                    }
                }
                // A target that did not answer may still have run it once; none runs it twice.
                if ran < ok || ran > results.len() {
                    tally.problems.push(format!("{id}: ran {ran} times for {ok} ok of {} targets", results.len()));
                }
            }
        }));
    }

    // 50 MB copies both ways, checked by SHA-256; a failed copy leaves no partial file.
    {
        let (stop, tally, dir, files, source) =
            (stop.clone(), tally.clone(), op_dir.clone(), files.clone(), source.clone());
        workers.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Relaxed) {
                n += 1;
                let peer = format!("p{}", 1 + n % (PEERS - 1));
                let remote = files.join(format!("up-{n}.bin"));
                let (took, out) =
                    cli(&dir, &["cp", &source.display().to_string(), &format!("{peer}:{}", remote.display())]);
                let ok = out.status.success();
                let mut t = tally.lock().expect("tally");
                t.call(took, ok, &format!("cp up {n}"), &out);
                if remote.exists() && sha256_file(&remote).ok() != Some(source_sha) {
                    t.problems.push(format!("cp up {n}: a wrong or partial file under its final name"));
                }
                // (A copy cut after the file was in place may say it failed: nothing is lost.)
                if ok && !remote.exists() {
                    t.problems.push(format!("cp up {n}: said it copied, but there is no file"));
                }
                drop(t);
                if !ok {
                    continue;
                }
                let back = files.join(format!("down-{n}.bin"));
                let (took, out) =
                    cli(&dir, &["cp", &format!("{peer}:{}", remote.display()), &back.display().to_string()]);
                let ok = out.status.success();
                let mut t = tally.lock().expect("tally");
                t.call(took, ok, &format!("cp down {n}"), &out);
                if back.exists() && sha256_file(&back).ok() != Some(source_sha) {
                    t.problems.push(format!("cp down {n}: a wrong or partial file under its final name"));
                }
                let _ = std::fs::remove_file(&remote);
                let _ = std::fs::remove_file(&back);
            }
        }));
    }

    // A forward through p5 to a local echo: bytes come back intact, or the transfer fails.
    let forward = {
        let out = tunnel_tests::cli_in(&op_dir, &["forward", "p5", "-L", &format!("0:{echo}"), "--json"]);
        ensure!(out.status.success(), "forward: {}", text(&out));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        doc[0]["listen"].as_str().expect("listen").parse::<std::net::SocketAddr>()?
    };
    {
        let (stop, tally) = (stop.clone(), tally.clone());
        workers.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Relaxed) {
                n += 1;
                let started = Instant::now();
                let result = tunnel_tests::tcp::echo_round_trip(forward, 4 << 20, n);
                let took = started.elapsed();
                let mut tally = tally.lock().expect("tally");
                tally.calls += 1;
                tally.slowest = tally.slowest.max(took);
                let intact = matches!(result, Ok((sent, got)) if sent == got);
                let counts = tally.kinds.entry("forward 4MiB".into()).or_default();
                if intact {
                    counts.0 += 1;
                } else {
                    // Cut by an outage: the connection ends; what came back is a prefix.
                    counts.1 += 1;
                }
                if intact {
                    tally.ok += 1;
                } else {
                    tally.clean_failures += 1;
                }
                if took > CALL_BOUND {
                    tally.problems.push(format!("forward transfer {n} took {took:?}"));
                }
            }
        }));
    }

    // The chaos: 5 relay kills, 2 peer restarts, at pseudo-random moments.
    let mut rejoin = Vec::new();
    let started = Instant::now();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = |lo: u64, hi: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        Duration::from_millis(lo + rng % (hi - lo))
    };
    for round in 0..5 {
        std::thread::sleep(next(4_000, 9_000));
        relay.proc.kill();
        std::thread::sleep(next(500, 4_000));
        relay = RelayProc::start(&addr, &[])?;
        // (A foreground `tunnel run` refuses to start without its relay: restart with it up.)
        if round == 1 || round == 3 {
            let i = if round == 1 { 3 } else { 7 };
            let node = peers[i].take().expect("peer");
            peers[i] = Some(node.restart(&url, "chaos", &t, env)?);
        }
        let live: Vec<&NodeProc> = peers.iter().flatten().collect();
        rejoin.push(all_connected(&live, Duration::from_secs(30))?);
    }
    let remaining = CHAOS_FOR.saturating_sub(started.elapsed());
    std::thread::sleep(remaining.max(Duration::from_secs(5)));
    stop.store(true, Relaxed);
    for w in workers {
        w.join().expect("worker");
    }

    let tally = tally.lock().expect("tally");
    let worst = rejoin.iter().max().copied().unwrap_or_default();
    eprintln!(
        "chaos: {} calls ({:?} ok/failed), {} ok, {} failed with a reason, slowest {:.1} s; rejoin after each relay return: {:?} (worst {:.2} s)",
        tally.calls,
        tally.kinds,
        tally.ok,
        tally.clean_failures,
        tally.slowest.as_secs_f64(),
        rejoin.iter().map(|d| format!("{:.2}", d.as_secs_f64())).collect::<Vec<_>>(),
        worst.as_secs_f64()
    );
    ensure!(tally.problems.is_empty(), "{} problems:\n{}", tally.problems.len(), tally.problems.join("\n"));
    ensure!(worst < Duration::from_secs(5), "a peer took {worst:?} to rejoin");
    ensure!(tally.ok > tally.calls / 2, "most calls should succeed: {} of {}", tally.ok, tally.calls);
    Ok(())
}

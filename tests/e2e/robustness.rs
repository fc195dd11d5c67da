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
    // And a call waiting for it goes through when it returns (same key, same state).
    let waiting = {
        let dir = a.dir.path().to_owned();
        std::thread::spawn(move || tunnel_tests::cli_in(&dir, &["exec", "b", "--", "echo", "back"]))
    };
    b = NodeProc::restart(b, &relay.url, "r", &t, RELAY_ONLY)?;
    let out = waiting.join().expect("exec thread");
    ensure!(out.status.success() && String::from_utf8_lossy(&out.stdout) == "back\n", "{}", text(&out));
    drop(b);
    Ok(())
}

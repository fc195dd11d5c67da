//! `tunnel run` / `tunnel peers` / `tunnel ping` / `tunnel id` as real processes around a
//! real `tunnel-relay`, plus the one-line errors users see when something is wrong.

use std::time::{Duration, Instant};

use tunnel_tests::{cli_in, token, NodeProc, RelayProc, TempDir};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn two_peers_see_each_other_and_ping() -> anyhow::Result<()> {
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let token = token();
    let a = NodeProc::start(&relay.url, "ops", &token, "web-1", "web,prod")?;
    let b = NodeProc::start(&relay.url, "ops", &token, "db-1", "db")?;

    let seen_by_a = a.wait_for_peers(&["db-1"], Duration::from_secs(10))?;
    let seen_by_b = b.wait_for_peers(&["web-1"], Duration::from_secs(10))?;
    let db = &seen_by_a[0];
    for key in ["name", "id", "tags", "os", "path", "rtt_ms"] {
        assert!(db.get(key).is_some(), "peers --json lacks {key}: {db}");
    }
    assert_eq!(db["tags"], serde_json::json!(["db"]));
    // The path may already be direct (the hello made a session, and with it an offer); the
    // address is there exactly when it is.
    match db["path"].as_str() {
        Some("direct") => assert!(db["addr"].as_str().is_some_and(|a| a.contains(':')), "{db}"),
        Some("relay") => assert!(db.get("addr").is_none(), "{db}"),
        other => panic!("path {other:?}: {db}"),
    }
    assert_eq!(db["os"]["family"], std::env::consts::OS);
    assert_eq!(seen_by_b[0]["tags"], serde_json::json!(["web", "prod"]));

    // The control socket is private to the node's user.
    let socket = a.dir.path().join("run/tunnel.sock");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket)?.permissions()) & 0o777;
    assert_eq!(mode, 0o600, "control socket mode");

    // Ids agree: what b's id command prints is what a lists.
    let b_id = String::from_utf8(b.cli(&["id"]).stdout)?.trim().to_owned();
    assert_eq!(db["id"], b_id.as_str());
    assert_eq!(b_id.len(), 52);

    let ping = a.cli(&["ping", "db-1", "-c", "2"]);
    assert!(ping.status.success(), "{}", stderr(&ping));
    let text = String::from_utf8(ping.stdout)?;
    assert_eq!(text.matches("reply from db-1").count(), 2, "{text}");
    // By id prefix too.
    assert!(a.cli(&["ping", &b_id[..10], "-c", "1"]).status.success());

    // The table form lists the peer with its tags, and (both on this machine) a direct path
    // with its address.
    let deadline = Instant::now() + Duration::from_secs(5);
    let table = loop {
        let table = String::from_utf8(a.cli(&["peers"]).stdout)?;
        if table.contains("direct ") || Instant::now() > deadline {
            break table;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(table.contains("db-1") && table.contains("direct "), "{table}");

    // Clean leave on SIGTERM: exit code 0, and the other side sees it go.
    let mut b = b;
    assert_eq!(b.proc.terminate(Duration::from_secs(10))?, Some(0));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !a.peers()?.is_empty() {
        assert!(Instant::now() < deadline, "a still lists b after it left");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn wrong_token_sees_nobody_and_says_why() -> anyhow::Result<()> {
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let good = token();
    let a = NodeProc::start(&relay.url, "ops", &good, "a", "")?;
    let b = NodeProc::start(&relay.url, "ops", &good, "b", "")?;
    let intruder = NodeProc::start(&relay.url, "ops", &token(), "intruder", "")?;
    a.wait_for_peers(&["b"], Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_millis(300));
    assert!(intruder.peers()?.is_empty(), "a node with another token must not see the room");
    assert!(!a.peers()?.iter().any(|p| p["name"] == "intruder"));
    let out = intruder.cli(&["ping", "a", "-c", "1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("same relay, room name and room token"), "{}", stderr(&out));
    drop(b);
    Ok(())
}

/// From a relay restart until `from` pings `to` through the new relay: must be under 5 s.
fn back_within_five_seconds(from: &NodeProc, to: &str, restarted: Instant) -> anyhow::Result<Duration> {
    loop {
        if from.cli(&["ping", to, "-c", "1"]).status.success() {
            let took = restarted.elapsed();
            assert!(took < Duration::from_secs(5), "{} reached {to} again only after {took:?}", from.name);
            return Ok(took);
        }
        assert!(restarted.elapsed() < Duration::from_secs(5), "{} cannot reach {to} 5 s after the restart", from.name);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn relay_restart_peers_reconnect_within_five_seconds() -> anyhow::Result<()> {
    let mut relay = RelayProc::start("127.0.0.1:0", &[])?;
    let addr = format!("127.0.0.1:{}", relay.port());
    let token = token();
    let a = NodeProc::start(&relay.url, "ops", &token, "a", "")?;
    let b = NodeProc::start(&relay.url, "ops", &token, "b", "")?;
    a.wait_for_peers(&["b"], Duration::from_secs(10))?;

    // Graceful: the relay says Restarting, peers come back as soon as it is up again.
    assert_eq!(relay.proc.terminate(Duration::from_secs(10))?, Some(0));
    let restarted = Instant::now();
    relay = RelayProc::start(&addr, &[])?;
    let took_a = back_within_five_seconds(&a, "b", restarted)?;
    let took_b = back_within_five_seconds(&b, "a", restarted)?;
    eprintln!("after a graceful restart: a->b in {took_a:?}, b->a in {took_b:?}");

    // Crash: no goodbye; the reconnect backoff still brings them back.
    relay.proc.kill();
    std::thread::sleep(Duration::from_millis(300));
    let restarted = Instant::now();
    let _relay = RelayProc::start(&addr, &[])?;
    let took_a = back_within_five_seconds(&a, "b", restarted)?;
    let took_b = back_within_five_seconds(&b, "a", restarted)?;
    eprintln!("after a crash: a->b in {took_a:?}, b->a in {took_b:?}");
    Ok(())
}

/// Runs `tunnel run` expecting it to fail at once; returns its stderr.
fn run_fails(dir: &TempDir, args: &[&str]) -> String {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    let out = cli_in(dir.path(), &all);
    assert_eq!(out.status.code(), Some(1), "expected failure for {args:?}");
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "one clear line, got: {err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{err}");
    err
}

#[test]
fn user_errors_are_one_clear_line() -> anyhow::Result<()> {
    let dir = TempDir::new("errors");
    let t = token();
    let err = run_fails(&dir, &["--relay", "http://127.0.0.1:1", "--room", "r", "--token", &t]);
    assert!(err.contains("bad relay URL") && err.contains("ws://"), "{err}");
    let err = run_fails(&dir, &["--relay", "ws://127.0.0.1:1", "--room", "r", "--token", &t]);
    assert!(err.contains("unreachable"), "{err}");
    let err = run_fails(&dir, &["--relay", "ws://127.0.0.1:1", "--room", "r", "--token", "short"]);
    assert!(err.contains("too short") && err.contains("tunnel token"), "{err}");
    let err = run_fails(&dir, &["--room", "r", "--token", &t]);
    assert!(err.contains("--relay") && err.contains("TUNNEL_RELAY"), "{err}");

    // A key file others can read is refused before anything else happens.
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    assert!(cli_in(dir.path(), &["id"]).status.success(), "id creates the key");
    let key = dir.path().join("state/node.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    let err = run_fails(&dir, &["--relay", &relay.url, "--room", "r", "--token", &t]);
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;

    // Commands that need a running node say so.
    let out = cli_in(dir.path(), &["peers"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no tunnel node is running"), "{}", stderr(&out));
    Ok(())
}

#[test]
fn private_relay_checks_its_access_token() -> anyhow::Result<()> {
    let relay = RelayProc::start("127.0.0.1:0", &["--access-token", "relay-secret-123"])?;
    let dir = TempDir::new("access");
    let t = token();
    let err = run_fails(&dir, &["--relay", &relay.url, "--room", "r", "--token", &t, "--access-token", "wrong"]);
    assert!(err.contains("access token"), "{err}");
    let err = run_fails(&dir, &["--relay", &relay.url, "--room", "r", "--token", &t]);
    assert!(err.contains("access token"), "{err}");

    let a = NodeProc::start_with(&relay.url, "r", &t, "a", &[("TUNNEL_ACCESS_TOKEN", "relay-secret-123")])?;
    let b = NodeProc::start_with(&relay.url, "r", &t, "b", &[("TUNNEL_ACCESS_TOKEN", "relay-secret-123")])?;
    a.wait_for_peers(&["b"], Duration::from_secs(10))?;
    drop(b);
    Ok(())
}

#[test]
fn a_second_node_on_the_same_state_refuses_to_start() -> anyhow::Result<()> {
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let a = NodeProc::start(&relay.url, "r", &t, "a", "")?;
    let out = a.cli(&["run", "--relay", &relay.url, "--room", "r", "--token", &t]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already running"), "{}", stderr(&out));
    // The first node is unaffected.
    assert!(a.cli(&["peers"]).status.success());
    Ok(())
}

#[test]
fn audit_log_records_membership_and_detects_edits() -> anyhow::Result<()> {
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let mut a = NodeProc::start(&relay.url, "r", &t, "a", "")?;
    let b = NodeProc::start(&relay.url, "r", &t, "b", "")?;
    a.wait_for_peers(&["b"], Duration::from_secs(10))?;
    assert_eq!(a.proc.terminate(Duration::from_secs(10))?, Some(0));
    drop(b);

    let verify = a.cli(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    let tail = String::from_utf8(a.cli(&["audit", "tail", "-n", "50", "--json"]).stdout)?;
    let events: Vec<String> = tail
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].as_str().unwrap().to_owned())
        .collect();
    for e in ["node.start", "path.relay_up", "peer.present", "peer.hello", "node.stop"] {
        assert!(events.iter().any(|x| x == e), "no {e} in {events:?}");
    }

    // Edit one record: verify fails and names it.
    let path = a.dir.path().join("state/audit.jsonl");
    let text = std::fs::read_to_string(&path)?;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[1] = lines[1].replace("\"decision\":\"info\"", "\"decision\":\"allowed\"");
    std::fs::write(&path, lines.iter().map(|l| format!("{l}\n")).collect::<String>())?;
    let verify = a.cli(&["audit", "verify"]);
    assert_eq!(verify.status.code(), Some(1));
    assert!(stderr(&verify).contains("record 3"), "{}", stderr(&verify));
    Ok(())
}

/// The README's first command: `tunnel demo` runs a relay and three peers in one process and
/// checks its own work (it fails if the relay saw plaintext).
#[test]
fn demo_runs_the_whole_story_with_nothing_outside() -> anyhow::Result<()> {
    let dir = TempDir::new("demo");
    let o = cli_in(dir.path(), &["demo"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}{}", String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("2 x ok: beta, gamma -> "), "the fleet step groups both peers: {text}");
    assert!(text.contains("occurrences of the data's canary or the room token among them: 0"), "{text}");
    assert!(text.contains("All good."), "{text}");
    Ok(())
}

//! Fleet operations: target selection over two dozen real nodes on a real relay, exact
//! reduction groups, fleet read/write, and peers that are slow, frozen or killed mid-run
//! reported as such (never dropped) while the command still finishes.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tunnel_node::fleet::reduce::{reduce, GroupBy, Limits};
use tunnel_node::fleet::{FleetOp, FleetOptions, Status, TargetResult};
use tunnel_node::policy::Mode;
use tunnel_node::Node;
use tunnel_proto::message::{ExecCommand, ExecSpec, OsInfo};
use tunnel_tests::inproc::{node_config, wait_named};
use tunnel_tests::{run_async, token, NodeProc, RelayProc, TempDir};

fn names(targets: &[tunnel_node::fleet::targets::Target]) -> Vec<String> {
    targets.iter().map(|t| t.name.clone()).collect()
}

fn shell(script: &str) -> ExecSpec {
    ExecSpec {
        request_id: 0,
        command: ExecCommand::Shell(script.into()),
        env: vec![],
        cwd: None,
        timeout_ms: None,
        output_cap: 4096,
        stdin: false,
    }
}

async fn run_fleet(op: &Node, target: &str, fleet_op: FleetOp) -> anyhow::Result<Vec<TargetResult>> {
    let targets = op.select(target).await?;
    let (tx, mut rx) = mpsc::channel(16);
    let runner = op.clone();
    let total = targets.len();
    let task = tokio::spawn(async move { runner.fleet(targets, fleet_op, FleetOptions::default(), tx).await });
    let mut results = Vec::new();
    while let Some(r) = rx.recv().await {
        results.push(r);
    }
    task.await?;
    assert_eq!(results.len(), total, "one result per target");
    Ok(results)
}

/// 24 peers: web-01..16 (edit; odd ones also `prod`), db-1..4 (plan), mac-1..4 (disabled,
/// announcing macOS), plus the operator `op`.
async fn start_fleet(url: &str, t: &str) -> anyhow::Result<(Node, Vec<Node>)> {
    let op = Node::start(node_config(url, "fleet", t, "op")).await?;
    let mut peers = Vec::new();
    for i in 1..=24 {
        let (name, tags, mode, family) = match i {
            1..=16 => (format!("web-{i:02}"), if i % 2 == 1 { "web,prod" } else { "web" }, Mode::Edit, "linux"),
            17..=20 => (format!("db-{}", i - 16), "db", Mode::Plan, "linux"),
            _ => (format!("mac-{}", i - 20), "edge", Mode::Disabled, "macos"),
        };
        let mut cfg = node_config(url, "fleet", t, &name);
        cfg.tags = tags.split(',').map(str::to_owned).collect();
        cfg.policy.mode = mode;
        cfg.os = OsInfo { family: family.into(), distro: String::new(), ..cfg.os };
        peers.push(Node::start(cfg).await?);
    }
    for p in &peers {
        wait_named(&op, p.name(), Duration::from_secs(20)).await?;
    }
    Ok((op, peers))
}

#[test]
fn targets_select_exactly_and_reductions_are_exact() -> anyhow::Result<()> {
    run_async(Duration::from_secs(120), async {
        let relay = tunnel_relay::Relay::bind("127.0.0.1:0", Default::default()).await?;
        let (op, peers) = start_fleet(&relay.url(), &token()).await?;
        let web: Vec<String> = (1..=16).map(|i| format!("web-{i:02}")).collect();
        let sel = |expr: &'static str| {
            let op = op.clone();
            async move { op.select(expr).await.map(|t| names(&t)) }
        };
        assert_eq!(sel("all").await?.len(), 24, "all is every peer, not this node");
        assert_eq!(sel("tag:web").await?, web);
        assert_eq!(sel("tag:prod").await?, (1..=16).step_by(2).map(|i| format!("web-{i:02}")).collect::<Vec<_>>());
        assert_eq!(sel("os:macos").await?, vec!["mac-1", "mac-2", "mac-3", "mac-4"]);
        assert_eq!(sel("os:linux").await?.len(), 20);
        assert_eq!(
            sel("web-[01-03],db-1, tag:db").await?,
            vec!["db-1", "db-2", "db-3", "db-4", "web-01", "web-02", "web-03"]
        );
        assert_eq!(sel("local,mac-2").await?, vec!["mac-2", "op"]);
        let prefix = peers[19].id().to_string()[..10].to_owned();
        assert_eq!(names(&op.select(&prefix).await?), vec!["db-4"]);
        // Mistakes are errors that help, never an empty or silently smaller fleet.
        let err = |expr: &'static str| {
            let op = op.clone();
            async move { op.select(expr).await.unwrap_err().to_string() }
        };
        assert!(err("web-1").await.contains("close matches: web-01"), "{}", err("web-1").await);
        assert!(err("tag:gpu").await.contains("tags present: db, edge, prod, web"), "{}", err("tag:gpu").await);
        assert!(err("os:windows").await.contains("selects no peers"));
        assert!(err("web-[15-17]").await.contains("no peer named \"web-17\""));

        // Edit peers run the shell; plan peers refuse a shell; disabled peers refuse all.
        let results = run_fleet(&op, "all", FleetOp::Exec(shell("echo hello from the fleet"))).await?;
        let red = reduce(&results, &GroupBy::Output, Limits::default());
        let groups: Vec<(usize, Status, &str)> =
            red.groups.iter().map(|g| (g.count, g.status, g.members.as_str())).collect();
        assert_eq!(
            groups,
            vec![(16, Status::Ok, "web-[01-16]"), (4, Status::Refused, "db-[1-4]"), (4, Status::Refused, "mac-[1-4]")]
        );
        assert_eq!(red.groups[0].stdout, "hello from the fleet\n");
        assert!(red.groups[1].error.as_deref().unwrap().contains("plan"), "{:?}", red.groups[1]);
        assert!(red.groups[2].error.as_deref().unwrap().contains("disabled"), "{:?}", red.groups[2]);
        // Grouping by exit code only, and a normalizing regex.
        let results = run_fleet(&op, "tag:web", FleetOp::Exec(shell("echo $$; exit 3"))).await?;
        assert_eq!(reduce(&results, &GroupBy::Output, Limits::default()).groups.len(), 16, "pids differ");
        let red = reduce(&results, &GroupBy::ExitCode, Limits::default());
        assert_eq!((red.groups.len(), red.groups[0].count, red.groups[0].exit_code), (1, 16, Some(3)));
        assert_eq!(red.groups[0].status, Status::Failed);
        let red = reduce(&results, &GroupBy::parse("output", Some(r"\d+")).unwrap(), Limits::default());
        assert_eq!(red.groups.len(), 1);

        // Write on an edit peer and a plan peer; read it back from both.
        let dir = TempDir::new("fleet-files");
        let path = dir.path().join("motd").display().to_string();
        let content = std::sync::Arc::new(b"welcome to the fleet\n".to_vec());
        let write = FleetOp::Write { path: path.clone(), mode: Some(0o640), content };
        let results = run_fleet(&op, "web-01,db-1", write).await?;
        let status: Vec<(&str, Status)> = results.iter().map(|r| (r.name.as_str(), r.status)).collect();
        assert!(status.contains(&("web-01", Status::Ok)) && status.contains(&("db-1", Status::Refused)), "{results:?}");
        let results = run_fleet(&op, "web-0[1-2],db-1", FleetOp::Read { path, max_bytes: 7 }).await?;
        let red = reduce(&results, &GroupBy::Output, Limits::default());
        assert_eq!((red.groups.len(), red.groups[0].count), (1, 3), "{red:?}");
        assert_eq!(red.groups[0].stdout, "welcome");
        assert!(results.iter().all(|r| r.truncated && r.stdout_bytes == 21 && r.sha256 == results[0].sha256));
        op.shutdown().await;
        for p in peers {
            p.shutdown().await;
        }
        Ok(())
    })
}

fn cli_json(op: &NodeProc, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let o = op.cli(args);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let doc = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    (o.status.code(), doc, stderr)
}

/// Slow, frozen and killed peers are reported as timed out or unreachable, the fast ones
/// as ok, and the command finishes in about its timeout.
#[test]
fn slow_frozen_and_killed_peers_are_reported_not_lost() -> anyhow::Result<()> {
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let marks = TempDir::new("fleet-marks");
    let mark = marks.path().join("victim-started");
    let op = NodeProc::start(&relay.url, "r", &t, "op", "")?;
    let bypass = [("TUNNEL_MODE", "bypass")];
    let fast: Vec<NodeProc> = (1..=2)
        .map(|i| NodeProc::start_with(&relay.url, "r", &t, &format!("fast-{i}"), &bypass))
        .collect::<anyhow::Result<_>>()?;
    let _slow = NodeProc::start_with(&relay.url, "r", &t, "slow", &[("TUNNEL_MODE", "bypass"), ("ROLE", "slow")])?;
    let mut victim =
        NodeProc::start_with(&relay.url, "r", &t, "victim", &[("TUNNEL_MODE", "bypass"), ("ROLE", "victim")])?;
    let frozen = NodeProc::start_with(&relay.url, "r", &t, "frozen", &bypass)?;
    op.wait_for_peers(&["fast-1", "fast-2", "slow", "victim", "frozen"], Duration::from_secs(15))?;
    signal(frozen.proc.pid(), "STOP");
    let script =
        format!("case \"$ROLE\" in slow) sleep 30;; victim) touch {}; sleep 30;; esac; echo fine", mark.display());
    let started = Instant::now();
    let run = std::thread::scope(|s| {
        let fleet =
            s.spawn(|| cli_json(&op, &["fleet", "exec", "all", "--timeout", "4", "--json", "--shell", &script]));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !mark.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(mark.exists(), "the victim never started its command");
        victim.proc.kill();
        fleet.join().expect("fleet thread")
    });
    signal(frozen.proc.pid(), "CONT");
    let (code, doc, stderr) = run;
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    assert_eq!(code, Some(1), "{stderr}");
    let by_name: std::collections::HashMap<&str, &str> = doc["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(by_name.len(), 5, "{doc}");
    assert_eq!((by_name["fast-1"], by_name["fast-2"], by_name["slow"]), ("ok", "ok", "timed_out"), "{doc}");
    assert_eq!(by_name["victim"], "unreachable", "{doc}");
    assert!(["timed_out", "unreachable"].contains(&by_name["frozen"]), "{doc}");
    assert_eq!(doc["reduction"]["groups"][0]["members"], "fast-[1-2]", "{doc}");
    assert_eq!(doc["reduction"]["by_status"]["ok"], 2, "{doc}");
    drop(fast);
    Ok(())
}

/// The CLI's table, exit codes and argument errors.
#[test]
fn cli_table_and_errors() -> anyhow::Result<()> {
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let op = NodeProc::start(&relay.url, "r", &t, "op", "")?;
    let _peers: Vec<NodeProc> = (1..=3)
        .map(|i| NodeProc::start(&relay.url, "r", &t, &format!("node-{i}"), "lab"))
        .collect::<anyhow::Result<_>>()?;
    op.wait_for_peers(&["node-1", "node-2", "node-3"], Duration::from_secs(15))?;
    // Plan mode allows `uname` as argv: all three succeed.
    let o = op.cli(&["fleet", "exec", "tag:lab", "--", "uname", "-s"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{text} {}", String::from_utf8_lossy(&o.stderr));
    assert!(text.starts_with("3 targets: 3 ok"), "{text}");
    assert!(text.contains("      3  ok              0  node-[1-3]\n"), "{text}");
    assert!(text.contains("│ Linux"), "{text}");
    // On a terminal (a pty from `script`), a live progress bar is drawn on stderr.
    let cmd = format!("{} fleet exec tag:lab -- uname -s", tunnel_tests::bin("tunnel").display());
    let o = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .envs(NodeProc::env_of(op.dir.path()))
        .env_remove("TUNNEL_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()?;
    let tty = String::from_utf8_lossy(&o.stdout);
    assert!(tty.contains("fleet [########################] 3/3 done, 0 failed, 0 pending"), "{tty:?}");
    assert!(tty.contains("3 targets: 3 ok"), "{tty:?}");
    // --stream: one JSON line per peer as it arrives, the grouping last.
    let o = op.cli(&["fleet", "exec", "tag:lab", "--stream", "--", "uname", "-s"]);
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 4, "{lines:?}");
    let mut names: Vec<&str> = lines[..3].iter().map(|l| l["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["node-1", "node-2", "node-3"]);
    assert_eq!(lines[3]["reduction"]["groups"][0]["members"], "node-[1-3]");
    // A shell is refused in plan mode: exit 1, the refusal shown.
    let o = op.cli(&["fleet", "exec", "node-[1-2]", "--shell", "true"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("2  refused") && text.contains("error: refused by policy"), "{text}");
    let o = op.cli(&["fleet", "ls", "node-1,node-3"]);
    assert!(String::from_utf8_lossy(&o.stdout).lines().count() == 2);
    for (args, needle) in [
        (vec!["fleet", "exec", "nod-1", "--", "true"], "close matches: node-1"),
        (vec!["fleet", "exec", "tag:none", "--", "true"], "selects no peers"),
        (vec!["fleet", "exec", "all"], "no command"),
        (vec!["fleet", "exec", "all", "--normalize", "(", "--", "true"], "bad normalizing regex"),
        (vec!["fleet", "exec", "all", "--timeout", "0", "--", "true"], "--timeout"),
    ] {
        let o = op.cli(&args);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
        assert!(e.contains(needle), "{args:?}: {e}");
    }
    Ok(())
}

fn signal(pid: u32, sig: &str) {
    std::process::Command::new("sh").args(["-c", &format!("kill -{sig} {pid}")]).status().expect("kill");
}

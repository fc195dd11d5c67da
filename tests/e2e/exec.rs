//! `tunnel exec` through a real relay between real node processes: argv and shell forms,
//! stdin, exit codes, injection attempts, plan-mode refusals, timeouts and cancellation that
//! kill whole process groups, output caps, and at-most-once execution.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tunnel_proto::message::{ExecCommand, ExecEvent, ExecSpec};
use tunnel_tests::inproc::{node_config, wait_named};
use tunnel_tests::{bin, processes_with, run_async, token, NodeProc, RelayProc, TempDir};

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A relay, an operator node (plan) and a target node in `mode`.
fn setup(mode: &str) -> anyhow::Result<(RelayProc, NodeProc, NodeProc)> {
    let (relay, _, op, target) = tunnel_tests::op_and_target(mode)?;
    Ok((relay, op, target))
}

/// Processes whose command line contains `needle`.
#[test]
fn argv_shell_stdin_and_exit_codes() -> anyhow::Result<()> {
    let (_relay, op, _target) = setup("edit")?;
    let o = op.cli(&["exec", "target", "--", "uname", "-s"]);
    assert_eq!((o.status.code(), out(&o).trim()), (Some(0), "Linux"), "{}", err(&o));
    let o = op.cli(&["exec", "target", "--shell", "echo out; echo err >&2; exit 7"]);
    assert_eq!((o.status.code(), out(&o).as_str(), err(&o).as_str()), (Some(7), "out\n", "err\n"));
    let o =
        op.cli(&["exec", "target", "--env", "GREETING=hi there", "--cwd", "/tmp", "--shell", "echo $GREETING; pwd"]);
    assert_eq!(out(&o), "hi there\n/tmp\n");
    // stdin flows when it is not a terminal.
    let mut child = Command::new(bin("tunnel"))
        .args(["exec", "target", "--", "wc", "-c"])
        .envs(op_env(&op))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &vec![b'x'; 300_000])?;
    drop(child.stdin.take());
    let o = child.wait_with_output()?;
    assert_eq!(out(&o).trim(), "300000");
    // From a terminal (stdin not forwarded), the command still runs to its end.
    if Command::new("script").arg("--version").output().is_ok() {
        let line = format!("{} exec target -- sh -c 'sleep 0.5; echo finished'", bin("tunnel").display());
        let o = Command::new("script").args(["-qec", &line, "/dev/null"]).envs(op_env(&op)).output()?;
        assert_eq!((o.status.code(), out(&o).trim()), (Some(0), "finished"), "{}", err(&o));
    } else {
        eprintln!("SKIPPED the terminal case: no `script` (util-linux) to give tunnel a terminal");
    }
    // Killed by a signal: 128 + signal.
    let o = op.cli(&["exec", "target", "--shell", "kill -TERM $$"]);
    assert_eq!(o.status.code(), Some(128 + 15));
    let o = op.cli(&["exec", "target", "--", "no-such-program-xyz"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(err(&o).contains("not found"), "{}", err(&o));
    // The node's own secrets never reach commands.
    let o = op.cli(&["exec", "target", "--", "env"]);
    assert!(o.status.success() && !out(&o).contains("TUNNEL_"), "{}", out(&o));
    Ok(())
}

fn op_env(op: &NodeProc) -> Vec<(String, String)> {
    let d = op.dir.path();
    vec![
        ("TUNNEL_STATE_DIR".into(), d.join("state").display().to_string()),
        ("TUNNEL_RUNTIME_DIR".into(), d.join("run").display().to_string()),
        ("HOME".into(), d.display().to_string()),
    ]
}

#[test]
fn argv_is_never_interpreted_by_a_shell() -> anyhow::Result<()> {
    let (_relay, op, _target) = setup("edit")?;
    let dir = TempDir::new("inject");
    let marker = dir.path().join("marker");
    let m = marker.display().to_string();
    let hostile = [
        format!("; touch {m}"),
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("x\ntouch {m}"),
        format!("&& touch {m}"),
        format!("| touch {m}"),
        "-n".to_string(),
    ];
    let mut args = vec!["exec", "target", "--", "echo"];
    args.extend(hostile.iter().map(String::as_str));
    let o = op.cli(&args);
    assert!(o.status.success(), "{}", err(&o));
    // echo saw "-n" only as its first option would; here it is last, so it is printed.
    assert!(out(&o).contains(&format!("$(touch {m})")), "{}", out(&o));
    // The same through plan mode's argv path.
    let (_relay2, op2, _t2) = setup("plan")?;
    let o = op2.cli(&["exec", "target", "--", "ls", "--", &format!("$(touch {m})"), &format!("; touch {m}")]);
    assert_eq!(o.status.code(), Some(2), "ls fails on the odd names: {}", err(&o));
    assert!(!marker.exists(), "a shell ran something from an argv");
    Ok(())
}

#[test]
fn plan_mode_refuses_bypasses_and_audits_them() -> anyhow::Result<()> {
    let (_relay, op, target) = setup("plan")?;
    let o = op.cli(&["exec", "target", "--", "uname", "-a"]);
    assert!(o.status.success(), "plan allows read-only commands: {}", err(&o));
    let attempts: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--shell", "id"], "does not allow shell"),
        (vec!["--", "/bin/../bin/sh", "-c", "id"], "only read-only system programs"),
        (vec!["--", "env", "sh", "-c", "id"], "runs it"),
        (vec!["--", "bash", "-c", "id"], "only read-only system programs"),
        (vec!["--", "find", "/tmp", "-exec", "id", ";"], "-exec"),
        (vec!["--", "git", "-c", "core.pager=id", "log"], "-c"),
        (vec!["--", "sed", "-i", "s/a/b/", "/etc/hostname"], "-i"),
        (vec!["--", "awk", "BEGIN { system(\"id\") }"], "system()"),
        (vec!["--", "tee", "/tmp/x"], "only read-only system programs"),
    ];
    for (extra, needle) in &attempts {
        let mut args = vec!["exec", "target"];
        args.extend(extra.iter().copied());
        let o = op.cli(&args);
        assert_eq!(o.status.code(), Some(126), "{extra:?} must be refused: {}", out(&o));
        assert!(err(&o).contains("refused by policy") && err(&o).contains(needle), "{extra:?}: {}", err(&o));
    }
    let o = op.cli(&["exec", "target", "--", "rm", "-rf", "/"]);
    assert_eq!(o.status.code(), Some(126));
    assert!(err(&o).contains("hard deny"), "{}", err(&o));
    // Every refusal is on record at the target, with its rule.
    let tail = target.cli(&["audit", "tail", "-n", "100", "--json"]);
    let refused = out(&tail)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["event"] == "exec" && r["decision"] == "refused" && r["rule"].is_string())
        .count();
    assert_eq!(refused, attempts.len() + 1, "{}", out(&tail));
    assert!(target.cli(&["audit", "verify"]).status.success());
    Ok(())
}

#[test]
fn timeout_and_cancel_kill_the_whole_process_group() -> anyhow::Result<()> {
    let (_relay, op, _target) = setup("edit")?;
    // Children and grandchildren in the background; the timeout takes them all.
    let tag = format!("1000.{}", std::process::id());
    let script = format!("sleep {tag} & (sleep {tag} &) ; sleep {tag}");
    let started = Instant::now();
    let o = op.cli(&["exec", "target", "--timeout", "1", "--shell", &script]);
    assert_eq!(o.status.code(), Some(124), "{}", err(&o));
    assert!(started.elapsed() < Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    assert!(processes_with(&format!("sleep {tag}")).is_empty(), "left behind: {:?}", processes_with(&tag));

    // Cancel: the caller dies mid-command; the target kills the group.
    let tag = format!("2000.{}", std::process::id());
    let mut caller = Command::new(bin("tunnel"))
        .args(["exec", "target", "--shell", &format!("sleep {tag} & sleep {tag}")])
        .envs(op_env(&op))
        .stdin(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while processes_with(&format!("sleep {tag}")).len() < 2 {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    caller.kill()?;
    caller.wait()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_with(&format!("sleep {tag}")).is_empty() {
        assert!(Instant::now() < deadline, "cancel left {:?}", processes_with(&tag));
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn output_is_capped_with_a_flag() -> anyhow::Result<()> {
    let (_relay, op, _target) = setup("plan")?;
    let o = op.cli(&["exec", "target", "--max-output", "100", "--", "cat", "/proc/cpuinfo", "/proc/meminfo"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(o.stdout.len(), 100);
    assert!(err(&o).contains("truncated"), "{}", err(&o));
    Ok(())
}

#[test]
fn a_resent_exec_runs_once() -> anyhow::Result<()> {
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let url = relay.url.clone();
    run_async(Duration::from_secs(60), async move {
        let t = token();
        let a = tunnel_node::Node::start(node_config(&url, "r", &t, "a")).await?;
        let mut cfg = node_config(&url, "r", &t, "b");
        cfg.policy.mode = tunnel_node::policy::Mode::Edit;
        let b = tunnel_node::Node::start(cfg).await?;
        wait_named(&a, "b", Duration::from_secs(10)).await?;
        let dir = TempDir::new("once");
        let file = dir.path().join("count");
        let spec = ExecSpec {
            request_id: 42,
            command: ExecCommand::Shell(format!("echo run >> {}", file.display())),
            env: vec![],
            cwd: None,
            timeout_ms: Some(10_000),
            output_cap: 1 << 20,
            stdin: false,
        };
        let peer = a.resolve("b")?;
        let mut outcomes = Vec::new();
        for _ in 0..2 {
            let (tx, mut rx) = tokio::sync::mpsc::channel(16);
            a.exec(peer, spec.clone(), None, tx).await?;
            let mut last = None;
            while let Some(ev) = rx.recv().await {
                last = Some(ev);
            }
            outcomes.push(last);
        }
        assert!(matches!(outcomes[0], Some(ExecEvent::Exit(ref e)) if e.code == Some(0)), "{outcomes:?}");
        assert!(matches!(outcomes[1], Some(ExecEvent::Failed(ref m)) if m.contains("already ran")), "{outcomes:?}");
        assert_eq!(std::fs::read_to_string(&file)?, "run\n", "ran exactly once");
        a.shutdown().await;
        b.shutdown().await;
        Ok(())
    })
}

#[test]
fn plan_mode_git_does_not_run_what_a_repository_configures() -> anyhow::Result<()> {
    let (_relay, op, _target) = setup("plan")?;
    let work = TempDir::new("gitrepo");
    let git = |args: &[&str], dir: &std::path::Path| {
        Command::new("git").args(args).current_dir(dir).output().map(|o| o.status.success())
    };
    let clean = work.path().join("clean");
    let hostile = work.path().join("hostile");
    for repo in [&clean, &hostile] {
        std::fs::create_dir_all(repo)?;
        assert!(git(&["init", "-q"], repo)?, "git init");
        std::fs::write(repo.join("f.txt"), b"x")?;
    }
    let marker = work.path().join("PWNED");
    assert!(git(&["config", "core.fsmonitor", &format!("touch {}", marker.display())], &hostile)?);

    let o = op.cli(&["exec", "target", "--cwd", clean.to_str().unwrap(), "--", "git", "status", "--short"]);
    assert!(o.status.success(), "git status in a clean repo runs in plan mode: {}", err(&o));
    assert!(out(&o).contains("f.txt"), "{}", out(&o));

    let o = op.cli(&["exec", "target", "--cwd", hostile.to_str().unwrap(), "--", "git", "status"]);
    assert_eq!(o.status.code(), Some(126), "{}", err(&o));
    assert!(err(&o).contains("core.fsmonitor"), "{}", err(&o));
    // Also through -C from somewhere else.
    let o = op.cli(&["exec", "target", "--cwd", "/", "--", "git", "-C", hostile.to_str().unwrap(), "status"]);
    assert_eq!(o.status.code(), Some(126), "{}", err(&o));
    // A filter that would run on status is refused too.
    std::fs::write(clean.join(".gitattributes"), b"* filter=evil\n")?;
    assert!(git(&["config", "filter.evil.clean", &format!("touch {}", marker.display())], &clean)?);
    let o = op.cli(&["exec", "target", "--cwd", clean.to_str().unwrap(), "--", "git", "status"]);
    assert_eq!(o.status.code(), Some(126), "{}", err(&o));
    assert!(!marker.exists(), "a repository made plan-mode git run a program");
    Ok(())
}

/// `local` (and the node's own name) reach the node itself through the loopback: the same
/// exec service, policy and audit as a remote caller, with no relay at all if there is none.
#[test]
fn local_target_runs_on_this_node_with_or_without_a_relay() -> anyhow::Result<()> {
    run_async(Duration::from_secs(60), async {
        let spec = |argv: &[&str]| ExecSpec {
            request_id: rand::random(),
            command: ExecCommand::Argv(argv.iter().map(|s| s.to_string()).collect()),
            env: vec![],
            cwd: None,
            timeout_ms: Some(10_000),
            output_cap: 4,
            stdin: false,
        };
        let relay = tunnel_relay::Relay::bind("127.0.0.1:0", Default::default()).await?;
        let mut offline = node_config("unused", "r", &token(), "alone");
        offline.relay_url = None;
        let nodes = [
            tunnel_node::Node::start(node_config(&relay.url(), "r", &token(), "meshed")).await?,
            tunnel_node::Node::start(offline).await?,
        ];
        for node in &nodes {
            for target in ["local", node.name(), &node.id().to_string()[..6]] {
                let me = node.resolve(target)?;
                assert_eq!(me, node.id(), "{target}");
                let (tx, mut rx) = tokio::sync::mpsc::channel(16);
                node.exec(me, spec(&["echo", "hello world"]), None, tx).await?;
                let (mut stdout, mut exit) = (Vec::new(), None);
                while let Some(ev) = rx.recv().await {
                    match ev {
                        ExecEvent::Stdout(b) => stdout.extend_from_slice(&b.0),
                        ExecEvent::Exit(e) => exit = Some(e),
                        other => panic!("{target}: {other:?}"),
                    }
                }
                let exit = exit.expect("an exit event");
                assert_eq!(String::from_utf8_lossy(&stdout), "hell", "{target}: capped at 4 bytes");
                assert!(exit.stdout_truncated);
                assert_eq!(exit.stdout_bytes, 12, "the full size is reported beside the cut");
                assert_eq!(exit.code, Some(0));
            }
            // Plan mode (the default) is enforced on the loopback too.
            let (tx, mut rx) = tokio::sync::mpsc::channel(16);
            node.exec(node.id(), spec(&["rm", "-rf", "/tmp/nothing-here"]), None, tx).await?;
            assert!(matches!(rx.recv().await, Some(ExecEvent::Refused(_))));
            assert!(node.resolve("nobody").is_err());
            node.shutdown().await;
        }
        Ok(())
    })
}

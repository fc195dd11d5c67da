//! `tunnel mcp` driven by a real MCP client, the official Python SDK (tests/mcp/drive.py),
//! against a real relay with real peers: over stdio attached to a running node, over
//! streamable HTTP with its own node, local-only with no relay, and with garbage on stdin.
//! The Python side makes every check; these tests set the scene and require it to pass.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tunnel_tests::{bin, token, NodeProc, Proc, RelayProc, TempDir};

fn drive(scenario: &str, env: &[(String, String)]) -> anyhow::Result<String> {
    tunnel_tests::drive_mcp(scenario, env)
}

/// A relay and two peers: `target` in edit mode and `plain` in plan mode (whose audit log
/// `plain_admin`, when given, may read).
struct Room {
    relay: RelayProc,
    token: String,
    _target: NodeProc,
    _plain: NodeProc,
    scratch: TempDir,
}

impl Room {
    fn start() -> anyhow::Result<Self> {
        Self::start_with(RelayProc::start("127.0.0.1:0", &[])?, token(), None)
    }

    fn start_with(relay: RelayProc, token: String, plain_admin: Option<&str>) -> anyhow::Result<Self> {
        let scratch = TempDir::new("mcp-scratch");
        let target = NodeProc::start_with(&relay.url, "r", &token, "target", &[("TUNNEL_MODE", "edit")])?;
        let admins = plain_admin.map(|id| format!("admins = [\"{id}\"]\n"));
        let plain = NodeProc::start_configured(&relay.url, "r", &token, "plain", &[], admins.as_deref())?;
        Ok(Self { relay, token, _target: target, _plain: plain, scratch })
    }

    fn env(&self, dir: &Path) -> Vec<(String, String)> {
        let mut env = NodeProc::env_of(dir);
        env.push(("SCRATCH".into(), self.scratch.path().display().to_string()));
        env
    }
}

#[test]
fn stdio_client_attached_to_a_running_node() -> anyhow::Result<()> {
    let (relay, token) = (RelayProc::start("127.0.0.1:0", &[])?, token());
    let op = NodeProc::start(&relay.url, "r", &token, "op", "")?;
    let op_id = String::from_utf8(op.cli(&["id"]).stdout)?.trim().to_owned();
    let room = Room::start_with(relay, token, Some(&op_id))?;
    op.wait_for_peers(&["target", "plain"], Duration::from_secs(15))?;
    // No relay settings in the environment: the MCP server must use the running node.
    let mut env = room.env(op.dir.path());
    env.push(("AUDIT_ADMIN_OF".into(), "plain".into()));
    let out = drive("stdio-attached", &env)?;
    assert!(out.contains("ok: notifications/cancelled killed the remote command"), "{out}");
    // The session was handed to `tunnel run` and served in its process, with no hop between.
    let status: serde_json::Value = serde_json::from_slice(&op.cli(&["status", "--json"]).stdout)?;
    assert!(status["mcp_sessions"].as_u64() >= Some(1), "served in tunnel run's process: {status}");
    Ok(())
}

/// A 90 s command through MCP: a job id at the job-after bound, the job outliving the session,
/// its whole output afterwards (`jobs` scenario of drive.py).
#[test]
fn long_commands_become_jobs_an_agent_follows_across_sessions() -> anyhow::Result<()> {
    let (relay, token) = (RelayProc::start("127.0.0.1:0", &[])?, token());
    let op = NodeProc::start(&relay.url, "r", &token, "op", "")?;
    let room = Room::start_with(relay, token, None)?;
    op.wait_for_peers(&["target"], Duration::from_secs(15))?;
    let out = drive("jobs", &room.env(op.dir.path()))?;
    assert!(out.contains("ok: its whole output is kept"), "{out}");
    Ok(())
}

/// `tunnel mcp --transport http` with its own node, and the stderr line naming its address.
fn start_http(room: &Room, dir: &Path, token: &str) -> anyhow::Result<(Proc, String)> {
    let mut child = Command::new(bin("tunnel"))
        .args(["mcp", "--transport", "http", "--listen", "127.0.0.1:0", "--name", "mcp-op"])
        .envs(NodeProc::env_of(dir))
        .env("TUNNEL_RELAY", &room.relay.url)
        .env("TUNNEL_ROOM", "r")
        .env("TUNNEL_TOKEN", &room.token)
        .env("TUNNEL_MCP_TOKEN", token)
        .env_remove("TUNNEL_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().context("stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[tunnel mcp] {line}");
            if let Some(url) = line.strip_prefix("tunnel: MCP over HTTP at ") {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(20)).context("tunnel mcp --transport http did not start")?;
    Ok((Proc { child, name: "tunnel mcp".into() }, url))
}

#[test]
fn http_clients_with_auth_host_checks_and_separate_sessions() -> anyhow::Result<()> {
    let room = Room::start()?;
    let dir = TempDir::new("mcp-http");
    let mcp_token = token();
    let (_server, url) = start_http(&room, dir.path(), &mcp_token)?;
    let mut env = room.env(dir.path());
    env.push(("MCP_URL".into(), url));
    env.push(("MCP_TOKEN".into(), mcp_token));
    // Peers appear within a moment of the node joining; the driver's first call needs them.
    std::thread::sleep(Duration::from_secs(1));
    drive("http-own-node", &env)?;
    Ok(())
}

#[test]
fn http_transport_refuses_to_start_without_a_token() {
    let dir = TempDir::new("mcp-notoken");
    let out = Command::new(bin("tunnel"))
        .args(["mcp", "--transport", "http", "--listen", "127.0.0.1:0"])
        .envs(NodeProc::env_of(dir.path()))
        .env_remove("TUNNEL_MCP_TOKEN")
        .env_remove("TUNNEL_RELAY")
        .output()
        .expect("run tunnel mcp");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--auth-token"), "{err}");
}

#[test]
fn stdio_local_only_without_a_relay() -> anyhow::Result<()> {
    let dir = TempDir::new("mcp-local");
    let mut env = NodeProc::env_of(dir.path());
    env.push(("SCRATCH".into(), dir.path().display().to_string()));
    drive("stdio-local", &env)?;
    Ok(())
}

#[test]
fn garbage_on_stdin_gets_errors_not_a_crash() -> anyhow::Result<()> {
    let dir = TempDir::new("mcp-garbage");
    drive("garbage", &NodeProc::env_of(dir.path()))?;
    Ok(())
}

/// Three stdio sessions and no `tunnel run`: one node id on the relay, hosted by the first
/// session, taken over by another when it closes midway (tests/mcp/drive.py shared-sessions).
#[test]
fn sessions_without_a_service_share_one_node_and_take_over() -> anyhow::Result<()> {
    let room = Room::start()?;
    let dir = TempDir::new("mcp-shared");
    let mut env = room.env(dir.path());
    env.extend([
        ("TUNNEL_RELAY".into(), room.relay.url.clone()),
        ("TUNNEL_ROOM".into(), "r".into()),
        ("TUNNEL_TOKEN".into(), room.token.clone()),
        ("TUNNEL_NAME".into(), "mcp-shared".into()),
    ]);
    let out = drive("shared-sessions", &env)?;
    eprintln!("{}", out.lines().filter(|l| l.starts_with("failures:")).collect::<String>());
    assert!(out.contains("ok: the other sessions made every call"), "{out}");
    // The relay saw one connection of this node at a time: none displaced another.
    let port = room.relay.port();
    let metrics = Command::new("curl").args(["-s", "-m", "5", &format!("http://127.0.0.1:{port}/metrics")]).output()?;
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(metrics.contains("tunnel_relay_replaced_connections_total 0\n"), "{metrics}");
    Ok(())
}

/// A `tunnel run` started while a `tunnel mcp` session hosts the node gets it handed over:
/// same node id, the session keeps working through the socket, the relay never sees two
/// connections of the node at once.
#[test]
fn tunnel_run_takes_the_node_over_from_a_session() -> anyhow::Result<()> {
    let room = Room::start()?;
    let dir = TempDir::new("mcp-handover");
    let env = room.env(dir.path());
    let mut session = Command::new(bin("tunnel"))
        .args(["mcp", "--relay", &room.relay.url, "--room", "r", "--name", "handed"])
        .env("TUNNEL_TOKEN", &room.token)
        .env_remove("TUNNEL_CONFIG")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let status = |dir: &Path| -> Option<serde_json::Value> {
        let out = tunnel_tests::cli_in(dir, &["status", "--json"]);
        serde_json::from_slice(&out.stdout).ok().filter(|s: &serde_json::Value| s["running"] == true)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let before = loop {
        if let Some(s) = status(dir.path()) {
            break s;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "the session never hosted the node");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(before["runs_as"], "tunnel mcp (foreground)", "{before}");

    let mut run = Command::new(bin("tunnel"))
        .args(["run", "--relay", &room.relay.url, "--room", "r", "--name", "handed"])
        .env("TUNNEL_TOKEN", &room.token)
        .env_remove("TUNNEL_CONFIG")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    // Kept open to the end: `tunnel run` stops when its stdout goes away.
    let mut run_out = BufReader::new(run.stdout.take().context("stdout")?);
    let mut first = String::new();
    run_out.read_line(&mut first)?;
    assert!(first.contains("joined room"), "tunnel run did not start: {first:?}");
    let after = status(dir.path()).context("no node after the handover")?;
    assert_eq!(after["runs_as"], "tunnel run (foreground)", "{after}");
    assert_eq!(after["id"], before["id"]);
    assert!(session.try_wait()?.is_none(), "the session exited instead of attaching");
    let exec = tunnel_tests::cli_in(dir.path(), &["exec", "target", "--", "echo", "after-handover"]);
    assert!(String::from_utf8_lossy(&exec.stdout).contains("after-handover"), "{exec:?}");
    let port = room.relay.port();
    let metrics = Command::new("curl").args(["-s", "-m", "5", &format!("http://127.0.0.1:{port}/metrics")]).output()?;
    assert!(String::from_utf8_lossy(&metrics.stdout).contains("tunnel_relay_replaced_connections_total 0\n"));
    let _ = run.kill();
    let _ = session.kill();
    let _ = (run.wait(), session.wait());
    drop(run_out);
    Ok(())
}

/// tests/mcp/drive.mjs SCENARIO ARGS under Node, with the clients pinned in
/// tests/mcp/package-lock.json (`tests/setup.sh` installs them). Without Node or the clients
/// the test says so and passes, except in CI, where that is a missing install step.
fn drive_node(scenario: &str, args: &[&str], env: &[(String, String)]) -> anyhow::Result<Option<String>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp");
    let installed = dir.join("node_modules/@modelcontextprotocol/sdk/package.json").exists()
        && Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if !installed {
        let why = "Node 20 and tests/mcp's packages are needed (tests/setup.sh installs them)";
        anyhow::ensure!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipped: {why}");
        return Ok(None);
    }
    let args: Vec<&str> = std::iter::once(scenario).chain(args.iter().copied()).collect();
    tunnel_tests::drive_client("node", "drive.mjs", &args, env).map(Some)
}

/// The official TypeScript SDK over stdio (attached to a running node) and over streamable
/// HTTP (a server with its own node), and the MCP Inspector's CLI mode: the same answers as
/// the Python SDK gets.
#[test]
fn typescript_sdk_and_inspector_clients() -> anyhow::Result<()> {
    let room = Room::start()?;
    let op = NodeProc::start(&room.relay.url, "r", &room.token, "op", "")?;
    op.wait_for_peers(&["target", "plain"], Duration::from_secs(15))?;
    let env = room.env(op.dir.path());
    let Some(out) = drive_node("stdio", &[], &env)? else { return Ok(()) };
    assert!(out.contains("ok: stdio: exec runs argv on a peer"), "{out}");
    let out = drive_node("inspector", &[], &env)?.expect("installed");
    assert!(out.contains("ok: inspector: exec runs argv on a peer"), "{out}");

    let dir = TempDir::new("mcp-http-ts");
    let mcp_token = token();
    let (_server, url) = start_http(&room, dir.path(), &mcp_token)?;
    // Peers appear within a moment of the node joining; the first call needs them.
    std::thread::sleep(Duration::from_secs(1));
    let out = drive_node("http", &[&url, &mcp_token], &room.env(dir.path()))?.expect("installed");
    assert!(out.contains("ok: http: exec runs argv on a peer"), "{out}");
    Ok(())
}

/// Speaks MCP over a `tunnel mcp` process's stdio: initialize, then `tools/list`; returns how
/// many tools it lists, then closes stdin and waits (bounded) for the process to exit.
fn one_session(node: &NodeProc, extra: &[&str]) -> anyhow::Result<usize> {
    let mut session = RawSession::start(node, extra)?;
    session.send(serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))?;
    let tools = session.answer(2, Duration::from_secs(10))?["result"]["tools"].as_array().map_or(0, Vec::len);
    session.close()?;
    Ok(tools)
}

fn sessions_served(node: &NodeProc) -> anyhow::Result<u64> {
    let status: serde_json::Value = serde_json::from_slice(&node.cli(&["status", "--json"]).stdout)?;
    status["mcp_sessions"].as_u64().context("mcp_sessions in tunnel status")
}

/// With `tunnel run` on the machine, a stdio session is handed to it and ends with its client;
/// `--no-handoff` serves the same session by relaying calls instead.
#[test]
fn stdio_sessions_are_handed_to_tunnel_run_unless_told_not_to() -> anyhow::Result<()> {
    let (relay, token) = (RelayProc::start("127.0.0.1:0", &[])?, token());
    let node = NodeProc::start(&relay.url, "r", &token, "op", "")?;
    assert_eq!(sessions_served(&node)?, 0);
    let handed = one_session(&node, &[])?;
    assert!(handed >= 10, "a handed-over session lists the tools: {handed}");
    assert_eq!(sessions_served(&node)?, 1, "served in tunnel run's process");
    let relayed = one_session(&node, &["--no-handoff"])?;
    assert_eq!(relayed, handed, "both ways serve the same tools");
    assert_eq!(sessions_served(&node)?, 1, "--no-handoff relays instead");
    Ok(())
}

/// A `tunnel mcp` process spoken to line by line: JSON-RPC out on its stdin, answers read off
/// its stdout on a thread of their own (so a wait for one is bounded).
struct RawSession {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl RawSession {
    /// Starts `tunnel mcp EXTRA` beside `node` and initializes the session.
    fn start(node: &NodeProc, extra: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(bin("tunnel"))
            .arg("mcp")
            .args(extra)
            .envs(NodeProc::env_of(node.dir.path()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(msg) = serde_json::from_str(&line) else { continue };
                if tx.send(msg).is_err() {
                    return;
                }
            }
        });
        let mut session = Self { stdin: child.stdin.take(), child, lines };
        let params = serde_json::json!({"protocolVersion": "2025-06-18", "capabilities": {},
                                        "clientInfo": {"name": "t", "version": "1"}});
        session.send(serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}))?;
        session.answer(1, Duration::from_secs(10))?;
        session.send(serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        Ok(session)
    }

    fn send(&mut self, msg: serde_json::Value) -> anyhow::Result<()> {
        use std::io::Write;
        writeln!(self.stdin.as_mut().context("stdin closed")?, "{msg}")?;
        Ok(())
    }

    fn call(&mut self, id: u64, tool: &str, args: serde_json::Value) -> anyhow::Result<()> {
        let params = serde_json::json!({"name": tool, "arguments": args});
        self.send(serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}))
    }

    /// The answer to request `id` (other messages passed over), within `within`.
    fn answer(&mut self, id: u64, within: Duration) -> anyhow::Result<serde_json::Value> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let msg = self.lines.recv_timeout(left).with_context(|| format!("no answer to request {id}"))?;
            if msg["id"] == id {
                return Ok(msg);
            }
        }
    }

    /// Closes stdin and waits (bounded) for a clean exit.
    fn close(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::ensure!(status.success(), "tunnel mcp exited with {status}");
                return Ok(());
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "tunnel mcp did not exit after its client closed stdin"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RawSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A session handed to `tunnel run` outlives a restart of it: the call in flight when it stops
/// gets its own answer, a call made while it is away waits for it, and the session goes on,
/// with no new handshake, once it is back (served by its `tunnel mcp` from then on).
#[test]
fn a_handed_over_session_outlives_a_restart_of_tunnel_run() -> anyhow::Result<()> {
    let (relay, token) = (RelayProc::start("127.0.0.1:0", &[])?, token());
    let _target = NodeProc::start_with(&relay.url, "r", &token, "target", &[("TUNNEL_MODE", "edit")])?;
    let mut node = NodeProc::start(&relay.url, "r", &token, "op", "")?;
    node.wait_for_peers(&["target"], Duration::from_secs(10))?;
    let mut session = RawSession::start(&node, &[])?;
    assert_eq!(sessions_served(&node)?, 1, "served in tunnel run's process");
    let stdout_of = |answer: &serde_json::Value| answer["result"]["structuredContent"]["stdout"].clone();
    session.call(2, "exec", serde_json::json!({"target": "target", "argv": ["echo", "before"]}))?;
    assert_eq!(stdout_of(&session.answer(2, Duration::from_secs(10))?), "before\n");
    // In flight while tunnel run stops: answered before the session goes back.
    session.call(3, "exec", serde_json::json!({"target": "target", "argv": ["sh", "-c", "sleep 1; echo slow"]}))?;
    std::thread::sleep(Duration::from_millis(300));
    node.proc.terminate(Duration::from_secs(15))?;
    let slow = session.answer(3, Duration::from_secs(10))?;
    assert_eq!(stdout_of(&slow), "slow\n", "the call in flight got its own answer: {slow}");
    // Asked while no tunnel run is there: it waits for the one coming back.
    session.call(4, "peers", serde_json::json!({}))?;
    std::thread::sleep(Duration::from_millis(500));
    let node = node.restart(&relay.url, "r", &token, &[])?;
    let peers = session.answer(4, Duration::from_secs(20))?;
    assert!(peers["result"]["isError"] != true, "{peers}");
    node.wait_for_peers(&["target"], Duration::from_secs(10))?;
    session.call(5, "exec", serde_json::json!({"target": "target", "argv": ["echo", "after"]}))?;
    assert_eq!(stdout_of(&session.answer(5, Duration::from_secs(10))?), "after\n");
    assert_eq!(sessions_served(&node)?, 0, "the session stays with its tunnel mcp now, relaying");
    session.close()
}

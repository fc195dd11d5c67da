//! `exec true` on a remote peer through `tunnel mcp` over stdio (500 calls from the official
//! Python MCP client), in one run, on the same relay and peers:
//! - the client's floor: a tool call on the same session that the server refuses before
//!   reaching the node (interleaved call by call with the exec calls);
//! - `tunnel mcp` attached to a running `tunnel run` (the README's setup);
//! - `tunnel mcp` hosting its own node (no `tunnel run` on the machine);
//! - the raw CLI, `tunnel exec PEER -- true`, a new process each call.
//!
//! Targets (issue 20): attached <= own node; exec p50 <= floor + 1.5 ms. Run with
//! `tests/perf/run_mcp.sh`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tunnel_tests::{bin, token, NodeProc, RelayProc, TempDir};

const CLI_CALLS: usize = 200;

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One MCP session's figures, from tests/mcp/drive.py's `bench`.
struct Session {
    exec_p50: f64,
    exec_p99: f64,
    floor_p50: f64,
    calls: u64,
}

/// Runs the sessions (name, environment of its `tunnel mcp`) round-robin in one client.
fn mcp_sessions(sessions: &[(&str, Vec<(String, String)>)]) -> anyhow::Result<Vec<Session>> {
    let spec: serde_json::Map<String, serde_json::Value> = sessions
        .iter()
        .map(|(name, env)| {
            let env: serde_json::Map<String, serde_json::Value> =
                env.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str()))).collect();
            (name.to_string(), serde_json::Value::Object(env))
        })
        .collect();
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp/drive.py");
    let out = Command::new("python3")
        .arg(driver)
        .arg("bench")
        .env("TUNNEL_BIN", bin("tunnel"))
        .env("BENCH_SESSIONS", serde_json::Value::Object(spec).to_string())
        .env_remove("TUNNEL_CONFIG")
        .stderr(Stdio::null())
        .output()
        .context("running python3 (pip install mcp jsonschema)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("the MCP bench failed: {stdout}");
    }
    let line = stdout.lines().find(|l| l.starts_with('{')).context("no result line from the MCP bench")?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    Ok(sessions
        .iter()
        .map(|(name, _)| {
            let s = &v[name];
            let f = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
            Session {
                exec_p50: f("p50_ms"),
                exec_p99: f("p99_ms"),
                floor_p50: f("floor_p50_ms"),
                calls: s["calls"].as_u64().unwrap_or(0),
            }
        })
        .collect())
}

fn main() -> anyhow::Result<()> {
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let op = NodeProc::start(&relay.url, "bench", &t, "op", "")?;
    // The target's safety mode (plan by default: commands run under Landlock).
    let mode = std::env::var("BENCH_TARGET_MODE").unwrap_or_else(|_| "plan".into());
    let _target = NodeProc::start_with(&relay.url, "bench", &t, "target", &[("TUNNEL_MODE", &mode)])?;
    op.wait_for_peers(&["target"], Duration::from_secs(10))?;

    let mut cli = Vec::with_capacity(CLI_CALLS);
    for i in 0..CLI_CALLS + 20 {
        let started = Instant::now();
        let out = op.cli(&["exec", "target", "--", "true"]);
        if !out.status.success() {
            bail!("tunnel exec failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        if i >= 20 {
            cli.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    cli.sort_by(f64::total_cmp);

    // Attached: the environment names op's node only; `tunnel mcp` uses its control socket.
    // Own node: a machine with no `tunnel run`; the session hosts a node of its own. The
    // sessions take turns call by call, so machine load falls on both alike.
    let solo = TempDir::new("bench-solo");
    let mut own_env = NodeProc::env_of(solo.path());
    own_env.extend([
        ("TUNNEL_RELAY".to_owned(), relay.url.clone()),
        ("TUNNEL_ROOM".to_owned(), "bench".to_owned()),
        ("TUNNEL_TOKEN".to_owned(), t.clone()),
        ("TUNNEL_NAME".to_owned(), "solo".to_owned()),
    ]);
    let figures = mcp_sessions(&[("attached", NodeProc::env_of(op.dir.path())), ("own", own_env)])?;
    let (attached, own) = (&figures[0], &figures[1]);

    println!("exec `true` on a remote peer in {mode} mode over loopback (relay or direct path), same run:");
    for (what, s) in [("attached to `tunnel run`", attached), ("with its own node", own)] {
        println!(
            "  MCP exec tool, {what:<25} {} calls  p50 {:>6.2} ms  p99 {:>6.2} ms  (client floor p50 {:.2} ms: +{:.2} ms)",
            s.calls,
            s.exec_p50,
            s.exec_p99,
            s.floor_p50,
            s.exec_p50 - s.floor_p50
        );
    }
    println!(
        "  CLI `tunnel exec` (new process each), {CLI_CALLS} calls  p50 {:>6.2} ms  p99 {:>6.2} ms",
        pct(&cli, 0.5),
        pct(&cli, 0.99)
    );
    println!("  ratio attached/own node p50 {:.2} (target <= 1.00)", attached.exec_p50 / own.exec_p50);
    println!("  attached p50 over the client floor {:.2} ms (target <= 1.50)", attached.exec_p50 - attached.floor_p50);
    Ok(())
}

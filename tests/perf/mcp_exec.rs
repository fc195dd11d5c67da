//! `exec` tool round trip through `tunnel mcp` over stdio (`true` on a remote peer, 500 calls
//! from the official Python MCP client), beside the raw CLI (`tunnel exec PEER -- true`) in
//! the same run, on the same relay and peers. Run with `tests/perf/run_mcp.sh`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tunnel_tests::{bin, token, NodeProc, RelayProc};

const CLI_CALLS: usize = 200;

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let op = NodeProc::start(&relay.url, "bench", &t, "op", "")?;
    let _target = NodeProc::start(&relay.url, "bench", &t, "target", "")?;
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

    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp/drive.py");
    let out = Command::new("python3")
        .arg(driver)
        .arg("bench")
        .env("TUNNEL_BIN", bin("tunnel"))
        .envs(NodeProc::env_of(op.dir.path()))
        .env_remove("TUNNEL_CONFIG")
        .stderr(Stdio::inherit())
        .output()
        .context("running python3 (pip install mcp jsonschema)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("the MCP bench failed: {stdout}");
    }
    let line = stdout.lines().find(|l| l.starts_with('{')).context("no result line from the MCP bench")?;
    let mcp: serde_json::Value = serde_json::from_str(line)?;
    let (p50, p99) = (mcp["p50_ms"].as_f64().unwrap_or(f64::NAN), mcp["p99_ms"].as_f64().unwrap_or(f64::NAN));

    println!("exec `true` on a remote peer through the relay, loopback, same run:");
    println!("  MCP exec tool (stdio, Python SDK), {} calls  p50 {p50:>6.2} ms  p99 {p99:>6.2} ms", mcp["calls"]);
    println!(
        "  CLI `tunnel exec` (new process each), {CLI_CALLS} calls  p50 {:>6.2} ms  p99 {:>6.2} ms",
        pct(&cli, 0.5),
        pct(&cli, 0.99)
    );
    println!("  ratio MCP/CLI p50 {:.2}", p50 / pct(&cli, 0.5));
    Ok(())
}

//! Jobs through real node processes and a real relay: `tunnel exec --detach` and
//! `--job-after`, `tunnel jobs` (list, logs, wait, cancel), jobs outliving their caller,
//! a node restart turning a running job into `lost`, and who may see and stop whose jobs.

use std::time::{Duration, Instant};

use tunnel_tests::{processes_with, token, NodeProc, RelayProc};

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Starts `args` as a detached job from `node`; returns its id.
fn detach(node: &NodeProc, args: &[&str]) -> String {
    let o = node.cli(&[&["exec", "--detach", "target"], args].concat());
    assert_eq!(o.status.code(), Some(0), "exec --detach: {}", err(&o));
    let id = out(&o).trim().to_owned();
    assert!(id.contains('@') && id.split('@').next().unwrap().parse::<u64>().is_ok(), "job id {id:?}");
    id
}

/// The jobs `node` sees on `target`, as JSON objects.
fn jobs(node: &NodeProc, target: &str) -> Vec<serde_json::Value> {
    let o = node.cli(&["jobs", target, "--json"]);
    assert!(o.status.success(), "jobs: {}", err(&o));
    out(&o).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

fn job<'a>(list: &'a [serde_json::Value], id: &str) -> Option<&'a serde_json::Value> {
    list.iter().find(|j| j["id"] == id)
}

/// Kills, when dropped, every process whose command line has one of these markers: a job
/// outlives its node by design, so a failed test must not leave its commands running.
struct Reap(&'static [&'static str]);

impl Drop for Reap {
    fn drop(&mut self) {
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if self.0.iter().any(|m| cmdline.contains(m)) && !cmdline.contains("tunnel") {
                if let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) {
                    let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
                }
            }
        }
    }
}

/// Waits (bounded) until no process has `needle` in its command line.
fn gone(needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with(needle).is_empty() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

#[test]
fn a_detached_command_runs_on_and_is_followed_by_its_id() -> anyhow::Result<()> {
    let (_relay, _t, op, _target) = tunnel_tests::op_and_target("edit")?;
    let id = detach(&op, &["--shell", "echo start; sleep 1.5; echo done >&2; exit 3"]);
    // At once: the command is still running, and listed as such with what it runs.
    let list = jobs(&op, "target");
    let listed = job(&list, &id).expect("the job is listed");
    assert_eq!(listed["state"], "running", "{listed}");
    assert!(listed["command"].as_str().unwrap().contains("sleep 1.5"), "{listed}");
    assert_eq!(listed["target"], "target");
    // Waiting gives its exit code; its output is kept, stdout and stderr in order.
    let o = op.cli(&["jobs", "wait", &id, "--timeout", "20"]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    let o = op.cli(&["jobs", "logs", &id]);
    assert_eq!(out(&o), "start\ndone\n", "{}", err(&o));
    let o = op.cli(&["jobs", "logs", &id, "--tail", "5"]);
    assert_eq!(out(&o), "done\n");
    let o = op.cli(&["jobs", "logs", &id, "--since", "6"]);
    assert_eq!(out(&o), "done\n");
    let list = jobs(&op, "target");
    let ended = job(&list, &id).unwrap();
    assert_eq!((ended["state"].as_str(), ended["exit_code"].as_i64()), (Some("exited"), Some(3)), "{ended}");
    assert_eq!(ended["output_bytes"], 11);

    // --job-after: output streams until then, then the command goes on as a job.
    let o = op.cli(&["exec", "--job-after", "1", "target", "--shell", "echo before; sleep 2; echo after"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let printed = out(&o);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.first(), Some(&"before"), "{}", out(&o));
    let later = lines.last().unwrap().to_string();
    assert!(err(&o).contains(&format!("job {later}")), "{}", err(&o));
    // Following prints everything, the part the caller already saw included, to the end.
    let o = op.cli(&["jobs", "logs", "--follow", &later]);
    assert_eq!(out(&o), "before\nafter\n", "{}", err(&o));
    // A command that ends first is a plain exec and leaves no job behind.
    let before = jobs(&op, "target").len();
    let o = op.cli(&["exec", "--job-after", "5", "target", "--shell", "echo quick; exit 4"]);
    assert_eq!((o.status.code(), out(&o).as_str()), (Some(4), "quick\n"));
    assert_eq!(jobs(&op, "target").len(), before);
    // `tunnel jobs` with no target asks every peer.
    let o = op.cli(&["jobs"]);
    assert!(o.status.success() && out(&o).contains(&id) && out(&o).contains(&later), "{}{}", out(&o), err(&o));
    // Bad ids say what is expected; unknown ones say so.
    let o = op.cli(&["jobs", "logs", "nonsense"]);
    assert!(!o.status.success() && err(&o).contains("NUMBER@NODE"), "{}", err(&o));
    let unknown = format!("999@{}", id.split('@').nth(1).unwrap());
    let o = op.cli(&["jobs", "wait", &unknown]);
    assert!(!o.status.success() && err(&o).contains("no job 999"), "{}", err(&o));
    Ok(())
}

#[test]
fn cancel_stops_the_whole_group_and_a_restart_reports_running_jobs_lost() -> anyhow::Result<()> {
    let _reap = Reap(&["sleep 7311", "sleep 7312", "sleep 7313"]);
    let (relay, t, op, target) = tunnel_tests::op_and_target("edit")?;
    let id = detach(&op, &["--shell", "sleep 7311 & sleep 7312; echo never"]);
    assert!(!processes_with("sleep 7311").is_empty(), "the job runs");
    let o = op.cli(&["jobs", "cancel", &id]);
    assert!(o.status.success() && out(&o).contains("cancelled"), "{}{}", out(&o), err(&o));
    assert!(gone("sleep 7311") && gone("sleep 7312"), "cancel killed the job's whole process group");
    let o = op.cli(&["jobs", "wait", &id]);
    assert_ne!(o.status.code(), Some(0));
    assert!(err(&o).contains("cancelled"), "{}", err(&o));

    // The node stops (killed) while a job runs: after its restart the job is lost, not running.
    let lost = detach(&op, &["--shell", "echo partial; sleep 7313"]);
    std::thread::sleep(Duration::from_millis(300));
    let target = target.restart(&relay.url, "r", &t, &[("TUNNEL_MODE", "edit")])?;
    op.wait_for_peers(&["target"], Duration::from_secs(15))?;
    assert!(gone("sleep 7313"), "nothing of the lost job runs on");
    let list = jobs(&op, "target");
    let j = job(&list, &lost).expect("the lost job is still listed");
    assert_eq!(j["state"], "lost", "{j}");
    assert!(j["reason"].as_str().unwrap().contains("node stopped"), "{j}");
    let o = op.cli(&["jobs", "logs", &lost]);
    assert_eq!(out(&o), "partial\n", "what it wrote before is kept");
    // The earlier jobs are still there, and new ones get new numbers.
    assert!(job(&list, &id).is_some());
    let next = detach(&op, &["--", "true"]);
    assert_ne!(next, id);
    assert_ne!(next, lost);
    drop(target);
    Ok(())
}

#[test]
fn a_caller_sees_and_stops_only_its_own_jobs_and_a_disabled_node_starts_none() -> anyhow::Result<()> {
    let _reap = Reap(&["sleep 7321"]);
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let target = NodeProc::start_with(&relay.url, "r", &t, "target", &[("TUNNEL_MODE", "edit")])?;
    let alice = NodeProc::start(&relay.url, "r", &t, "alice", "")?;
    let mallory = NodeProc::start(&relay.url, "r", &t, "mallory", "")?;
    for n in [&alice, &mallory] {
        n.wait_for_peers(&["target"], Duration::from_secs(10))?;
    }
    let id = detach(&alice, &["--shell", "echo alice-secret; sleep 7321"]);
    // Another member of the room sees nothing of it and cannot read or stop it.
    assert!(job(&jobs(&mallory, "target"), &id).is_none(), "mallory lists alice's job");
    for args in [vec!["jobs", "logs", &id], vec!["jobs", "cancel", &id], vec!["jobs", "wait", &id]] {
        let o = mallory.cli(&args);
        assert!(!o.status.success(), "{args:?} succeeded for another caller");
        assert!(err(&o).contains("may not see or stop jobs"), "{args:?}: {}", err(&o));
        assert!(!out(&o).contains("alice-secret"));
    }
    assert!(!processes_with("sleep 7321").is_empty(), "the job still runs");
    // The node's own operator sees every job; its audit log has the start and the refusals.
    let o = target.cli(&["jobs", "local", "--json"]);
    assert!(out(&o).contains(&id), "{}", err(&o));
    let o = target.cli(&["audit", "tail", "-n", "50", "--event", "job."]);
    let audit = out(&o);
    assert!(audit.contains("job.start") && audit.contains("job.cancel"), "{audit}");
    let o = alice.cli(&["jobs", "cancel", &id]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(gone("sleep 7321"));
    let o = target.cli(&["audit", "tail", "-n", "50", "--event", "job.end"]);
    assert!(out(&o).contains("cancelled"), "{}", out(&o));

    // Disabled: nothing starts, detached or not.
    let o = target.cli(&["mode", "local", "disabled"]);
    assert!(o.status.success(), "{}", err(&o));
    let o = alice.cli(&["exec", "--detach", "target", "--", "touch", "/tmp/never-7322"]);
    assert_eq!(o.status.code(), Some(126), "{}", err(&o));
    assert!(!std::path::Path::new("/tmp/never-7322").exists());
    Ok(())
}

#[test]
fn a_task_runs_the_node_s_configured_agent_as_a_job_under_its_mode() -> anyhow::Result<()> {
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    // A stand-in for an AI command-line agent (no real one can run offline): it says how it
    // was invoked and where.
    let bin = tunnel_tests::TempDir::new("fake-agent");
    let agent = bin.path().join("fake-agent");
    std::fs::write(&agent, "#!/bin/sh\necho \"invoked: $*\"\necho \"in: $(pwd)\"\n")?;
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap_or_default());
    let config = "task_agent = [\"fake-agent\", \"-p\"]\ntask_agent_plan = [\"fake-agent\", \"--read-only\", \"-p\"]\n";
    let env = [("TUNNEL_MODE", "edit"), ("PATH", path.as_str())];
    let target = NodeProc::start_configured(&relay.url, "r", &t, "target", &env, Some(config))?;
    let op = NodeProc::start(&relay.url, "r", &t, "op", "")?;
    op.wait_for_peers(&["target"], Duration::from_secs(10))?;
    target.wait_for_peers(&["op"], Duration::from_secs(10))?;

    let prompt = "fix the flaky build, please";
    let o = op.cli(&["task", "target", prompt, "--cwd", "/tmp"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let id = out(&o).trim().to_owned();
    let o = op.cli(&["jobs", "wait", &id, "--timeout", "20"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let o = op.cli(&["jobs", "logs", &id]);
    assert_eq!(out(&o), format!("invoked: -p {prompt}\nin: /tmp\n"), "the prompt is the agent's last argument");
    // Listings and the audit log carry the prompt's hash and length, never the prompt.
    let listed = jobs(&op, "target");
    let command = job(&listed, &id).unwrap()["command"].as_str().unwrap().to_owned();
    assert!(command.starts_with("fake-agent -p <prompt: 27 bytes, sha256 "), "{command}");
    let audit = std::fs::read_to_string(target.dir.path().join("state/audit.jsonl"))?;
    assert!(audit.contains("\"task.start\"") && audit.contains("\"prompt_bytes\":27"), "{audit}");
    assert!(!audit.contains("flaky"), "the prompt leaked into the audit log");

    // Plan mode: only the agent's read-only invocation runs.
    assert!(target.cli(&["mode", "local", "plan"]).status.success());
    let o = op.cli(&["task", "target", "look around"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let id = out(&o).trim().to_owned();
    assert_eq!(op.cli(&["jobs", "wait", &id, "--timeout", "20"]).status.code(), Some(0));
    assert!(out(&op.cli(&["jobs", "logs", &id])).starts_with("invoked: --read-only -p look around\n"));
    // A node in plan mode that names no read-only invocation, and a disabled node, refuse.
    let o = target.cli(&["task", "op", "anything"]);
    assert_eq!(o.status.code(), Some(126), "{}", err(&o));
    assert!(err(&o).contains("task_agent_plan"), "{}", err(&o));
    assert!(target.cli(&["mode", "local", "disabled"]).status.success());
    let o = op.cli(&["task", "target", "anything"]);
    assert_eq!(o.status.code(), Some(126), "{}", err(&o));
    assert!(err(&o).contains("disabled"), "{}", err(&o));
    Ok(())
}

/// A fleet exec past `--job-after` on 10 peers: the quick targets answer, the slow ones run on
/// as jobs, and one fleet job on the caller's node follows them to the end and reduces what
/// they did; cancelling a fleet job stops every child.
#[test]
fn a_fleet_job_follows_ten_peers_to_their_end() -> anyhow::Result<()> {
    let _reap = Reap(&["sleep 7341"]);
    let relay = RelayProc::start("127.0.0.1:0", &[])?;
    let t = token();
    let names: Vec<String> = (0..10).map(|i| format!("w{i}")).collect();
    let _peers: Vec<NodeProc> = names
        .iter()
        .map(|n| NodeProc::start_with(&relay.url, "r", &t, n, &[("TUNNEL_MODE", "edit")]))
        .collect::<Result<_, _>>()?;
    let op = NodeProc::start(&relay.url, "r", &t, "op", "")?;
    op.wait_for_peers(&names.iter().map(String::as_str).collect::<Vec<_>>(), Duration::from_secs(20))?;
    let all = names.join(",");

    // Each peer's HOME is its own directory, named after it: w0-w4 are quick, w5-w9 slow.
    let script = r#"case "$HOME" in *tunnel-e2e-w[0-4]-*) echo quick;; *) echo slow; sleep 3; echo done;; esac"#;
    let o = op.cli(&["fleet", "exec", &all, "--job-after", "1", "--json", "--shell", script]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(doc["reduction"]["by_status"], serde_json::json!({ "ok": 5, "running": 5 }), "{doc}");
    let running: Vec<&serde_json::Value> =
        doc["targets"].as_array().unwrap().iter().filter(|t| t["status"] == "running").collect();
    assert!(running.iter().all(|t| t["job"].as_str().is_some_and(|j| j.contains('@'))), "{doc}");
    let fleet = doc["job"].as_str().expect("a fleet job").to_owned();

    let o = op.cli(&["jobs", "wait", &fleet, "--timeout", "30"]);
    assert_eq!(o.status.code(), Some(0), "every target succeeded: {}", err(&o));
    let o = op.cli(&["jobs", "logs", &fleet]);
    let log = out(&o);
    for t in &running {
        assert!(log.contains(t["job"].as_str().unwrap()), "the log names each child job: {log}");
        assert!(log.contains(&format!("{}: ok exit 0", t["name"].as_str().unwrap())), "{log}");
    }
    assert!(log.contains("5 ok exit 0: w[0-4]") && log.contains("5 ok exit 0: w[5-9]"), "{log}");
    assert!(log.contains("    done"), "the slow ones' output is in the summary: {log}");
    let o = op.cli(&["jobs", "local", "--json"]);
    let listed: Vec<serde_json::Value> = out(&o).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let j = job(&listed, &fleet).expect("the fleet job is the caller's node's");
    assert_eq!((j["state"].as_str(), j["exit_code"].as_i64()), (Some("exited"), Some(0)), "{j}");
    assert!(j["command"].as_str().unwrap().starts_with("fleet: "), "{j}");

    // --detach: every target runs it as a job; cancelling the fleet job stops them all.
    let o = op.cli(&["fleet", "exec", &all, "--detach", "--shell", "sleep 7341"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let fleet = out(&o).lines().last().unwrap_or_default().to_owned();
    assert!(err(&o).contains("10 still running as jobs"), "{}", err(&o));
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with("sleep 7341").len() < 10 {
        assert!(Instant::now() < deadline, "the 10 jobs run");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = op.cli(&["jobs", "cancel", &fleet]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(gone("sleep 7341"), "cancelling the fleet job stopped every child");
    let o = op.cli(&["jobs", "wait", &fleet, "--timeout", "30"]);
    assert_ne!(o.status.code(), Some(0));
    let o = op.cli(&["jobs", "logs", &fleet]);
    assert!(out(&o).contains("10 failed") && out(&o).contains("cancelled"), "{}", out(&o));
    Ok(())
}

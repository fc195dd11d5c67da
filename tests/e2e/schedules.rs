//! Schedules through real node processes and a real relay: seconds-level schedules that fire
//! on time as jobs, survive a restart of their node (missed runs reported, caught up or
//! skipped as each says), obey a lowered mode at once, and refuse bad input clearly.

use std::time::{Duration, Instant};

use tunnel_tests::TempDir;

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_lines(o: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(o.status.success(), "{}", err(o));
    out(o).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

fn lines_in(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map(|s| s.lines().count()).unwrap_or(0)
}

/// Waits (bounded) for `cond`.
fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

#[test]
fn schedules_fire_on_time_survive_a_restart_and_obey_a_lowered_mode() -> anyhow::Result<()> {
    let (relay, t, op, target) = tunnel_tests::op_and_target("edit")?;
    let scratch = TempDir::new("schedules");
    let ticks = scratch.path().join("ticks");
    let caught = scratch.path().join("caught");
    let add = |name: &str, file: &std::path::Path, extra: &[&str]| {
        let script = format!("echo tick >> {}; echo ran", file.display());
        let mut args =
            vec!["schedule", "add", "target", "--cron", "*/2 * * * * *", "--name", name, "--timezone", "UTC"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--shell", &script]);
        op.cli(&args)
    };
    let o = add("tick", &ticks, &[]);
    assert!(o.status.success() && out(&o).starts_with("tick@"), "{}{}", out(&o), err(&o));
    let id = out(&o).split_whitespace().next().unwrap().to_owned();
    let o = add("catch", &caught, &["--catch-up"]);
    assert!(o.status.success(), "{}", err(&o));
    let catch_id = out(&o).split_whitespace().next().unwrap().to_owned();

    // It fires every two seconds, each run a job that ran the command.
    assert!(eventually(Duration::from_secs(10), || lines_in(&ticks) >= 2), "two runs within 10 s");
    let runs = json_lines(&op.cli(&["schedule", "runs", &id, "-n", "5", "--json"]));
    let done: Vec<_> = runs.iter().filter(|r| r["state"] == "exited").collect();
    assert!(!done.is_empty(), "{runs:?}");
    assert!(done.iter().all(|r| r["exit_code"] == 0 && r["tail"] == "ran\n"), "{runs:?}");
    // On time: each run starts within a second of its even second.
    for r in &runs {
        let late = r["at_ms"].as_i64().unwrap() % 2000;
        assert!(late < 1000, "a run started {late} ms after its time: {r}");
    }
    let list = json_lines(&op.cli(&["schedule", "list", "target", "--json"]));
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().any(|s| s["id"] == id && s["cron"] == "*/2 * * * * *"), "{list:?}");

    // The node is down through a few run times, then back: both schedules are still there;
    // the missed runs are reported, skipped by one and run once by the other.
    let target = {
        let mut target = target;
        target.proc.kill();
        std::thread::sleep(Duration::from_millis(4500));
        target.restart(&relay.url, "r", &t, &[("TUNNEL_MODE", "edit")])?
    };
    op.wait_for_peers(&["target"], Duration::from_secs(15))?;
    let runs = json_lines(&op.cli(&["schedule", "runs", &id, "-n", "20", "--json"]));
    let skipped = runs.iter().find(|r| r["missed"].as_u64().unwrap_or(0) >= 2).expect("a run reports the missed times");
    assert!(skipped["error"].as_str().unwrap().contains("skipped"), "{skipped}");
    assert!(skipped["job"].is_null());
    let runs = json_lines(&op.cli(&["schedule", "runs", &catch_id, "-n", "20", "--json"]));
    let caught_up = runs.iter().find(|r| r["missed"].as_u64().unwrap_or(0) >= 2).expect("the catch-up run");
    assert!(caught_up["job"].is_string(), "caught up with one run: {caught_up}");
    assert_eq!(json_lines(&op.cli(&["schedule", "list", "target", "--json"])).len(), 2);

    // Lowered to plan: the shell command is no longer allowed, so runs are refused, at once.
    let o = target.cli(&["mode", "local", "plan"]);
    assert!(o.status.success(), "{}", err(&o));
    std::thread::sleep(Duration::from_millis(500));
    let before = lines_in(&ticks);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(lines_in(&ticks), before, "a run happened in plan mode");
    let runs = json_lines(&op.cli(&["schedule", "runs", &id, "-n", "1", "--json"]));
    assert!(runs[0]["error"].as_str().unwrap_or("").contains("refused"), "{runs:?}");
    let o = op.cli(&["schedule", "run-now", &id]);
    assert!(!o.status.success() && err(&o).contains("refused"), "{}", err(&o));

    // Removed: gone from the list, and it runs no more.
    let o = op.cli(&["schedule", "rm", &id]);
    assert!(o.status.success(), "{}", err(&o));
    let list = json_lines(&op.cli(&["schedule", "list", "target", "--json"]));
    assert!(list.iter().all(|s| s["id"] != id), "{list:?}");
    let o = target.cli(&["audit", "tail", "-n", "200", "--event", "schedule."]);
    for event in ["schedule.add", "schedule.run", "schedule.rm"] {
        assert!(out(&o).contains(event), "{event} is audited: {}", out(&o));
    }
    drop(target);
    Ok(())
}

#[test]
fn bad_schedules_are_refused_naming_what_is_wrong() -> anyhow::Result<()> {
    let (_relay, _t, op, _target) = tunnel_tests::op_and_target("plan")?;
    for (args, says) in [
        (vec!["--cron", "61 * * * *", "--", "uptime"], "minute: 61"),
        (vec!["--cron", "* * *", "--", "uptime"], "5 fields"),
        (vec!["--cron", "* * * * *", "--timezone", "Mars/Olympus", "--", "uptime"], "Mars/Olympus"),
        (vec!["--cron", "* * * * *", "--name", "../x", "--", "uptime"], "schedule name"),
        // Policy now, not only at each run: plan mode refuses a shell command.
        (vec!["--cron", "* * * * *", "--shell", "touch /tmp/x"], "plan"),
    ] {
        let o = op.cli(&[&["schedule", "add", "target"], &args[..]].concat());
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(err(&o).contains(says), "{args:?}: {}", err(&o));
    }
    let ok = op.cli(&["schedule", "add", "target", "--cron", "0 0 1 1 *", "--name", "yearly", "--", "uptime"]);
    assert!(ok.status.success(), "{}", err(&ok));
    let again = op.cli(&["schedule", "add", "target", "--cron", "0 0 1 1 *", "--name", "yearly", "--", "uptime"]);
    assert!(!again.status.success() && err(&again).contains("exists"), "{}", err(&again));
    let o = op.cli(&["schedule", "rm", "nonsense"]);
    assert!(!o.status.success() && err(&o).contains("NAME@PEER"), "{}", err(&o));
    Ok(())
}

#[test]
fn a_schedule_stops_when_its_creator_loses_access_to_the_node() -> anyhow::Result<()> {
    let (relay, t, op, target) = tunnel_tests::op_and_target("edit")?;
    let scratch = TempDir::new("schedules-revoked");
    let ticks = scratch.path().join("ticks");
    let script = format!("echo tick >> {}", ticks.display());
    let o = op.cli(&["schedule", "add", "target", "--cron", "* * * * * *", "--name", "ticker", "--shell", &script]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(eventually(Duration::from_secs(10), || lines_in(&ticks) >= 1), "it runs while its creator may");
    // The operator of `target` drops `op` from the allow list (only the node itself remains).
    let own_id = out(&target.cli(&["id"])).split_whitespace().next().unwrap_or_default().to_owned();
    let mut target = target;
    target.proc.kill();
    let config = target.dir.path().join("config/tunnel/config.toml");
    std::fs::create_dir_all(config.parent().unwrap())?;
    std::fs::write(&config, format!("allow = [\"{own_id}\"]\n"))?;
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let target = target.restart(&relay.url, "r", &t, &[("TUNNEL_MODE", "edit")])?;
    std::thread::sleep(Duration::from_millis(2500));
    let before = lines_in(&ticks);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lines_in(&ticks), before, "the schedule of a node no longer allowed still ran");
    let runs = json_lines(&target.cli(&["schedule", "runs", "ticker@local", "-n", "1", "--json"]));
    let why = runs[0]["error"].as_str().unwrap_or_default();
    assert!(why.contains("creator may no longer run commands here"), "{runs:?}");
    Ok(())
}

//! `tunnel schedule`: commands peers run by themselves on a cron schedule. A schedule lives on
//! its peer (`NAME@PEER`), which answers every operation under its own policy.

use anyhow::{bail, Context};
use tunnel_proto::message::{ExecCommand, Op, Reply};
use tunnel_proto::schedule::{ScheduleInfo, ScheduleRun, ScheduleSpec};

use crate::args::{Global, ScheduleCommand};

/// `NAME@PEER` as `(name, peer)`.
fn split_ref(id: &str) -> anyhow::Result<(String, String)> {
    match id.split_once('@') {
        Some((name, peer)) if !name.is_empty() && !peer.is_empty() => Ok((name.into(), peer.into())),
        _ => bail!("{id:?} is not a schedule: expected NAME@PEER, as `tunnel schedule list` prints"),
    }
}

pub(crate) async fn run(global: Global, cmd: ScheduleCommand) -> anyhow::Result<i32> {
    match cmd {
        ScheduleCommand::Add { target, cron, name, timezone, catch_up, timeout, cwd, shell, argv } => {
            let command = crate::exec::command_of(shell, argv, "tunnel schedule add PEER --cron EXPR")?;
            let name = name.unwrap_or_else(|| default_name(&command));
            let timeout_ms = timeout.map(crate::exec::millis_of).transpose()?;
            let spec = ScheduleSpec { name, command, cwd, cron, timezone, catch_up, timeout_ms };
            let Reply::Schedule(info) = crate::remote::request(&global, &target, Op::ScheduleAdd { spec }).await?
            else {
                bail!("unexpected answer from {target}");
            };
            outln!("{}@{}  next run {}", info.spec.name, info.node.short(), when(info.next_ms));
            Ok(0)
        }
        ScheduleCommand::List { target, json } => list(&global, target.as_deref().unwrap_or("all"), json).await,
        ScheduleCommand::Rm { id } => {
            let (name, peer) = split_ref(&id)?;
            crate::remote::request(&global, &peer, Op::ScheduleRemove { name }).await?;
            outln!("removed {id}");
            Ok(0)
        }
        ScheduleCommand::Runs { id, n, json } => {
            let (name, peer) = split_ref(&id)?;
            let Reply::ScheduleRuns(runs) =
                crate::remote::request(&global, &peer, Op::ScheduleRuns { name, limit: n }).await?
            else {
                bail!("unexpected answer from {peer}");
            };
            for run in &runs {
                print_run(run, json)?;
            }
            Ok(0)
        }
        ScheduleCommand::RunNow { id } => {
            let (name, peer) = split_ref(&id)?;
            let Reply::ScheduleRuns(runs) = crate::remote::request(&global, &peer, Op::ScheduleRunNow { name }).await?
            else {
                bail!("unexpected answer from {peer}");
            };
            let run = runs.first().context("no run in the answer")?;
            match (&run.job, &run.error) {
                (Some(job), _) => {
                    outln!("{}", job.reference());
                    Ok(0)
                }
                (None, Some(why)) => {
                    eprintln!("tunnel: {why}");
                    Ok(1)
                }
                (None, None) => bail!("the run started no job and gave no reason"),
            }
        }
    }
}

fn default_name(command: &ExecCommand) -> String {
    let base = match command {
        ExecCommand::Argv(a) => a.first().map(|p| p.rsplit('/').next().unwrap_or(p)).unwrap_or("cmd"),
        ExecCommand::Shell(_) => "shell",
    };
    let base: String = base.chars().filter(|c| c.is_ascii_alphanumeric() || "-_".contains(*c)).take(40).collect();
    format!("{}-{:04x}", if base.is_empty() { "cmd" } else { &base }, rand::random::<u16>())
}

fn when(ms: Option<i64>) -> String {
    match ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()) {
        Some(t) => t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => "never (the expression matches no time ahead)".into(),
    }
}

async fn list(global: &Global, target: &str, json: bool) -> anyhow::Result<i32> {
    let mut rows: Vec<ScheduleInfo> = Vec::new();
    let failed = crate::remote::ask_each(global, target, Op::Schedules, |_, reply| match reply {
        Reply::Schedules(list) => {
            rows.extend(list);
            None
        }
        other => Some(other),
    })
    .await?;
    for s in &rows {
        let id = format!("{}@{}", s.spec.name, s.node.short());
        let last = s.last.as_ref().map(run_summary).unwrap_or_else(|| "-".into());
        if json {
            let v = serde_json::json!({
                "id": id, "cron": s.spec.cron, "timezone": s.spec.timezone, "catch_up": s.spec.catch_up,
                "command": s.spec.command.to_line(), "next_ms": s.next_ms, "last": last,
                "last_job": s.last.as_ref().and_then(|r| r.job.as_ref()).map(|j| j.reference().to_string()),
            });
            outln!("{v}");
        } else {
            let tz = s.spec.timezone.as_deref().unwrap_or("local");
            outln!(
                "{id:<24} {:<16} {tz:<14} next {}  last {last}  {}",
                s.spec.cron,
                when(s.next_ms),
                s.spec.command.to_line()
            );
        }
    }
    if rows.is_empty() && !json {
        outln!("no schedules");
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

fn run_summary(run: &ScheduleRun) -> String {
    let mut out = match (&run.job, &run.error) {
        (Some(job), _) => format!("{} {}", job.reference(), crate::jobs::describe(job)),
        (None, Some(why)) => why.clone(),
        (None, None) => "-".into(),
    };
    if run.missed > 0 {
        out.push_str(&format!(" (after {} missed)", run.missed));
    }
    out
}

fn print_run(run: &ScheduleRun, json: bool) -> anyhow::Result<()> {
    if json {
        let v = serde_json::json!({
            "at_ms": run.at_ms, "job": run.job.as_ref().map(|j| j.reference().to_string()),
            "state": run.job.as_ref().map(|j| j.state.as_str()), "exit_code": run.job.as_ref().and_then(|j| j.exit_code),
            "error": run.error, "missed": run.missed, "tail": String::from_utf8_lossy(&run.tail.0),
        });
        outln!("{v}");
        return Ok(());
    }
    outln!("{}  {}", when(Some(run.at_ms)), run_summary(run));
    let tail = String::from_utf8_lossy(&run.tail.0);
    for line in tail.lines() {
        outln!("    {line}");
    }
    Ok(())
}

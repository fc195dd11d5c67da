//! The `schedules` tool: one tool, an `action` per operation (add, list, rm, runs, run_now),
//! so that schedules cost an agent one entry in its tool list. A schedule lives on the node
//! that runs it (`NAME@NODE`), which answers under its own policy.

use rmcp::model::CallToolResult;
use rmcp::ErrorData as McpError;
use tunnel_node::control::{ControlRequest, ControlResponse};
use tunnel_proto::message::{Op, Reply};
use tunnel_proto::schedule::{ScheduleInfo, ScheduleRun, ScheduleSpec};

use crate::ops_node::next_step;
use crate::params_jobs::*;
use crate::server::{failure, invalid, success, TunnelMcp};

const TOOL: &str = "schedules";

fn schedule_out(s: &ScheduleInfo) -> ScheduleOut {
    ScheduleOut {
        schedule: format!("{}@{}", s.spec.name, s.node.short()),
        cron: s.spec.cron.clone(),
        timezone: s.spec.timezone.clone(),
        command: s.spec.command.to_line(),
        next_ms: s.next_ms,
    }
}

fn run_out(r: &ScheduleRun) -> ScheduleRunOut {
    ScheduleRunOut {
        at_ms: r.at_ms,
        job: r.job.as_ref().map(JobOut::from),
        error: r.error.clone(),
        missed: r.missed,
        tail: String::from_utf8_lossy(&r.tail.0).into_owned(),
    }
}

fn need<'a>(field: &str, value: &'a Option<String>, action: &str) -> Result<&'a str, McpError> {
    value.as_deref().filter(|v| !v.is_empty()).ok_or_else(|| invalid(TOOL, field, &format!("{action} needs `{field}`")))
}

/// `NAME@NODE` as `(name, node)`.
fn split(name: &str) -> Result<(String, String), McpError> {
    match name.split_once('@') {
        Some((n, node)) if !n.is_empty() && !node.is_empty() => Ok((n.into(), node.into())),
        _ => Err(invalid(TOOL, "name", &format!("field `name`: {name:?} is not NAME@NODE, as `list` shows schedules"))),
    }
}

async fn ask(srv: &TunnelMcp, target: &str, op: Op) -> Result<Reply, String> {
    match srv.backend().request(&ControlRequest::Request { target: target.to_owned(), op }).await {
        Ok(ControlResponse::Reply(r)) => Ok(r),
        Ok(other) => Err(format!("unexpected answer from the local node: {other:?}")),
        Err(e) => Err(next_step(target, &e)),
    }
}

pub(crate) async fn schedules(srv: &TunnelMcp, p: ScheduleParams) -> Result<CallToolResult, McpError> {
    let mut out = SchedulesOut { schedules: Vec::new(), runs: Vec::new(), errors: Vec::new() };
    match p.action {
        ScheduleAction::Add => {
            let target = need("target", &p.target, "add")?.to_owned();
            let cron = need("cron", &p.cron, "add")?.to_owned();
            let command = crate::ops_exec::command_of(TOOL, &p.argv, &p.shell)?;
            let name = p.name.clone().unwrap_or_else(|| format!("agent-{:04x}", rand::random::<u16>()));
            let spec = ScheduleSpec {
                name,
                command,
                cwd: None,
                cron,
                timezone: p.timezone.clone(),
                catch_up: p.catch_up.unwrap_or(false),
                timeout_ms: None,
            };
            match ask(srv, &target, Op::ScheduleAdd { spec }).await {
                Ok(Reply::Schedule(info)) => out.schedules.push(schedule_out(&info)),
                Ok(other) => return failure(format!("unexpected answer: {other:?}")),
                Err(e) => return failure(e),
            }
            let s = &out.schedules[0];
            let text = format!(
                "added {}; next run at {} ms since the epoch. Each run is a job: `schedules` runs with name {} shows them.",
                s.schedule,
                s.next_ms.map_or("never".into(), |t| t.to_string()),
                s.schedule
            );
            success(&out, text)
        }
        ScheduleAction::List => {
            let target = p.target.clone().unwrap_or_else(|| "all".into());
            let answers = match crate::ops_node::ask_each(srv, &target, Op::Schedules).await {
                Ok(a) => a,
                Err(e) => return failure(e),
            };
            for (name, answer) in answers {
                match answer {
                    Ok(Reply::Schedules(list)) => out.schedules.extend(list.iter().map(schedule_out)),
                    Ok(other) => out.errors.push(format!("{name}: unexpected answer {other:?}")),
                    Err(e) => out.errors.push(format!("{name}: {e}")),
                }
            }
            let mut text = format!("{} schedules", out.schedules.len());
            for s in &out.schedules {
                text.push_str(&format!(
                    "\n{} `{}` {}: {}",
                    s.schedule,
                    s.cron,
                    s.timezone.as_deref().unwrap_or("local"),
                    s.command
                ));
            }
            for e in &out.errors {
                text.push_str(&format!("\n{e}"));
            }
            success(&out, text)
        }
        action => {
            let (name, node) = split(need("name", &p.name, "this action")?)?;
            let op = match action {
                ScheduleAction::Rm => Op::ScheduleRemove { name },
                ScheduleAction::Runs => Op::ScheduleRuns { name, limit: 10 },
                _ => Op::ScheduleRunNow { name },
            };
            match ask(srv, &node, op).await {
                Ok(Reply::Schedule(info)) => {
                    out.schedules.push(schedule_out(&info));
                    success(&out, format!("removed {}", out.schedules[0].schedule))
                }
                Ok(Reply::ScheduleRuns(runs)) => {
                    out.runs = runs.iter().map(run_out).collect();
                    let mut text = format!("{} runs, newest first", out.runs.len());
                    for r in &out.runs {
                        let what = match (&r.job, &r.error) {
                            (Some(j), _) => format!("job {} {}", j.job, j.state),
                            (None, Some(e)) => e.clone(),
                            (None, None) => "-".into(),
                        };
                        text.push_str(&format!("\nat {} ms: {what}", r.at_ms));
                        if !r.tail.is_empty() {
                            text.push('\n');
                            text.push_str(&crate::fence::fenced("the end of its output", &r.tail));
                        }
                    }
                    success(&out, text)
                }
                Ok(other) => failure(format!("unexpected answer: {other:?}")),
                Err(e) => failure(e),
            }
        }
    }
}

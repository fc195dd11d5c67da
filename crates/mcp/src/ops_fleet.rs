//! The fleet tools: one operation on many nodes, answered as groups of identical results
//! plus a bounded list of failures; and mapreduce. Progress is reported as targets (or
//! partitions) finish; cancelling the call cancels everything still running.

use std::time::{Duration, Instant};

use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use tunnel_node::control::{ControlRequest, ControlResponse, FleetAction, JobInput, FLEET_WRITE_MAX};
use tunnel_node::fleet::reduce::{cut, reduce, GroupBy, Limits, Reduction};
use tunnel_node::fleet::{FleetOptions, Status, TargetResult};
use tunnel_node::mapreduce::{JobSpec, Phase, TaskStats};
use tunnel_proto::message::ExecSpec;

use crate::ops_exec::{command_of, timeout_of};
use crate::ops_files::{check_path, decode_content, parse_mode};
use crate::ops_node::next_step;
use crate::params_fleet::*;
use crate::progress::{human_bytes, Progress};
use crate::server::{check_target, failure, invalid, success, TunnelMcp};

const FLEET_TIMEOUT: Duration = Duration::from_secs(60);
const JOB_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_CONCURRENCY: u32 = 64;
const DEFAULT_SAMPLE: u64 = 16 * 1024;
const DEFAULT_FAILURES: u32 = 20;
/// Bytes of a failed target's stderr listed.
const FAILURE_STDERR: usize = 300;
/// Retried partitions listed at most.
const RETRIED_MAX: usize = 20;

fn group_by(tool: &str, by: GroupByName, normalize: &Option<String>) -> Result<GroupBy, McpError> {
    let name = match by {
        GroupByName::Output => "output",
        GroupByName::Exit => "exit",
    };
    GroupBy::parse(name, normalize.as_deref())
        .map_err(|e| invalid(tool, "normalize", &format!("field `normalize`: {e}")))
}

fn options(tool: &str, concurrency: Option<u32>, timeout: Option<f64>) -> Result<FleetOptions, McpError> {
    let concurrency = concurrency.unwrap_or(DEFAULT_CONCURRENCY);
    if concurrency == 0 {
        return Err(invalid(tool, "concurrency", "field `concurrency` must be at least 1"));
    }
    let timeout = timeout_of(tool, timeout, FLEET_TIMEOUT)?;
    Ok(FleetOptions { concurrency, timeout_ms: timeout.as_millis() as u64 })
}

pub(crate) async fn fleet_exec(
    srv: &TunnelMcp,
    p: FleetExecParams,
    ctx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    const TOOL: &str = "fleet_exec";
    check_target(TOOL, &p.target)?;
    let spec = ExecSpec {
        request_id: 0,
        command: command_of(TOOL, &p.argv, &p.shell)?,
        env: p.env.clone().unwrap_or_default().into_iter().collect(),
        cwd: p.cwd.clone(),
        timeout_ms: None,
        output_cap: p.max_output_bytes.unwrap_or(DEFAULT_SAMPLE).min(crate::MAX_OUTPUT_CEILING),
        stdin: false,
    };
    let by = group_by(TOOL, p.group_by, &p.normalize)?;
    let opts = options(TOOL, p.concurrency, p.timeout_secs)?;
    let max_failures = p.max_failures.unwrap_or(DEFAULT_FAILURES);
    // A command may run long: past `job_after` it goes on as a job on each node still running
    // it, killed only at its own timeout.
    let after = crate::ops_exec::job_after_of(TOOL, srv, p.job_after_secs)?;
    let timeout = timeout_of(TOOL, p.timeout_secs, crate::ops_exec::EXEC_TIMEOUT)?;
    let spec = ExecSpec { timeout_ms: Some(timeout.as_millis() as u64), ..spec };
    let action = FleetAction::ExecJob { spec, after_ms: after.as_millis() as u64 };
    fan_out(srv, ctx, p.target, action, opts, None, by, max_failures).await
}

pub(crate) async fn fleet_read(
    srv: &TunnelMcp,
    p: FleetReadParams,
    ctx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    const TOOL: &str = "fleet_read";
    check_path(TOOL, &p.target, &p.path)?;
    let by = group_by(TOOL, p.group_by, &p.normalize)?;
    let opts = options(TOOL, p.concurrency, p.timeout_secs)?;
    let max_bytes = p.max_bytes.unwrap_or(DEFAULT_SAMPLE).min(crate::MAX_OUTPUT_CEILING);
    let action = FleetAction::Read { path: p.path, max_bytes };
    fan_out(srv, ctx, p.target, action, opts, None, by, p.max_failures.unwrap_or(DEFAULT_FAILURES)).await
}

pub(crate) async fn fleet_write(
    srv: &TunnelMcp,
    p: FleetWriteParams,
    ctx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    const TOOL: &str = "fleet_write";
    check_path(TOOL, &p.target, &p.path)?;
    let mode = parse_mode(&p.mode)?;
    let content = decode_content(TOOL, p.content, p.encoding)?;
    if content.len() as u64 > FLEET_WRITE_MAX {
        return Err(invalid(TOOL, "content", &format!("a fleet write carries at most {} MiB", FLEET_WRITE_MAX >> 20)));
    }
    let opts = options(TOOL, p.concurrency, p.timeout_secs)?;
    let action = FleetAction::Write { path: p.path, mode, size: content.len() as u64 };
    let max_failures = p.max_failures.unwrap_or(DEFAULT_FAILURES);
    fan_out(srv, ctx, p.target, action, opts, Some(content), GroupBy::Output, max_failures).await
}

#[allow(clippy::too_many_arguments)]
async fn fan_out(
    srv: &TunnelMcp,
    ctx: &RequestContext<RoleServer>,
    target: String,
    action: FleetAction,
    options: FleetOptions,
    content: Option<Vec<u8>>,
    by: GroupBy,
    max_failures: u32,
) -> Result<CallToolResult, McpError> {
    let started = Instant::now();
    let exec = matches!(action, FleetAction::ExecJob { .. });
    let request = ControlRequest::Fleet { target: target.clone(), action, options };
    let mut call = match srv.backend().call(&request, content.as_deref()).await {
        Ok(c) => c,
        Err(e) => return failure(e),
    };
    let mut progress = Progress::new(ctx);
    let (mut total, mut failed) = (0usize, 0usize);
    let mut results: Vec<TargetResult> = Vec::new();
    let mut job = None;
    loop {
        let answer = tokio::select! {
            // Returning drops the call; the node cancels what still runs.
            _ = ctx.ct.cancelled() => return failure("cancelled; commands still running were killed"),
            answer = call.next() => answer,
        };
        match answer {
            Ok(ControlResponse::Targets(t)) => total = t.len(),
            Ok(ControlResponse::FleetJob(info)) => job = Some(info.reference().to_string()),
            Ok(ControlResponse::FleetResult(r)) => {
                failed += usize::from(r.status.is_failure());
                results.push(r);
                let msg = format!("{}/{total} done, {failed} failed", results.len());
                progress.report(results.len() as f64, Some(total as f64), msg).await;
            }
            Ok(ControlResponse::Done) => break,
            Ok(other) => return failure(format!("unexpected answer from the local node: {other:?}")),
            Err(e) => return failure(fleet_next_step(&target, &e)),
        }
    }
    let reduction = reduce(&results, &by, Limits::default());
    let out = fleet_out(target, &reduction, &results, max_failures, started.elapsed());
    let text = crate::fleet_text::fleet_text(&out, job.as_deref());
    let mut result = match exec {
        true => success(&FleetExecOut { fleet: out, job }, text)?,
        false => success(&out, text)?,
    };
    let none_ok = [Status::Ok, Status::Running].iter().all(|s| !reduction.by_status.contains_key(s));
    if !reduction.all_ok() && none_ok {
        result.is_error = Some(true);
    }
    Ok(result)
}

fn fleet_next_step(target: &str, error: &str) -> String {
    if error.contains("selects no peers") || error.contains("no peer named") {
        format!("{error}. Call `peers` to see the nodes, their tags and OS.")
    } else {
        next_step(target, error)
    }
}

pub(crate) fn fleet_out(
    target: String,
    red: &Reduction,
    results: &[TargetResult],
    max_failures: u32,
    took: Duration,
) -> FleetOut {
    let mut failed: Vec<&TargetResult> = results.iter().filter(|r| r.status.is_failure()).collect();
    failed.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    let shown = failed.len().min(max_failures as usize);
    FleetOut {
        target,
        total: red.total as u64,
        by_status: red.by_status.iter().map(|(s, n)| (s.as_str().to_owned(), *n as u64)).collect(),
        groups: red
            .groups
            .iter()
            .map(|g| GroupOut {
                count: g.count as u64,
                status: g.status.as_str().to_owned(),
                exit_code: g.exit_code,
                stdout: g.stdout.clone(),
                stderr: g.stderr.clone(),
                error: g.error.clone(),
                members: g.members.clone(),
            })
            .collect(),
        groups_omitted: red.groups_omitted as u64,
        targets_omitted: red.targets_omitted as u64,
        failures: failed[..shown]
            .iter()
            .map(|r| FailureOut {
                name: r.name.clone(),
                id: r.id.clone(),
                status: r.status.as_str().to_owned(),
                exit_code: r.exit_code,
                error: r.error.as_deref().map(|e| cut(e, FAILURE_STDERR)),
                stderr: tail(&r.stderr, FAILURE_STDERR),
            })
            .collect(),
        failures_omitted: (failed.len() - shown) as u64,
        duration_ms: took.as_millis() as u64,
    }
}

/// The last `max` bytes of `text`, on a character boundary.
fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

pub(crate) async fn mapreduce(
    srv: &TunnelMcp,
    p: MapreduceParams,
    ctx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    const TOOL: &str = "mapreduce";
    check_target(TOOL, &p.target)?;
    for (field, value) in [("map", &p.map), ("reduce", &p.reduce)] {
        if value.trim().is_empty() {
            return Err(invalid(TOOL, field, &format!("field `{field}` is empty")));
        }
    }
    let (input, content) = match (p.input, p.input_file) {
        (Some(text), None) => (JobInput::Inline { size: text.len() as u64 }, Some(text.into_bytes())),
        (None, Some(file)) => {
            let (node, path) = match tunnel_node::fleet::targets::split_remote(&file) {
                Some((node, path)) => (node.to_owned(), path.to_owned()),
                None => (tunnel_node::LOCAL_TARGET.to_owned(), file),
            };
            if !path.starts_with('/') {
                return Err(invalid(
                    TOOL,
                    "input_file",
                    "field `input_file` must be NODE:/absolute/path or /absolute/path",
                ));
            }
            (JobInput::File { target: node, path }, None)
        }
        (Some(_), Some(_)) => return Err(invalid(TOOL, "input", "give either `input` or `input_file`, not both")),
        (None, None) => return Err(invalid(TOOL, "input", "give the input as `input` (text) or `input_file`")),
    };
    let job = JobSpec {
        map: p.map,
        reduce: p.reduce,
        partitions: p.partitions.unwrap_or(0),
        reducers: p.reducers.unwrap_or(1).max(1),
        retries: p.retries.unwrap_or(2),
        timeout_ms: timeout_of(TOOL, p.timeout_secs, JOB_TIMEOUT)?.as_millis() as u64,
        output_cap: srv.cap(p.max_output_bytes),
        // An agent's reduce runs on the node, under its policy.
        caller_reduces: false,
    };
    let request = ControlRequest::MapReduce { target: p.target.clone(), job, input };
    let mut call = match srv.backend().call(&request, content.as_deref()).await {
        Ok(c) => c,
        Err(e) => return failure(e),
    };
    let mut progress = Progress::new(ctx);
    let mut output = Vec::new();
    let report = loop {
        let answer = tokio::select! {
            _ = ctx.ct.cancelled() => return failure("cancelled; the job's commands were killed"),
            answer = call.next() => answer,
        };
        match answer {
            Ok(ControlResponse::Targets(_)) => {}
            Ok(ControlResponse::JobProgress(pr)) => {
                // Map steps count first, reduce steps after them: progress only grows.
                let (phase, step) = match pr.phase {
                    Phase::Map => ("map", f64::from(pr.done)),
                    Phase::Reduce => ("reduce", 1e6 + f64::from(pr.done)),
                };
                let msg =
                    format!("{phase}: {}/{} done, {} running, {} retried", pr.done, pr.total, pr.running, pr.retried);
                progress.report(step, None, msg).await;
            }
            Ok(ControlResponse::JobOutput(bytes)) => output.extend_from_slice(&bytes.0),
            Ok(ControlResponse::JobDone(report)) => break report,
            Ok(other) => return failure(format!("unexpected answer from the local node: {other:?}")),
            Err(e) => return failure(fleet_next_step(&p.target, &e)),
        }
    };
    let retried = |kind: &str, stats: &[TaskStats]| -> Vec<RetriedOut> {
        stats
            .iter()
            .filter(|s| s.attempts > 1)
            .map(|s| RetriedOut {
                kind: kind.to_owned(),
                number: s.index + 1,
                attempts: s.attempts,
                target: s.target.clone(),
                failures: s.failures.clone(),
            })
            .collect()
    };
    let mut all_retried = retried("partition", &report.partitions);
    all_retried.extend(retried("reducer", &report.reducers));
    all_retried.truncate(RETRIED_MAX);
    let out = MapreduceOut {
        target: p.target,
        output: String::from_utf8_lossy(&output).into_owned(),
        output_bytes: report.output_bytes,
        truncated: report.truncated,
        input_bytes: report.input_bytes,
        partitions: report.partitions.len() as u32,
        reducers: report.reducers.len() as u32,
        retried: all_retried,
        map_ms: report.map_ms,
        reduce_ms: report.reduce_ms,
    };
    let mut text = format!(
        "{} of input in {} partitions over {}; map {} ms, reduce {} ms{}",
        human_bytes(out.input_bytes),
        out.partitions,
        out.target,
        out.map_ms,
        out.reduce_ms,
        if out.retried.is_empty() { String::new() } else { format!(", {} retried", out.retried.len()) },
    );
    text.push('\n');
    text.push_str(&crate::fence::fenced("reduce output", &out.output));
    if out.truncated {
        text.push_str(&format!("\n[output truncated: {} shown]", human_bytes(output.len() as u64)));
    }
    success(&out, text)
}

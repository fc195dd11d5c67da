//! The job tools: `jobs`, `job_status`, `job_output`, `job_wait`, `job_cancel`. A job lives on
//! the node that runs it (`SEQ@NODE`); each tool asks that node, which answers under its own
//! policy. Answers stay small and say what to call next.

use std::time::{Duration, Instant};

use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use tunnel_node::control::{ControlRequest, ControlResponse};
use tunnel_proto::job::{JobInfo, JobRef, OutputFrom};
use tunnel_proto::message::{Op, Reply};

use crate::ops_node::next_step;
use crate::params_jobs::*;
use crate::progress::{human_bytes, Progress};
use crate::server::{failure, invalid, success, TunnelMcp};

/// Output bytes one `job_output` returns unless asked otherwise, and at most.
const OUTPUT_DEFAULT: u32 = 64 * 1024;
const OUTPUT_MAX: u32 = 128 * 1024;
const WAIT_DEFAULT: Duration = Duration::from_secs(45);
const WAIT_MAX: Duration = Duration::from_secs(3600);
/// One wait on the node; between them the client hears progress.
const WAIT_STEP: Duration = Duration::from_secs(10);

fn job_ref(tool: &str, job: &str) -> Result<JobRef, McpError> {
    job.parse().map_err(|e: String| invalid(tool, "job", &e))
}

/// Asks the node that runs `job`.
async fn ask(srv: &TunnelMcp, job: &JobRef, op: Op) -> Result<Reply, String> {
    let request = ControlRequest::Request { target: job.node.clone(), op };
    match srv.backend().request(&request).await {
        Ok(ControlResponse::Reply(reply)) => Ok(reply),
        Ok(other) => Err(format!("unexpected answer from the local node: {other:?}")),
        Err(e) => Err(next_step(&job.node, &e)),
    }
}

/// One line about a job, with what to call next.
pub(crate) fn summary(j: &JobInfo) -> String {
    let id = j.reference();
    let mut line = format!("job {id} on {}: {}", j.label, j.state);
    if let Some(code) = j.exit_code {
        line.push_str(&format!(", exit {code}"));
    }
    if let Some(sig) = j.signal {
        line.push_str(&format!(", signal {sig}"));
    }
    if let Some(why) = &j.reason {
        line.push_str(&format!(" ({why})"));
    }
    line.push_str(&format!(", {} of output", human_bytes(j.output_bytes)));
    if j.state.is_running() {
        line.push_str(&format!(". `job_wait` {id} waits for its end; `job_output` reads its output."));
    }
    line
}

async fn one_job(
    srv: &TunnelMcp,
    tool: &str,
    job: &str,
    op: impl FnOnce(u64) -> Op,
) -> Result<JobInfo, CallToolResult> {
    let job =
        job_ref(tool, job).map_err(|e| CallToolResult::error(vec![rmcp::model::ContentBlock::text(e.message)]))?;
    match ask(srv, &job, op(job.seq)).await {
        Ok(Reply::Job(info)) => Ok(info),
        Ok(other) => {
            Err(CallToolResult::error(vec![rmcp::model::ContentBlock::text(format!("unexpected answer: {other:?}"))]))
        }
        Err(e) => Err(CallToolResult::error(vec![rmcp::model::ContentBlock::text(e)])),
    }
}

pub(crate) async fn job_status(srv: &TunnelMcp, p: JobParams) -> Result<CallToolResult, McpError> {
    job_ref("job_status", &p.job)?;
    match one_job(srv, "job_status", &p.job, |id| Op::JobWait { id, wait_ms: 0 }).await {
        Ok(info) => success(&JobOut::from(&info), summary(&info)),
        Err(result) => Ok(result),
    }
}

pub(crate) async fn job_cancel(srv: &TunnelMcp, p: JobParams) -> Result<CallToolResult, McpError> {
    job_ref("job_cancel", &p.job)?;
    match one_job(srv, "job_cancel", &p.job, |id| Op::JobCancel { id }).await {
        Ok(info) => success(&JobOut::from(&info), summary(&info)),
        Err(result) => Ok(result),
    }
}

pub(crate) async fn job_wait(
    srv: &TunnelMcp,
    p: JobWaitParams,
    ctx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    let job = job_ref("job_wait", &p.job)?;
    let wait = match p.timeout_secs {
        None => WAIT_DEFAULT,
        Some(t) if t.is_finite() && (0.0..=WAIT_MAX.as_secs_f64()).contains(&t) => Duration::from_secs_f64(t),
        Some(_) => return Err(invalid("job_wait", "timeout_secs", "field `timeout_secs` must be 0 to 3600")),
    };
    let mut progress = Progress::new(ctx);
    let started = Instant::now();
    loop {
        let left = wait.saturating_sub(started.elapsed());
        let step = left.min(WAIT_STEP).as_millis() as u32;
        let info = tokio::select! {
            _ = ctx.ct.cancelled() => return failure("cancelled; the job runs on"),
            asked = one_job(srv, "job_wait", &p.job, |id| Op::JobWait { id, wait_ms: step }) => match asked {
                Ok(info) => info,
                Err(result) => return Ok(result),
            },
        };
        if !info.state.is_running() || left.is_zero() {
            let mut text = summary(&info);
            if info.state.is_running() {
                text = format!("still running after {} s. {text}", wait.as_secs());
            }
            return success(&JobOut::from(&info), text);
        }
        let secs = started.elapsed().as_secs_f64();
        let msg = format!("job {job} running, {} of output", human_bytes(info.output_bytes));
        progress.report(secs, Some(wait.as_secs_f64()), msg).await;
    }
}

pub(crate) async fn job_output(srv: &TunnelMcp, p: JobOutputParams) -> Result<CallToolResult, McpError> {
    let job = job_ref("job_output", &p.job)?;
    let max = p.max_bytes.unwrap_or(OUTPUT_DEFAULT);
    if !(1..=OUTPUT_MAX).contains(&max) {
        return Err(invalid("job_output", "max_bytes", &format!("field `max_bytes` must be 1 to {OUTPUT_MAX}")));
    }
    let from = match (p.offset, p.tail) {
        (Some(_), Some(_)) => return Err(invalid("job_output", "tail", "give `offset` or `tail`, not both")),
        (_, Some(n)) => OutputFrom::Tail(n),
        (o, None) => OutputFrom::Offset(o.unwrap_or(0)),
    };
    let chunk = match ask(srv, &job, Op::JobOutput { id: job.seq, from, max, wait_ms: 0 }).await {
        Ok(Reply::JobOutput(chunk)) => chunk,
        Ok(other) => return failure(format!("unexpected answer: {other:?}")),
        Err(e) => return failure(e),
    };
    let next = chunk.next_offset();
    let output = String::from_utf8_lossy(&chunk.data.0).into_owned();
    let more = next < chunk.job.output_bytes;
    let mut text = summary(&chunk.job);
    if let OutputFrom::Offset(asked) = from {
        if chunk.offset > asked {
            text.push_str(&format!(
                "\nbytes {asked}..{} are no longer kept (a job keeps its newest output).",
                chunk.offset
            ));
        }
    }
    if !output.is_empty() {
        text.push('\n');
        text.push_str(&crate::fence::fenced(&format!("output of job {job}, bytes {}..{next}", chunk.offset), &output));
    }
    if more {
        text.push_str(&format!("\nMore follows: call `job_output` with offset {next}."));
    }
    let out = JobOutputOut { job: JobOut::from(&chunk.job), offset: chunk.offset, next_offset: next, output, more };
    success(&out, text)
}

pub(crate) async fn jobs(srv: &TunnelMcp, p: JobsParams) -> Result<CallToolResult, McpError> {
    let target = p.target.unwrap_or_else(|| "all".into());
    let answers = match crate::ops_node::ask_each(srv, &target, Op::Jobs { limit: 50 }).await {
        Ok(a) => a,
        Err(e) => return failure(e),
    };
    let mut out = JobsOut { jobs: Vec::new(), errors: Vec::new() };
    for (name, answer) in answers {
        match answer {
            Ok(Reply::Jobs { jobs, .. }) => out.jobs.extend(jobs.iter().map(JobOut::from)),
            Ok(other) => out.errors.push(format!("{name}: unexpected answer {other:?}")),
            Err(e) => out.errors.push(format!("{name}: {e}")),
        }
    }
    out.jobs.sort_by_key(|j| std::cmp::Reverse(j.started_ms));
    let running = out.jobs.iter().filter(|j| j.state == "running").count();
    let mut text = format!("{} jobs ({running} running)", out.jobs.len());
    for j in out.jobs.iter().take(20) {
        let exit = j.exit_code.map(|c| format!(" exit {c}")).unwrap_or_default();
        text.push_str(&format!("\n{} on {}: {}{exit}: {}", j.job, j.target, j.state, j.command));
    }
    if out.jobs.len() > 20 {
        text.push_str(&format!("\n... and {} more (see structured content)", out.jobs.len() - 20));
    }
    for e in &out.errors {
        text.push_str(&format!("\n{e}"));
    }
    success(&out, text)
}

/// `task`: the target's configured AI agent with the prompt, as a job there.
pub(crate) async fn task(srv: &TunnelMcp, p: TaskParams) -> Result<CallToolResult, McpError> {
    crate::server::check_target("task", &p.target)?;
    if p.prompt.trim().is_empty() {
        return Err(invalid("task", "prompt", "field `prompt` is empty"));
    }
    let task = tunnel_proto::job::TaskSpec {
        request_id: rand::random(),
        prompt: p.prompt,
        cwd: p.cwd,
        label: p.target.clone(),
    };
    let request = ControlRequest::Task { target: p.target.clone(), task };
    match srv.backend().request(&request).await {
        Ok(ControlResponse::Exec(tunnel_proto::message::ExecEvent::Detached(job))) => {
            success(&JobOut::from(&job), summary(&job))
        }
        Ok(ControlResponse::Exec(tunnel_proto::message::ExecEvent::Refused(why))) => {
            failure(format!("refused by {}'s policy: {why}", p.target))
        }
        Ok(ControlResponse::Exec(tunnel_proto::message::ExecEvent::Failed(why))) => {
            failure(format!("the task could not start on {}: {why}", p.target))
        }
        Ok(other) => failure(format!("unexpected answer from the local node: {other:?}")),
        Err(e) => failure(next_step(&p.target, &e)),
    }
}

//! The `exec` tool: runs a command through the node, streams progress while it runs, and
//! kills it (its whole process group, on the target) when the client cancels the call.

use std::time::{Duration, Instant};

use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use tunnel_node::control::{read_frame, write_frame, ControlRequest, ControlResponse};
use tunnel_proto::job::{JobInfo, JobStart};
use tunnel_proto::message::{ByteBuf, ExecCommand, ExecEvent, ExecExit, ExecSpec};

use crate::ops_node::next_step;
use crate::params::{ExecOut, ExecParams};
use crate::progress::{human_bytes, Progress};
use crate::server::{check_target, failure, invalid, success, TunnelMcp};

/// A command runs this long at most unless the call says otherwise. Long: past `job_after`
/// it goes on as a job, so it never holds the call.
pub(crate) const EXEC_TIMEOUT: Duration = Duration::from_secs(3600);
const STDIN_CHUNK: usize = 64 * 1024;
/// How often a running command reports progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The command from `argv` or `shell` (exactly one of them), for `tool`.
pub(crate) fn command_of(
    tool: &str,
    argv: &Option<Vec<String>>,
    shell: &Option<String>,
) -> Result<ExecCommand, McpError> {
    let bad = |field: &str, msg: &str| invalid(tool, field, msg);
    match (argv, shell) {
        (Some(argv), None) if argv.is_empty() || argv[0].is_empty() => {
            Err(bad("argv", "field `argv` needs at least the program"))
        }
        (Some(argv), None) => Ok(ExecCommand::Argv(argv.clone())),
        (None, Some(shell)) if shell.trim().is_empty() => Err(bad("shell", "field `shell` is empty")),
        (None, Some(shell)) => Ok(ExecCommand::Shell(shell.clone())),
        (Some(_), Some(_)) => Err(bad("argv", "give either `argv` or `shell`, not both")),
        (None, None) => Err(bad("argv", "give the command as `argv` (a list) or `shell` (a string)")),
    }
}

/// `timeout_secs` for `tool`, or `default`.
pub(crate) fn timeout_of(tool: &str, secs: Option<f64>, default: Duration) -> Result<Duration, McpError> {
    seconds_of(tool, "timeout_secs", secs, default)
}

/// A field of seconds (more than 0, at most a day) for `tool`, or `default`.
fn seconds_of(tool: &str, field: &str, secs: Option<f64>, default: Duration) -> Result<Duration, McpError> {
    match secs {
        None => Ok(default),
        Some(t) if t.is_finite() && t > 0.0 && t <= 86_400.0 => Ok(Duration::from_secs_f64(t)),
        Some(_) => Err(invalid(tool, field, &format!("field `{field}` must be more than 0 and at most 86400"))),
    }
}

fn spec(srv: &TunnelMcp, p: &ExecParams) -> Result<ExecSpec, McpError> {
    check_target("exec", &p.target)?;
    let command = command_of("exec", &p.argv, &p.shell)?;
    let timeout = timeout_of("exec", p.timeout_secs, EXEC_TIMEOUT)?;
    Ok(ExecSpec {
        request_id: rand::random(),
        command,
        env: p.env.clone().unwrap_or_default().into_iter().collect(),
        cwd: p.cwd.clone(),
        timeout_ms: Some(timeout.as_millis() as u64),
        output_cap: srv.cap(p.max_output_bytes),
        stdin: p.stdin.is_some(),
    })
}

/// A call's `job_after_secs`, or the server's `--job-after`.
pub(crate) fn job_after_of(tool: &str, srv: &TunnelMcp, secs: Option<f64>) -> Result<Duration, McpError> {
    seconds_of(tool, "job_after_secs", secs, srv.opts.job_after)
}

pub(crate) async fn exec(
    srv: &TunnelMcp,
    p: ExecParams,
    ctx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    let spec = spec(srv, &p)?;
    let job_after = job_after_of("exec", srv, p.job_after_secs)?;
    let target = p.target.clone();
    // (On an SSH host, the job is its jump node's.)
    let job = JobStart { after_ms: job_after.as_millis() as u64, label: target.clone() };
    let request = ControlRequest::ExecJob { target, spec, job };
    let mut progress = Progress::new(ctx);
    let conn = match srv.backend().open(&request).await {
        Ok(c) => c,
        Err(e) => return failure(e),
    };
    let (mut rd, mut wr) = tokio::io::split(conn);
    // Stdin goes on its own task, so a command that does not read it cannot stall its output.
    // The task keeps the connection's write half: closing it would cancel the command.
    let stdin = p.stdin.clone();
    let _writer = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        if let Some(text) = stdin {
            for chunk in text.as_bytes().chunks(STDIN_CHUNK) {
                if write_frame(&mut wr, &ControlRequest::Input(ByteBuf::copy_from(chunk))).await.is_err() {
                    return;
                }
            }
            let _ = write_frame(&mut wr, &ControlRequest::InputEnd).await;
        }
        std::future::pending::<()>().await;
    }));
    let started = Instant::now();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.tick().await;
    let outcome = loop {
        tokio::select! {
            // Returning drops the connection; the node then kills the command's process group.
            _ = ctx.ct.cancelled() => return failure("cancelled; the command was killed"),
            _ = tick.tick() => {
                let secs = started.elapsed().as_secs_f64();
                let msg = format!("running {secs:.0} s, {} of output", human_bytes((stdout.len() + stderr.len()) as u64));
                progress.report(secs, None, msg).await;
            }
            frame = read_frame::<ControlResponse, _>(&mut rd) => match frame {
                Ok(Some(ControlResponse::Exec(ExecEvent::Stdout(b)))) => stdout.extend_from_slice(&b.0),
                Ok(Some(ControlResponse::Exec(ExecEvent::Stderr(b)))) => stderr.extend_from_slice(&b.0),
                Ok(Some(ControlResponse::Exec(ExecEvent::Exit(exit)))) => break exit,
                Ok(Some(ControlResponse::Exec(ExecEvent::Detached(job)))) => {
                    return detached(p.target, stdout, stderr, &job, started.elapsed());
                }
                Ok(Some(ControlResponse::Exec(ExecEvent::Refused(why)))) => {
                    return failure(format!(
                        "refused by {}'s policy: {why}. Call `get_info` on it to see its mode and rules; \
                         in plan mode use a read-only command given as argv.",
                        p.target
                    ));
                }
                Ok(Some(ControlResponse::Exec(ExecEvent::Failed(why)))) => {
                    return failure(format!("could not run the command on {}: {why}", p.target));
                }
                Ok(Some(ControlResponse::Error(e))) => return failure(next_step(&p.target, &e)),
                Ok(Some(other)) => return failure(format!("unexpected answer from the local node: {other:?}")),
                Ok(None) => return failure("the local node closed the connection before the command finished"),
                Err(e) => return failure(crate::backend::node_lost(e)),
            },
        }
    };
    let secs = started.elapsed().as_secs_f64();
    progress.report(secs.max(f64::MIN_POSITIVE), None, "finished".into()).await;
    respond(p.target, stdout, stderr, outcome)
}

/// The answer for a command that went on as a job: its output so far, and the job.
fn detached(
    target: String,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    job: &JobInfo,
    ran: Duration,
) -> Result<CallToolResult, McpError> {
    let id = job.reference().to_string();
    let out = ExecOut {
        target,
        exit_code: None,
        signal: None,
        timed_out: false,
        stdout_bytes: stdout.len() as u64,
        stderr_bytes: stderr.len() as u64,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        truncated: false,
        duration_ms: ran.as_millis() as u64,
        job: Some(id.clone()),
    };
    let mut text = format!(
        "still running after {} s on {}; it goes on as job {id}. Call `job_wait` with job {id} to wait for its end, \
         `job_output` for its output (offset {} continues after what is below), `job_cancel` to stop it.",
        ran.as_secs(),
        out.target,
        job.output_bytes,
    );
    for (name, body) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        if !body.is_empty() {
            text.push('\n');
            text.push_str(&crate::fence::fenced(&format!("{name} of {} so far", out.target), body));
        }
    }
    success(&out, text)
}

fn respond(target: String, stdout: Vec<u8>, stderr: Vec<u8>, exit: ExecExit) -> Result<CallToolResult, McpError> {
    let out = ExecOut {
        target,
        exit_code: exit.code,
        signal: exit.signal,
        timed_out: exit.timed_out,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        stdout_bytes: exit.stdout_bytes,
        stderr_bytes: exit.stderr_bytes,
        truncated: exit.stdout_truncated || exit.stderr_truncated,
        duration_ms: exit.duration_ms,
        job: None,
    };
    let status = match (exit.timed_out, out.exit_code, out.signal) {
        (true, _, _) => "timed out; the command and everything it started were killed".to_owned(),
        (false, Some(code), _) => format!("exit {code}"),
        (false, None, Some(sig)) => format!("killed by signal {sig}"),
        (false, None, None) => "ended without a status".to_owned(),
    };
    let mut text = format!("{status} on {} after {} ms", out.target, out.duration_ms);
    for (name, body, total, cut) in [
        ("stdout", &out.stdout, out.stdout_bytes, exit.stdout_truncated),
        ("stderr", &out.stderr, out.stderr_bytes, exit.stderr_truncated),
    ] {
        if !body.is_empty() {
            text.push('\n');
            text.push_str(&crate::fence::fenced(&format!("{name} of {}", out.target), body));
        }
        if cut {
            text.push_str(&format!(
                "\n[{name} truncated: {} of {} shown]",
                human_bytes(body.len() as u64),
                human_bytes(total)
            ));
        }
    }
    if exit.timed_out {
        let mut result = success(&out, text)?;
        result.is_error = Some(true);
        return Ok(result);
    }
    success(&out, text)
}

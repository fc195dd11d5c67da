//! The exec service: runs a command a peer asked for, if policy allows, and streams its
//! output back.
//!
//! The command runs in its own process group. A timeout, or the caller cancelling (it resets
//! the stream), kills the whole group, so nothing it started is left behind. Output is
//! capped per stream with an explicit `truncated` flag; past the cap it is still drained so
//! the command never blocks on a full pipe. The child never sees `TUNNEL_*` variables (the
//! room token must not leak into commands).

use std::process::Stdio;
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnel_net::{Stream, StreamReader, StreamWriter};
use tunnel_proto::framing;
use tunnel_proto::job::JobStart;
use tunnel_proto::message::{cap_output, ByteBuf, ExecCommand, ExecEvent, ExecExit, ExecSpec};

use crate::jobs::JobRun;
use crate::policy::{CommandLine, PathAccess};

/// After the command exits, how long output from anything still holding its pipes is read.
const DRAIN_GRACE: Duration = Duration::from_millis(200);
const READ_CHUNK: usize = 16 * 1024;

pub(crate) fn command_line(cmd: &ExecCommand) -> CommandLine {
    match cmd {
        ExecCommand::Argv(a) => CommandLine::argv(a.clone()),
        ExecCommand::Shell(s) => CommandLine::Shell(s.clone()),
    }
}

pub(crate) async fn send(writer: &mut StreamWriter, event: &ExecEvent) -> bool {
    writer.write_all(&framing::encode(event)).await.is_ok()
}

/// What the audit log records of a command: secrets in it redacted, env values never.
pub(crate) fn audit_detail(spec: &ExecSpec) -> serde_json::Value {
    serde_json::json!({
        "request_id": spec.request_id,
        "command": audit_command(&spec.command),
        "cwd": spec.cwd,
        "env": spec.env.iter().map(|(k, _)| format!("{k}=<redacted>")).collect::<Vec<_>>(),
        "timeout_ms": spec.timeout_ms,
    })
}

/// A command as the audit log records it: secrets in it redacted.
pub(crate) fn audit_command(cmd: &ExecCommand) -> serde_json::Value {
    match cmd {
        ExecCommand::Argv(a) => serde_json::json!(a.iter().map(|s| crate::audit::redact(s)).collect::<Vec<_>>()),
        ExecCommand::Shell(s) => serde_json::json!({ "shell": crate::audit::redact(s) }),
    }
}

/// Serves one exec stream from a peer: policy, at-most-once, run, audit.
pub(crate) async fn serve(node: crate::Node, stream: Stream, spec: ExecSpec) {
    serve_maybe_job(node, stream, spec, None).await
}

/// Serves an exec stream that becomes a job after `start.after_ms` (see `crate::jobs`).
pub(crate) async fn serve_job(node: crate::Node, stream: Stream, spec: ExecSpec, start: JobStart) {
    serve_maybe_job(node, stream, spec, Some(start)).await
}

async fn serve_maybe_job(node: crate::Node, stream: Stream, spec: ExecSpec, start: Option<JobStart>) {
    let Stream { peer, reader, writer, .. } = stream;
    let cmd = command_line(&spec.command);
    let detail = audit_detail(&spec);
    if !node.begin_request(peer, spec.request_id) {
        return send_last(writer, &already_ran(spec.request_id)).await;
    }
    let decision = node
        .policy_check(|p| {
            p.check_caller(&peer)?;
            p.check_command(&cmd)?;
            crate::policy::check_env(p.mode, &spec.env)?;
            if let Some(cwd) = &spec.cwd {
                p.check_path(cwd, PathAccess::Read)?;
            }
            Ok(crate::services::confine::Plan::of(p))
        })
        .and_then(|plan| plan_git_check(plan.mode(), &cmd, spec.cwd.as_deref()).map(|()| plan));
    let plan = match decision {
        Ok(plan) => plan,
        Err(refusal) => return refuse(&node, peer, "exec", refusal, detail, writer, ExecEvent::Refused).await,
    };
    let plan_env = plan.mode() == crate::policy::Mode::Plan;
    let title = command_text(&spec.command);
    let decided = Decided { peer, reader, writer, spec, cmd, plan, plan_env, detail, event: "exec", title, start };
    run_decided(node, decided).await
}

/// A command the policy allowed, with what it needs to run: the caller's stream, the mode it
/// was allowed under, how the audit log and a job listing describe it.
pub(crate) struct Decided {
    pub(crate) peer: tunnel_proto::NodeId,
    pub(crate) reader: StreamReader,
    pub(crate) writer: StreamWriter,
    pub(crate) spec: ExecSpec,
    pub(crate) cmd: CommandLine,
    /// The command runs under the mode it was checked against, even if the mode changes now.
    pub(crate) plan: crate::services::confine::Plan,
    /// Whether it gets plan mode's fixed environment.
    pub(crate) plan_env: bool,
    pub(crate) detail: serde_json::Value,
    /// The audit event of a refusal or an attached end (`exec`, `task`).
    pub(crate) event: &'static str,
    /// The command as a job lists it.
    pub(crate) title: String,
    pub(crate) start: Option<JobStart>,
}

/// Sandboxes and runs a decided command, attached or as a job, and audits how it ended.
pub(crate) async fn run_decided(node: crate::Node, d: Decided) {
    let Decided { peer, mut reader, writer, spec, cmd, plan, plan_env, detail, event, title, start } = d;
    let sandbox = match crate::services::confine::prepare_kept(&plan, &cmd) {
        Some(kept) => kept,
        None => {
            let for_sandbox = cmd.clone();
            tokio::task::spawn_blocking(move || crate::services::confine::prepare(&plan, &for_sandbox))
                .await
                .unwrap_or_else(|e| Err(crate::policy::Refusal::new(format!("building the sandbox failed: {e}"))))
        }
    };
    let sandbox = match sandbox {
        Ok(s) => s,
        Err(refusal) => return refuse(&node, peer, event, refusal, detail, writer, ExecEvent::Refused).await,
    };
    let started = Instant::now();
    let mut job = start.map(|s| Detach { run: JobRun::new(s, peer, title), node: &node, detail: &detail });
    let mut writer = Some(writer);
    let result = run(&spec, &cmd, plan_env, sandbox, &mut reader, &mut writer, job.as_mut()).await;
    match writer {
        Some(writer) => conclude(&node, peer, event, detail, started, result, writer).await,
        None => {
            if let Some(job) = job {
                job.finish(&result, started);
            }
        }
    }
}

/// An exec that becomes a job: the job, and what detaching it needs.
pub(crate) struct Detach<'a> {
    pub(crate) run: JobRun,
    pub(crate) node: &'a crate::Node,
    pub(crate) detail: &'a serde_json::Value,
}

impl Detach<'_> {
    /// Records how the detached job ended and audits it (nothing, if it never detached).
    pub(crate) fn finish(self, result: &Result<ExecExit, String>, started: Instant) {
        let Some(job) = self.run.finish(self.node.jobs(), result) else { return };
        let record = crate::audit::Entry {
            exit_code: job.exit_code,
            bytes: Some(job.output_bytes),
            duration_ms: Some(started.elapsed().as_millis() as u64),
            ..Default::default()
        };
        let detail = serde_json::json!({ "job": job.id, "state": job.state.as_str(), "reason": job.reason });
        self.node.audit_op(job.caller, "job.end", "allowed", None, detail, Some(record));
    }

    /// Makes the exec a job and tells the caller, whose stream ends here.
    pub(crate) async fn detach(
        &mut self,
        pid: Option<u32>,
        started_ms: i64,
        writer: &mut Option<StreamWriter>,
    ) -> Result<(), String> {
        let info = self.run.detach(self.node.jobs(), pid, started_ms)?;
        let mut detail = self.detail.clone();
        detail["job"] = info.id.into();
        detail["label"] = info.label.clone().into();
        self.node.audit_op(info.caller, "job.start", "allowed", None, detail, None);
        if let Some(writer) = writer.take() {
            send_last(writer, &ExecEvent::Detached(info)).await;
        }
        Ok(())
    }
}

/// A command as one line, for job listings (secrets redacted as in the audit log).
pub(crate) fn command_text(cmd: &ExecCommand) -> String {
    match cmd {
        ExecCommand::Argv(a) => a.iter().map(|s| crate::audit::redact(s)).collect::<Vec<_>>().join(" "),
        ExecCommand::Shell(s) => crate::audit::redact(s),
    }
}

/// Audits a refusal and sends the caller its one answer, the stream's own `Refused` frame.
pub(crate) async fn refuse<E: serde::Serialize>(
    node: &crate::Node,
    peer: tunnel_proto::NodeId,
    event: &str,
    refusal: crate::policy::Refusal,
    detail: serde_json::Value,
    writer: StreamWriter,
    answer: impl FnOnce(String) -> E,
) {
    node.audit_op(peer, event, "refused", Some(refusal.rule.clone()), detail, None);
    send_last(writer, &answer(refusal.to_string())).await
}

/// Sends a stream's last frame and ends the stream (a caller that is gone gets neither).
pub(crate) async fn send_last<E: serde::Serialize>(mut writer: StreamWriter, event: &E) {
    if writer.write_all(&framing::encode(event)).await.is_ok() {
        let _ = writer.finish().await;
    }
}

/// The answer to a command whose request id already ran: at most once, never twice.
pub(crate) fn already_ran(request_id: u64) -> ExecEvent {
    ExecEvent::Failed(format!("request {request_id} already ran; not running it twice"))
}

/// Audits how a command ended and sends the caller its last event: `Exit` or `Failed`.
pub(crate) async fn conclude(
    node: &crate::Node,
    peer: tunnel_proto::NodeId,
    event: &str,
    detail: serde_json::Value,
    started: Instant,
    result: Result<ExecExit, String>,
    writer: StreamWriter,
) {
    let (last, decision, record) = match result {
        Ok(exit) => {
            let decision = if exit.cancelled {
                "cancelled"
            } else if exit.timed_out {
                "timed_out"
            } else {
                "allowed"
            };
            let record = crate::audit::Entry {
                exit_code: exit.code,
                bytes: Some(exit.stdout_bytes + exit.stderr_bytes),
                duration_ms: Some(started.elapsed().as_millis() as u64),
                ..Default::default()
            };
            (ExecEvent::Exit(exit), decision, record)
        }
        Err(e) => (ExecEvent::Failed(e), "failed", crate::audit::Entry::default()),
    };
    node.audit_op(peer, event, decision, None, detail, Some(record));
    send_last(writer, &last).await
}

/// In plan mode, git in a repository whose config runs programs is refused.
fn plan_git_check(
    mode: crate::policy::Mode,
    cmd: &CommandLine,
    cwd: Option<&str>,
) -> Result<(), crate::policy::Refusal> {
    let CommandLine::Argv(argv) = cmd else { return Ok(()) };
    let Some(program) = argv.program() else { return Ok(()) };
    if mode != crate::policy::Mode::Plan || program.file_name().and_then(|n| n.to_str()) != Some("git") {
        return Ok(());
    }
    let cwd = cwd.map(std::path::PathBuf::from).or_else(|| std::env::current_dir().ok()).unwrap_or_else(|| "/".into());
    crate::policy::git_guard::check(program, &crate::policy::git_guard::effective_dir(argv, &cwd))
}

/// Spawns and supervises the command. Returns its exit (with the output bytes it produced).
/// With `job`, the command is detached as a job at its time: `writer` is then taken (the
/// caller's stream ends) and the command runs on, its output kept by the job.
async fn run(
    spec: &ExecSpec,
    cmd: &CommandLine,
    plan: bool,
    sandbox: Option<tunnel_sandbox::Prepared>,
    reader: &mut StreamReader,
    writer: &mut Option<StreamWriter>,
    mut job: Option<&mut Detach<'_>>,
) -> Result<ExecExit, String> {
    let mut command = match cmd {
        CommandLine::Argv(argv) => {
            let first = argv.first().ok_or("empty command")?;
            // Run the very file policy judged, not whatever PATH finds a moment later.
            let program = argv.program().ok_or_else(|| format!("program {first:?} not found"))?;
            let mut c = tokio::process::Command::new(program);
            c.arg0(first).args(&argv[1..]);
            c
        }
        CommandLine::Shell(script) => {
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg("-c").arg(script);
            c
        }
    };
    if plan {
        // The node's environment, not the caller's (who may set only the locale and terminal).
        command.env_clear().envs(crate::policy::plan_base(std::env::vars()));
    } else {
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("TUNNEL_")) {
                command.env_remove(key);
            }
        }
    }
    command.envs(spec.env.iter().map(|(k, v)| (k, v)));
    if plan {
        // Repository config cannot switch these back on (command-line scope wins).
        command.envs(crate::policy::git_guard::git_env());
    }
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    command
        .stdin(if spec.stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let started = Instant::now();
    let started_ms = crate::jobs::store::now_ms();
    let spawned = match sandbox {
        Some(sandbox) => {
            let runtime = tokio::runtime::Handle::current();
            let spawn = move |mut c: tokio::process::Command| {
                let _in_runtime = runtime.enter();
                c.spawn()
            };
            tunnel_sandbox::spawn(sandbox, command, tokio::process::Command::as_std_mut, spawn)
        }
        None => command.spawn(),
    };
    let mut child = spawned.map_err(|e| format!("cannot start the command: {e}"))?;
    let group = child.id().and_then(|id| Pid::from_raw(id as i32));
    let kill_group = || {
        if let Some(pgid) = group {
            let _ = kill_process_group(pgid, Signal::Kill);
        }
    };
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (mut out_buf, mut err_buf) = (vec![0u8; READ_CHUNK], vec![0u8; READ_CHUNK]);
    let (mut out_sent, mut err_sent) = (0u64, 0u64);
    let mut exit = ExecExit::default();
    let deadline = spec.timeout_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
    let mut status = None;
    let mut drain_until: Option<tokio::time::Instant> = None;
    let mut input_open = true;
    let caller_gone = writer.as_ref().ok_or("the caller's stream is gone")?.stopped();
    tokio::pin!(caller_gone);
    let mut detach_at = job.as_ref().map(|j| tokio::time::Instant::now() + j.run.after());
    if let Some(job) = job.as_mut().filter(|j| j.run.after().is_zero()) {
        // Detached from the start: the caller gets the job and none of the output.
        detach_at = None;
        if let Err(e) = job.detach(child.id(), started_ms, writer).await {
            // Asked to run detached and cannot: it does not run attached instead.
            kill_group();
            return Err(e);
        }
        input_open = false;
        stdin = None;
    }
    let mut kill_at: Option<tokio::time::Instant> = None;
    loop {
        if status.is_some()
            && (stdout.is_none() && stderr.is_none() || drain_until.is_some_and(|t| tokio::time::Instant::now() >= t))
        {
            break;
        }
        tokio::select! {
            n = read_some(&mut stdout, &mut out_buf) => match n {
                Some(n) => {
                    exit.stdout_bytes += n as u64;
                    if let Some(job) = job.as_mut() {
                        job.run.record(&out_buf[..n]);
                    }
                    let keep = cap_output(&mut out_sent, n, spec.output_cap, &mut exit.stdout_truncated);
                    if !forward(writer, ExecEvent::Stdout, &out_buf[..keep]).await {
                        exit.cancelled = true;
                        kill_group();
                    }
                }
                None => stdout = None,
            },
            n = read_some(&mut stderr, &mut err_buf) => match n {
                Some(n) => {
                    exit.stderr_bytes += n as u64;
                    if let Some(job) = job.as_mut() {
                        job.run.record(&err_buf[..n]);
                    }
                    let keep = cap_output(&mut err_sent, n, spec.output_cap, &mut exit.stderr_truncated);
                    if !forward(writer, ExecEvent::Stderr, &err_buf[..keep]).await {
                        exit.cancelled = true;
                        kill_group();
                    }
                }
                None => stderr = None,
            },
            _ = sleep_until(detach_at), if detach_at.is_some() && status.is_none() => {
                detach_at = None;
                let job = job.as_mut().expect("a detach time comes with a job");
                if let Err(e) = job.detach(child.id(), started_ms, writer).await {
                    tracing::warn!(error = %e, "an exec could not become a job; it goes on attached");
                }
                if writer.is_none() {
                    input_open = false;
                    stdin = None;
                }
            }
            _ = job_cancelled(job.as_deref()), if kill_at.is_none() && status.is_none() => {
                exit.cancelled = true;
                if let Some(pgid) = group {
                    let _ = kill_process_group(pgid, Signal::Term);
                }
                kill_at = Some(tokio::time::Instant::now() + crate::jobs::CANCEL_GRACE);
            }
            _ = sleep_until(kill_at), if kill_at.is_some() && status.is_none() => {
                kill_at = None;
                kill_group();
            }
            input = reader.read(), if input_open => match input {
                Ok(Some(bytes)) => {
                    if let Some(pipe) = stdin.as_mut() {
                        if pipe.write_all(&bytes).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Ok(None) => {
                    input_open = false;
                    stdin = None; // end of input: close the command's stdin
                }
                Err(_) => {
                    // The caller reset the stream: cancel.
                    input_open = false;
                    exit.cancelled = true;
                    kill_group();
                }
            },
            s = child.wait(), if status.is_none() => {
                status = Some(s.map_err(|e| format!("waiting for the command: {e}"))?);
                drain_until = Some(tokio::time::Instant::now() + DRAIN_GRACE);
            }
            _ = sleep_until(deadline), if status.is_none() && !exit.timed_out => {
                exit.timed_out = true;
                kill_group();
            }
            _ = sleep_until(drain_until), if drain_until.is_some() => {}
            _ = &mut caller_gone, if !exit.cancelled && writer.is_some() => {
                // The caller reset the stream after its input ended: cancel.
                exit.cancelled = true;
                kill_group();
            }
        }
    }
    if exit.timed_out || exit.cancelled {
        // Whatever the command started dies with it.
        kill_group();
    }
    let status = status.expect("loop ends after the command exited");
    exit.code = status.code();
    exit.signal = std::os::unix::process::ExitStatusExt::signal(&status);
    exit.duration_ms = started.elapsed().as_millis() as u64;
    Ok(exit)
}

/// Sends output to the caller; false if the caller is gone. Nothing to send, or nobody to
/// send it to (a detached job), is a success.
async fn forward(writer: &mut Option<StreamWriter>, event: fn(ByteBuf) -> ExecEvent, bytes: &[u8]) -> bool {
    match writer {
        Some(w) => bytes.is_empty() || send(w, &event(ByteBuf::copy_from(bytes))).await,
        None => true,
    }
}

/// Resolves when someone cancels the detached job; never for an attached command.
pub(crate) async fn job_cancelled(job: Option<&Detach<'_>>) {
    match job {
        Some(job) => job.run.cancelled().await,
        None => std::future::pending().await,
    }
}

async fn read_some<R: tokio::io::AsyncRead + Unpin>(pipe: &mut Option<R>, buf: &mut [u8]) -> Option<usize> {
    match pipe {
        Some(p) => match p.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        },
        None => std::future::pending().await,
    }
}

pub(crate) async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

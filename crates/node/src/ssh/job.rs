//! Jobs on SSH hosts. The jump node keeps the job as it keeps its own: the record, the output
//! and the SSH channel the command runs on are here, so the job outlives its caller, and the
//! caller follows it with the same job operations, addressed to this node.
//!
//! If this node stops, the channel closes with it and the job is recorded `lost`: whether the
//! command went on on the host is the host's affair (without a terminal, sshd does not hang it
//! up), and the reason says so.

use std::time::Instant;

use tokio::sync::mpsc;
use tunnel_net::{Stream, StreamReader, StreamWriter};
use tunnel_proto::job::JobStart;
use tunnel_proto::message::{cap_output, ExecEvent, ExecExit, ExecSpec};

use super::serve::{decide, exec_request, remote_command};
use crate::jobs::JobRun;
use crate::services::exec::{
    already_ran, audit_detail, command_text, conclude, job_cancelled, refuse, send, send_last, sleep_until, Detach,
};

/// Why a job on an SSH host is lost: its channel closed with this node.
pub(crate) const SSH_CHANNEL_CLOSED: &str = "the node stopped while the job ran; the SSH channel the command ran on \
     closed with it (the host hangs the command up, or it runs on unwatched), exit status unknown";

/// Events buffered between the SSH channel and the job.
const EVENTS: usize = 64;

pub(crate) async fn serve_job(node: crate::Node, stream: Stream, host: String, spec: ExecSpec, start: JobStart) {
    // The reader lives to the end: dropping it early would reset the stream under the answer.
    let Stream { peer, mut reader, writer, .. } = stream;
    let mut detail = audit_detail(&spec);
    detail["ssh_host"] = host.clone().into();
    if !node.begin_request(peer, spec.request_id) {
        return send_last(writer, &already_ran(spec.request_id)).await;
    }
    let (plan, pool) = match decide(&node, peer, &host, &spec) {
        Ok(found) => found,
        Err(refusal) => return refuse(&node, peer, "ssh.exec", refusal, detail, writer, ExecEvent::Refused).await,
    };
    let started = Instant::now();
    let command = match remote_command(&spec, plan) {
        Ok(command) => command,
        Err(e) => return conclude(&node, peer, "ssh.exec", detail, started, Err(e), writer).await,
    };
    let title = format!("ssh:{host}: {}", command_text(&spec.command));
    let run = JobRun::new(start, peer, title).orphaned_as(SSH_CHANNEL_CLOSED);
    let mut job = Detach { run, node: &node, detail: &detail };
    let (events_tx, events_rx) = mpsc::channel(EVENTS);
    // The job keeps all of the output (within its own cap); the caller gets `output_cap`.
    let (request, stdin_tx) = exec_request(&spec, command, u64::MAX);
    let exec = async {
        let exit = pool.exec(&host, request, &events_tx).await;
        drop(events_tx);
        exit
    };
    let mut attached =
        Attached { writer: Some(writer), cap: spec.output_cap, out_sent: 0, err_sent: 0, exit: ExecExit::default() };
    let follow = follow(&mut job, &mut attached, events_rx, stdin_tx, &mut reader);
    let (exit, detach_failed) = tokio::join!(exec, follow);
    let result = match (exit, detach_failed) {
        (_, Some(e)) => Err(e),
        (Ok(mut exit), None) => {
            exit.stdout_truncated |= attached.exit.stdout_truncated;
            exit.stderr_truncated |= attached.exit.stderr_truncated;
            exit.cancelled |= attached.exit.cancelled;
            Ok(exit)
        }
        (Err(e), None) => Err(e.to_string()),
    };
    match attached.writer {
        Some(writer) => conclude(&node, peer, "ssh.exec", detail.clone(), started, result, writer).await,
        None => job.finish(&result, started),
    }
}

/// The caller's side while it is attached: its stream, and what it was sent of the output.
struct Attached {
    writer: Option<StreamWriter>,
    cap: u64,
    out_sent: u64,
    err_sent: u64,
    /// Truncation and cancellation as the caller saw them.
    exit: ExecExit,
}

impl Attached {
    /// Passes output on, cut at the caller's cap; false if the caller is gone.
    async fn forward(&mut self, event: ExecEvent) -> bool {
        let Some(writer) = &mut self.writer else { return true };
        let event = match event {
            ExecEvent::Stdout(b) => {
                let keep = cap_output(&mut self.out_sent, b.len(), self.cap, &mut self.exit.stdout_truncated);
                ExecEvent::Stdout(b.0.slice(..keep).into())
            }
            ExecEvent::Stderr(b) => {
                let keep = cap_output(&mut self.err_sent, b.len(), self.cap, &mut self.exit.stderr_truncated);
                ExecEvent::Stderr(b.0.slice(..keep).into())
            }
            other => other,
        };
        match &event {
            ExecEvent::Stdout(b) | ExecEvent::Stderr(b) if b.is_empty() => true,
            _ => send(writer, &event).await,
        }
    }
}

/// Keeps the output, passes it on while the caller is attached, detaches the job at its time,
/// and stops the command (by dropping `events`) on a cancel. Ends when the command's events
/// do; returns why the job could not be detached, if it could not.
async fn follow(
    job: &mut Detach<'_>,
    attached: &mut Attached,
    events: mpsc::Receiver<ExecEvent>,
    mut stdin: Option<mpsc::Sender<Vec<u8>>>,
    reader: &mut StreamReader,
) -> Option<String> {
    let mut events = Some(events);
    let started_ms = crate::jobs::store::now_ms();
    let caller_gone = attached.writer.as_ref()?.stopped();
    tokio::pin!(caller_gone);
    let mut detach_at = Some(tokio::time::Instant::now() + job.run.after());
    let mut input_open = true;
    if job.run.after().is_zero() {
        // Detached from the start: the caller gets the job and none of the output. Asked to
        // run detached and cannot, it does not run attached instead.
        detach_at = None;
        if let Err(e) = job.detach(None, started_ms, &mut attached.writer).await {
            return Some(e);
        }
        input_open = false;
        stdin = None;
    }
    loop {
        // Events dropped (a cancel): the command is stopping, and this is done.
        let rx = events.as_mut()?;
        tokio::select! {
            event = rx.recv() => match event {
                Some(event) => {
                    if let ExecEvent::Stdout(b) | ExecEvent::Stderr(b) = &event {
                        job.run.record(b);
                    }
                    if !attached.forward(event).await {
                        attached.exit.cancelled = true;
                        events = None; // the caller is gone: the command stops
                    }
                }
                None => return None,
            },
            _ = sleep_until(detach_at), if detach_at.is_some() => {
                detach_at = None;
                if let Err(e) = job.detach(None, started_ms, &mut attached.writer).await {
                    tracing::warn!(error = %e, "an exec on an SSH host could not become a job; it goes on attached");
                }
                if attached.writer.is_none() {
                    input_open = false;
                    stdin = None;
                }
            }
            _ = job_cancelled(Some(&*job)) => {
                attached.exit.cancelled = true;
                events = None;
            }
            input = reader.read(), if input_open => match input {
                Ok(Some(bytes)) => {
                    if let Some(tx) = &stdin {
                        if tx.send(bytes.to_vec()).await.is_err() {
                            stdin = None; // the command stopped reading
                        }
                    }
                }
                Ok(None) => {
                    input_open = false;
                    stdin = None; // end of input
                }
                Err(_) => {
                    input_open = false;
                    attached.exit.cancelled = true;
                    events = None; // the caller reset the stream: cancel
                }
            },
            _ = &mut caller_gone, if attached.writer.is_some() && !attached.exit.cancelled => {
                attached.exit.cancelled = true;
                events = None;
            }
        }
    }
}

//! Fleet operations: one exec, read or write fanned out to many peers.
//!
//! ```text
//!  targets ──> queue ──(at most `concurrency` at once)──> one task per target ──> results
//! ```
//! Every target ends with exactly one [`TargetResult`], sent as soon as it is known: a peer
//! that is gone is `unreachable`, one that does not answer in time is `timed_out`; none is
//! ever dropped. Policy is the executing peer's: a refusal comes back as `refused`.

pub mod names;
pub mod reduce;
pub mod targets;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tunnel_net::Stream;
use tunnel_proto::message::{ExecEvent, ExecSpec, FileEvent, StreamKind, WriteSpec};
use tunnel_proto::NodeId;

use crate::fleet::targets::Target;
use crate::node::{Dest, ReadEnd};
use crate::services::file_client::FileEvents;
use crate::Node;

/// Waited beyond the per-target timeout for the peer's own timeout report.
const GRACE: Duration = Duration::from_secs(5);

/// What to do on every target.
#[derive(Debug, Clone)]
pub enum FleetOp {
    /// Run a command (each target gets its own request id).
    Exec(ExecSpec),
    /// Read a file: up to `max_bytes` of it come back; the digest covers all of it.
    Read { path: String, max_bytes: u64 },
    /// Write the same bytes to a file on every target.
    Write { path: String, mode: Option<u32>, content: Arc<Vec<u8>> },
    /// Run a command that becomes a job on each target still running it after `after_ms`
    /// (the per-target timeout then bounds only the wait for that answer).
    ExecJob { spec: ExecSpec, after_ms: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetOptions {
    /// Targets worked on at once.
    pub concurrency: u32,
    /// Per target, from the start of its operation to its answer.
    pub timeout_ms: u64,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self { concurrency: 64, timeout_ms: 60_000 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    /// It ran and failed (non-zero exit, killed by a signal, an I/O error on the peer).
    Failed,
    /// The peer's policy said no; nothing ran.
    Refused,
    TimedOut,
    /// The peer could not be reached, or was lost before it answered.
    Unreachable,
    /// It runs on as a job (`job`) on the node that runs it.
    Running,
}

impl Status {
    /// It ended, and not well (a target still running as a job has not failed).
    pub fn is_failure(self) -> bool {
        !matches!(self, Self::Ok | Self::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Refused => "refused",
            Self::TimedOut => "timed_out",
            Self::Unreachable => "unreachable",
            Self::Running => "running",
        }
    }
}

/// One target's outcome. Output is text (invalid UTF-8 replaced) capped at the request's
/// cap; the byte counts are the full sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetResult {
    pub name: String,
    pub id: String,
    pub status: Status,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Command output, or the file's content for a read.
    pub stdout: String,
    pub stderr: String,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub truncated: bool,
    /// SHA-256 of the whole file, for reads.
    pub sha256: Option<String>,
    /// Where an overwritten file was saved, for writes.
    pub backup: Option<String>,
    pub duration_ms: u64,
    pub error: Option<String>,
    /// The job it runs on as (`SEQ@NODE`), when `Running`. (Always written: the control
    /// socket's postcard cannot skip fields.)
    pub job: Option<String>,
}

impl TargetResult {
    fn new(target: &Target, status: Status) -> Self {
        Self::empty(&target.name, &target.id, status)
    }

    /// A result with `status` and nothing else yet (no output, no exit code).
    pub fn empty(name: &str, id: &str, status: Status) -> Self {
        Self {
            name: name.to_owned(),
            id: id.to_owned(),
            status,
            exit_code: None,
            signal: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            truncated: false,
            sha256: None,
            backup: None,
            duration_ms: 0,
            error: None,
            job: None,
        }
    }

    fn errored(target: &Target, status: Status, error: impl Into<String>) -> Self {
        Self { error: Some(error.into()), ..Self::new(target, status) }
    }
}

impl Node {
    /// Runs `op` on every target, at most `options.concurrency` at once, sending each
    /// target's result on `results` as it arrives. Returns when every target has a result,
    /// or early if `results` is closed (the operations under way are then cancelled).
    pub async fn fleet(
        &self,
        targets: Vec<Target>,
        op: FleetOp,
        options: FleetOptions,
        results: mpsc::Sender<TargetResult>,
    ) {
        let parallel = options.concurrency.max(1) as usize;
        let timeout = Duration::from_millis(options.timeout_ms.max(1));
        let mut queue = targets.into_iter();
        let mut running = JoinSet::new();
        let mut by_task = std::collections::HashMap::new();
        loop {
            while running.len() < parallel {
                let Some(target) = queue.next() else { break };
                let (node, op, t) = (self.clone(), op.clone(), target.clone());
                let task =
                    running.spawn(crate::node::lookup::inherit(async move { node.on_target(&t, op, timeout).await }));
                by_task.insert(task.id(), target);
            }
            let result = match running.join_next_with_id().await {
                None => return,
                Some(Ok((task, result))) => {
                    by_task.remove(&task);
                    result
                }
                // A panic is a bug of ours; the target still gets its line.
                Some(Err(e)) => {
                    let target = by_task.remove(&e.id()).expect("every task has a target");
                    TargetResult::errored(&target, Status::Failed, format!("internal error: {e}"))
                }
            };
            if results.send(result).await.is_err() {
                return;
            }
        }
    }

    async fn on_target(&self, target: &Target, op: FleetOp, timeout: Duration) -> TargetResult {
        let started = Instant::now();
        let Some(peer) = target.dest() else {
            return TargetResult::errored(target, Status::Unreachable, "not a node id");
        };
        // A job's target answers once the command ended or went on as a job.
        let timeout = match &op {
            FleetOp::ExecJob { after_ms, .. } => Duration::from_millis(*after_ms),
            _ => timeout,
        };
        let run = async {
            match op {
                FleetOp::Exec(spec) => self.exec_on(target, peer, spec, timeout, None).await,
                FleetOp::ExecJob { spec, after_ms } => self.exec_on(target, peer, spec, timeout, Some(after_ms)).await,
                FleetOp::Read { path, max_bytes } => self.read_on(target, peer, path, max_bytes).await,
                FleetOp::Write { path, mode, content } => self.write_on(target, peer, path, mode, &content).await,
            }
        };
        let mut result = match tokio::time::timeout(timeout + GRACE, run).await {
            Ok(result) => result,
            Err(_) => TargetResult::errored(
                target,
                Status::TimedOut,
                format!("no answer within {} s", (timeout + GRACE).as_secs()),
            ),
        };
        result.duration_ms = started.elapsed().as_millis() as u64;
        result
    }

    /// Runs the command on one target; with `job_after` (ms), as a job after that long.
    async fn exec_on(
        &self,
        target: &Target,
        peer: Dest,
        spec: ExecSpec,
        timeout: Duration,
        job_after: Option<u64>,
    ) -> TargetResult {
        let timeout_ms = match job_after {
            // A job keeps the command's own timeout, however long.
            Some(_) => spec.timeout_ms,
            None => Some(spec.timeout_ms.unwrap_or(u64::MAX).min(timeout.as_millis() as u64)),
        };
        let spec = ExecSpec { request_id: rand::random(), timeout_ms, stdin: false, ..spec };
        let ran = match job_after {
            None => self.exec_gathered(peer, spec, None, usize::MAX).await,
            Some(after_ms) => {
                let job = tunnel_proto::job::JobStart { after_ms, label: target.name.clone() };
                self.exec_job_gathered(peer, crate::JobLaunch::Exec { spec, job }, usize::MAX).await
            }
        };
        let mut result = TargetResult::new(target, Status::Failed);
        let last = match ran {
            Ok(gathered) => {
                result.stdout = String::from_utf8_lossy(&gathered.stdout).into_owned();
                result.stderr = String::from_utf8_lossy(&gathered.stderr).into_owned();
                Ok(gathered.last)
            }
            Err(e) => Err(e),
        };
        match last {
            Err(e) => return TargetResult { status: Status::Unreachable, error: Some(e.to_string()), ..result },
            Ok(Some(ExecEvent::Exit(exit))) => {
                result.status = if exit.timed_out {
                    Status::TimedOut
                } else if exit.code == Some(0) {
                    Status::Ok
                } else {
                    Status::Failed
                };
                result.exit_code = exit.code;
                result.signal = exit.signal;
                result.stdout_bytes = exit.stdout_bytes;
                result.stderr_bytes = exit.stderr_bytes;
                result.truncated = exit.stdout_truncated || exit.stderr_truncated;
                if exit.timed_out {
                    result.error = Some(format!("timed out after {} s and was killed", timeout.as_secs_f64()));
                }
            }
            Ok(Some(ExecEvent::Refused(why))) => {
                result.status = Status::Refused;
                result.error = Some(why);
            }
            Ok(Some(ExecEvent::Failed(why))) => result.error = Some(why),
            Ok(Some(ExecEvent::Detached(job))) => {
                result.status = Status::Running;
                result.job = Some(job.reference().to_string());
            }
            Ok(_) => {
                result.status = Status::Unreachable;
                result.error = Some("the exec stream ended without an outcome".into());
            }
        }
        result
    }

    async fn open_file_stream(&self, target: &Target, peer: NodeId, kind: StreamKind) -> Result<Stream, TargetResult> {
        self.open_stream(peer, kind)
            .await
            .map_err(|e| TargetResult::errored(target, Status::Unreachable, e.to_string()))
    }

    async fn read_on(&self, target: &Target, peer: Dest, path: String, max_bytes: u64) -> TargetResult {
        let (mut kept, mut hash, mut total) = (Vec::new(), Sha256::new(), 0u64);
        let read = self.read_whole(peer, path, |chunk| {
            hash.update(chunk);
            total += chunk.len() as u64;
            let room = (max_bytes as usize).saturating_sub(kept.len());
            kept.extend_from_slice(&chunk[..room.min(chunk.len())]);
            Ok(())
        });
        match read.await {
            Ok(()) => TargetResult {
                stdout: String::from_utf8_lossy(&kept).into_owned(),
                stdout_bytes: total,
                truncated: total > kept.len() as u64,
                sha256: Some(hex(&hash.finalize())),
                ..TargetResult::new(target, Status::Ok)
            },
            Err(ReadEnd::Refused(why)) => TargetResult::errored(target, Status::Refused, why),
            Err(ReadEnd::Failed(why)) => TargetResult::errored(target, Status::Failed, why),
            Err(ReadEnd::Lost(why)) => TargetResult::errored(target, Status::Unreachable, why),
        }
    }

    async fn write_on(
        &self,
        target: &Target,
        peer: Dest,
        path: String,
        mode: Option<u32>,
        content: &[u8],
    ) -> TargetResult {
        let spec = WriteSpec {
            request_id: rand::random(),
            path: path.into(),
            size: content.len() as u64,
            mode,
            create_only: false,
        };
        let Stream { reader, mut writer, .. } =
            match self.open_file_stream(target, peer.peer, peer.write_kind(spec)).await {
                Ok(s) => s,
                Err(r) => return r,
            };
        let mut events = FileEvents::new(reader);
        // The answer may come before all bytes are sent (a refusal): listen while sending.
        let send = async {
            let _ = writer.write_all(content).await;
            let _ = writer.finish().await;
            std::future::pending::<()>().await
        };
        let answer = tokio::select! {
            answer = events.next() => answer,
            _ = send => unreachable!("sending never finishes first"),
        };
        match answer {
            Ok(FileEvent::Done { bytes, backup }) => {
                TargetResult { stdout_bytes: bytes, backup, ..TargetResult::new(target, Status::Ok) }
            }
            Ok(FileEvent::Refused(why)) => TargetResult::errored(target, Status::Refused, why),
            Ok(FileEvent::Failed(why)) => TargetResult::errored(target, Status::Failed, why),
            Ok(other) => TargetResult::errored(target, Status::Failed, format!("unexpected answer: {other:?}")),
            Err(why) => TargetResult::errored(target, Status::Unreachable, why),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

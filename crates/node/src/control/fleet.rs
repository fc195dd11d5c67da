//! Fleet operations over the control socket: the node fans out, the client gets each
//! target's result as it arrives (and reduces them itself: it may want all of them).

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::control::{read_frame, write_frame, ControlRequest, ControlResponse, ControlStream, FleetAction};
use crate::fleet::{FleetOp, FleetOptions, Status, TargetResult};
use crate::Node;

/// Largest file a fleet write carries (it is held in memory while it fans out).
pub const FLEET_WRITE_MAX: u64 = 256 << 20;

pub(crate) async fn serve<S: ControlStream>(
    stream: S,
    node: Node,
    target: String,
    action: FleetAction,
    options: FleetOptions,
) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    // For a fleet that may become a job: what it runs, and every result.
    let mut as_job = None;
    let op = match action {
        FleetAction::Exec(spec) => FleetOp::Exec(spec),
        FleetAction::ExecJob { spec, after_ms } => {
            as_job = Some((spec.command.to_line(), Vec::new()));
            FleetOp::ExecJob { spec, after_ms }
        }
        FleetAction::Read { path, max_bytes } => FleetOp::Read { path, max_bytes },
        FleetAction::Write { path, mode, size } => match receive(&mut rd, size).await {
            Ok(content) => FleetOp::Write { path, mode, content: Arc::new(content) },
            Err(e) => {
                let _ = write_frame(&mut wr, &ControlResponse::Error(e)).await;
                return;
            }
        },
    };
    let Some(targets) = announce_targets(&node, &target, &mut wr).await else { return };
    let label = target;
    let (tx, mut results) = mpsc::channel(256);
    let runner = node.clone();
    let run = tokio::spawn(crate::node::lookup::inherit(async move { runner.fleet(targets, op, options, tx).await }));
    let _run = tokio_util::task::AbortOnDropHandle::new(run);
    // The client closing its end means it gave up: returning drops `results`, which
    // cancels everything still running.
    let gone = async { while let Ok(Some(_)) = read_frame::<ControlRequest, _>(&mut rd).await {} };
    tokio::pin!(gone);
    loop {
        tokio::select! {
            result = results.recv() => {
                let frame = match result {
                    Some(r) => {
                        if let Some((_, all)) = &mut as_job {
                            all.push(r.clone());
                        }
                        ControlResponse::FleetResult(r)
                    }
                    None => {
                        if let Some(job) = as_job.take().and_then(|(command, all)| fleet_job(&node, label.clone(), &command, all)) {
                            if write_frame(&mut wr, &job).await.is_err() {
                                return;
                            }
                        }
                        ControlResponse::Done
                    }
                };
                let last = frame == ControlResponse::Done;
                if write_frame(&mut wr, &frame).await.is_err() || last {
                    return;
                }
            }
            _ = &mut gone => return,
        }
    }
}

/// The fleet job for `results`, if any target runs on as a job. Without one (no state
/// directory), each target's result still names its own job.
fn fleet_job(node: &Node, label: String, command: &str, results: Vec<TargetResult>) -> Option<ControlResponse> {
    if !results.iter().any(|r| r.status == Status::Running) {
        return None;
    }
    match crate::jobs::fleet::start(node, label, command, results) {
        Ok(info) => Some(ControlResponse::FleetJob(Box::new(info))),
        Err(e) => {
            tracing::warn!(error = %e, "no fleet job kept; each target's job is followed on its own");
            None
        }
    }
}

/// Selects the targets and tells the client which they are (the first answer of a fleet
/// operation or a job); `None` if the selection failed (the client has been told why) or
/// the client is gone.
pub(crate) async fn announce_targets<W: tokio::io::AsyncWrite + Unpin>(
    node: &Node,
    target: &str,
    wr: &mut W,
) -> Option<Vec<crate::fleet::targets::Target>> {
    match node.select(target).await {
        Ok(targets) => write_frame(wr, &ControlResponse::Targets(targets.clone())).await.ok().map(|()| targets),
        Err(e) => {
            let _ = write_frame(wr, &ControlResponse::Error(e.to_string())).await;
            None
        }
    }
}

/// The bytes of a fleet write: exactly `size` of them, then `InputEnd`.
async fn receive<R: tokio::io::AsyncRead + Unpin>(rd: &mut R, size: u64) -> Result<Vec<u8>, String> {
    if size > FLEET_WRITE_MAX {
        return Err(format!(
            "a fleet write carries at most {} MiB; copy bigger files with `tunnel cp`",
            FLEET_WRITE_MAX >> 20
        ));
    }
    receive_exactly(rd, size).await
}

/// Exactly `size` bytes of `Input` frames, then `InputEnd`.
pub(crate) async fn receive_exactly<R: tokio::io::AsyncRead + Unpin>(rd: &mut R, size: u64) -> Result<Vec<u8>, String> {
    // Grown as bytes arrive: an announced size reserves at most 1 MiB before they do.
    let mut content = Vec::with_capacity(size.min(1 << 20) as usize);
    loop {
        match read_frame::<ControlRequest, _>(rd).await {
            Ok(Some(ControlRequest::Input(bytes))) => {
                if content.len() as u64 + bytes.0.len() as u64 > size {
                    return Err(format!("more than the announced {size} bytes arrived"));
                }
                content.extend_from_slice(&bytes.0);
            }
            Ok(Some(ControlRequest::InputEnd)) if content.len() as u64 == size => return Ok(content),
            Ok(Some(ControlRequest::InputEnd)) => {
                return Err(format!("{} bytes arrived, not the announced {size}", content.len()))
            }
            Ok(Some(other)) => return Err(format!("expected the file's bytes, got {other:?}")),
            Ok(None) | Err(_) => return Err("the client went away before sending the whole file".into()),
        }
    }
}

//! The job operations a peer (or the local operator) asks of this node: list, wait, output,
//! cancel. A caller sees and stops its own jobs; others' only if it is one of this node's
//! admins, or on its allow list when it has one. Cancels are audited.

use std::time::Duration;

use tunnel_proto::job::JobInfo;
use tunnel_proto::message::{Op, RemoteError, RemoteErrorKind, Reply};
use tunnel_proto::NodeId;

use crate::policy::Refusal;
use crate::Node;

/// Most jobs one `jobs` answer lists (the answer is one message).
pub(crate) const LIST_MAX: usize = 200;

fn failed(message: String) -> RemoteError {
    RemoteError { kind: RemoteErrorKind::Failed, message }
}

fn refused(r: Refusal) -> RemoteError {
    RemoteError { kind: RemoteErrorKind::Refused, message: r.to_string() }
}

fn wait_of(ms: u32) -> Duration {
    Duration::from_millis(ms as u64).min(super::WAIT_MAX)
}

/// Answers a job operation from `from`; `operator` is the local CLI, which sees every job.
pub(crate) async fn answer(node: &Node, from: NodeId, op: Op, operator: bool) -> Result<Reply, RemoteError> {
    if !operator {
        node.policy_check(|p| p.check_caller(&from)).map_err(refused)?;
    }
    let others = if operator { Ok(()) } else { node.policy_check(|p| p.check_jobs_of_others(&from)) };
    let jobs = node.jobs();
    let visible = |job: &JobInfo| others.is_ok() || job.caller == from;
    let check = |job: &JobInfo| match &others {
        Err(r) if job.caller != from => Err(refused(r.clone())),
        _ => Ok(()),
    };
    match op {
        Op::Jobs { limit } => {
            let (jobs, truncated) = jobs.list((limit as usize).clamp(1, LIST_MAX), visible).await;
            Ok(Reply::Jobs { jobs, truncated })
        }
        Op::JobWait { id, wait_ms } => {
            check(&jobs.info(id).await.map_err(failed)?)?;
            Ok(Reply::Job(jobs.wait(id, wait_of(wait_ms)).await.map_err(failed)?))
        }
        Op::JobOutput { id, from: start, max, wait_ms } => {
            check(&jobs.info(id).await.map_err(failed)?)?;
            Ok(Reply::JobOutput(Box::new(jobs.output(id, start, max, wait_of(wait_ms)).await.map_err(failed)?)))
        }
        Op::JobCancel { id } => {
            let detail = serde_json::json!({ "job": id });
            let job = jobs.info(id).await.map_err(failed)?;
            if let Err(e) = check(&job) {
                node.audit_op(from, "job.cancel", "refused", Some(e.message.clone()), detail, None);
                return Err(e);
            }
            node.audit_op(from, "job.cancel", "allowed", None, detail, None);
            Ok(Reply::Job(jobs.cancel(id).await.map_err(failed)?))
        }
        other => Err(failed(format!("{} is not a job operation", other.name()))),
    }
}

//! The job operations a peer (or the local operator) asks of this node: list, wait, output,
//! cancel. A caller sees and stops its own jobs; others' only if it is one of this node's
//! admins, or on its allow list when it has one. Cancels are audited.

use std::time::Duration;

use tunnel_proto::job::JobInfo;
use tunnel_proto::message::{Op, RemoteError, Reply};
use tunnel_proto::NodeId;

use crate::policy::Refusal;
use crate::Node;

/// Most jobs one `jobs` answer lists (the answer is one message).
pub(crate) const LIST_MAX: usize = 200;

/// What a caller may do with what other callers left on this node (jobs, schedules): its own
/// always; others' as one of the node's admins (or its allow list when set), or as the local
/// operator.
pub(crate) struct Rights {
    caller: NodeId,
    others: Result<(), Refusal>,
}

impl Rights {
    /// Checks that `caller` may use this node at all, then what of others' it may touch.
    pub(crate) fn of(node: &Node, caller: NodeId, operator: bool) -> Result<Self, RemoteError> {
        if operator {
            return Ok(Self { caller, others: Ok(()) });
        }
        node.policy_check(|p| p.check_caller(&caller))?;
        Ok(Self { caller, others: node.policy_check(|p| p.check_jobs_of_others(&caller)) })
    }

    /// Whether something `owner` left is to be shown.
    pub(crate) fn sees(&self, owner: &NodeId) -> bool {
        self.others.is_ok() || *owner == self.caller
    }

    /// Something `owner` left may be read or stopped; the refusal otherwise.
    pub(crate) fn check(&self, owner: &NodeId) -> Result<(), RemoteError> {
        match &self.others {
            Err(r) if *owner != self.caller => Err(r.clone().into()),
            _ => Ok(()),
        }
    }
}

fn wait_of(ms: u32) -> Duration {
    Duration::from_millis(ms as u64).min(super::WAIT_MAX)
}

/// Answers a job operation from `from`; `operator` is the local CLI, which sees every job.
pub(crate) async fn answer(node: &Node, from: NodeId, op: Op, operator: bool) -> Result<Reply, RemoteError> {
    let rights = Rights::of(node, from, operator)?;
    let jobs = node.jobs();
    let visible = |job: &JobInfo| rights.sees(&job.caller);
    let check = |job: &JobInfo| rights.check(&job.caller);
    match op {
        Op::Jobs { limit } => {
            let (jobs, truncated) = jobs.list((limit as usize).clamp(1, LIST_MAX), visible).await;
            Ok(Reply::Jobs { jobs, truncated })
        }
        Op::JobWait { id, wait_ms } => {
            check(&jobs.info(id).await.map_err(RemoteError::failed)?)?;
            Ok(Reply::Job(jobs.wait(id, wait_of(wait_ms)).await.map_err(RemoteError::failed)?))
        }
        Op::JobOutput { id, from: start, max, wait_ms } => {
            check(&jobs.info(id).await.map_err(RemoteError::failed)?)?;
            Ok(Reply::JobOutput(Box::new(
                jobs.output(id, start, max, wait_of(wait_ms)).await.map_err(RemoteError::failed)?,
            )))
        }
        Op::JobCancel { id } => {
            let detail = serde_json::json!({ "job": id });
            let job = jobs.info(id).await.map_err(RemoteError::failed)?;
            if let Err(e) = check(&job) {
                node.audit_op(from, "job.cancel", "refused", Some(e.message.clone()), detail, None);
                return Err(e);
            }
            node.audit_op(from, "job.cancel", "allowed", None, detail, None);
            Ok(Reply::Job(jobs.cancel(id).await.map_err(RemoteError::failed)?))
        }
        other => Err(RemoteError::failed(format!("{} is not a job operation", other.name()))),
    }
}

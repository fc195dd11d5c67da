//! The schedule operations a peer (or the local operator) asks of this node. Any caller the
//! policy lets in may add a schedule, if the command would be allowed now (each run is
//! checked again when it comes due); a caller sees, runs and removes its own schedules,
//! others' only as one of this node's admins (or its allow list, when set). All audited.

use tunnel_proto::job::OutputFrom;
use tunnel_proto::message::{ByteBuf, Op, RemoteError, Reply};
use tunnel_proto::schedule::{ScheduleInfo, ScheduleRun};
use tunnel_proto::NodeId;

use super::{Record, StoredRun};
use crate::Node;

/// Bytes of each run's output `schedule runs` shows.
const TAIL_BYTES: u32 = 1024;
const RUNS_MAX: u32 = 50;

pub(crate) async fn answer(node: &Node, from: NodeId, op: Op, operator: bool) -> Result<Reply, RemoteError> {
    let rights = crate::jobs::answer::Rights::of(node, from, operator)?;
    let mine = |r: &Record| rights.check(&r.created_by);
    let schedules = node.schedules();
    match op {
        Op::ScheduleAdd { spec } => {
            let detail = serde_json::json!({
                "schedule": spec.name, "cron": spec.cron, "timezone": spec.timezone,
                "command": crate::services::exec::audit_command(&spec.command),
            });
            let cmd = crate::services::exec::command_line(&spec.command);
            let allowed = node.policy_check(|p| {
                p.check_command(&cmd)?;
                if let Some(cwd) = &spec.cwd {
                    p.check_path(cwd, crate::policy::PathAccess::Read)?;
                }
                Ok(())
            });
            if let Err(r) = allowed {
                node.audit_op(from, "schedule.add", "refused", Some(r.rule.clone()), detail, None);
                return Err(r.into());
            }
            let record = schedules.add(spec, from).map_err(RemoteError::failed)?;
            node.audit_op(from, "schedule.add", "allowed", None, detail, None);
            let (record, next) = schedules.get(&record.spec.name).map_err(RemoteError::failed)?;
            Ok(Reply::Schedule(Box::new(info(node, record, next).await)))
        }
        Op::Schedules => {
            let mut out = Vec::new();
            for (record, next) in schedules.list() {
                if rights.sees(&record.created_by) {
                    out.push(info(node, record, next).await);
                }
            }
            Ok(Reply::Schedules(out))
        }
        Op::ScheduleRemove { name } => {
            let (record, _) = schedules.get(&name).map_err(RemoteError::failed)?;
            let detail = serde_json::json!({ "schedule": name });
            if let Err(e) = mine(&record) {
                node.audit_op(from, "schedule.rm", "refused", Some(e.message.clone()), detail, None);
                return Err(e);
            }
            let record = schedules.remove(&name).map_err(RemoteError::failed)?;
            node.audit_op(from, "schedule.rm", "allowed", None, detail, None);
            Ok(Reply::Schedule(Box::new(info(node, record, None).await)))
        }
        Op::ScheduleRuns { name, limit } => {
            let (record, _) = schedules.get(&name).map_err(RemoteError::failed)?;
            mine(&record)?;
            let mut runs = Vec::new();
            for run in record.runs.iter().rev().take(limit.clamp(1, RUNS_MAX) as usize) {
                runs.push(run_of(node, run).await);
            }
            Ok(Reply::ScheduleRuns(runs))
        }
        Op::ScheduleRunNow { name } => {
            let (record, _) = schedules.get(&name).map_err(RemoteError::failed)?;
            let detail = serde_json::json!({ "schedule": name });
            if let Err(e) = mine(&record) {
                node.audit_op(from, "schedule.run_now", "refused", Some(e.message.clone()), detail, None);
                return Err(e);
            }
            node.audit_op(from, "schedule.run_now", "allowed", None, detail, None);
            let run = super::fire(node, &name, 0, None).await;
            Ok(Reply::ScheduleRuns(vec![run_of(node, &run).await]))
        }
        other => Err(RemoteError::failed(format!("{} is not a schedule operation", other.name()))),
    }
}

async fn info(node: &Node, record: Record, next_ms: Option<i64>) -> ScheduleInfo {
    let last = match record.runs.last() {
        Some(run) => Some(run_of(node, run).await),
        None => None,
    };
    ScheduleInfo {
        spec: record.spec,
        node: node.id(),
        created_by: record.created_by,
        created_ms: record.created_ms,
        next_ms,
        last,
    }
}

/// A stored run with its job's state now and the end of its output.
async fn run_of(node: &Node, run: &StoredRun) -> ScheduleRun {
    let (job, tail) = match run.job {
        Some(id) => {
            match node.jobs().output(id, OutputFrom::Tail(TAIL_BYTES as u64), TAIL_BYTES, Default::default()).await {
                Ok(out) => (Some(out.job), out.data),
                Err(_) => (None, ByteBuf::default()),
            }
        }
        None => (None, ByteBuf::default()),
    };
    ScheduleRun { at_ms: run.at_ms, job, error: run.error.clone(), missed: run.missed, tail }
}

//! Fleet jobs: a fleet exec whose commands went on as jobs on their targets. The node that
//! fanned it out keeps a job of its own standing for the whole: its output lists each
//! target's child job, a line per child as it ends, and at the end the results reduced to
//! groups; it ends `exited` with 0 when every target succeeded, else 1. Cancelling it
//! cancels every child still running.
//!
//! The children live on their targets. If this node stops, the fleet job is `lost`, and its
//! output already names the children to follow one by one.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tunnel_proto::job::{JobInfo, JobRef, JobStart, JobState, OutputFrom};
use tunnel_proto::message::{ExecExit, Op, Reply};
use tunnel_proto::NodeId;

use super::{store, JobRun, WAIT_MAX};
use crate::fleet::reduce::{reduce, GroupBy, Limits};
use crate::fleet::{Status, TargetResult};
use crate::node::rpc::RpcError;
use crate::Node;

/// Why a fleet job is lost: this node stopped following its children, which run on.
pub(crate) const FLEET_UNFOLLOWED: &str = "the node stopped while it followed this fleet's child jobs; they run on \
     where they are (their ids are in this job's output)";

/// How much of each child's output its result keeps (the tail).
const CHILD_OUTPUT_TAIL: u32 = 4096;
/// Each request to a child's node: a long poll, plus the way there and back.
const ASK_TIMEOUT: Duration = Duration::from_secs(WAIT_MAX.as_secs() + 15);
/// Failed asks about one child in a row before it is given up as unreachable.
const ASK_RETRIES: u32 = 5;

/// Starts the fleet job for `results` (some `Running`, with their child job ids), watched
/// from here until every child ended. `label` is the target expression.
pub(crate) fn start(node: &Node, label: String, command: &str, results: Vec<TargetResult>) -> Result<JobInfo, String> {
    let start = JobStart { after_ms: 0, label };
    let mut run = JobRun::new(start, node.id(), format!("fleet: {command}")).orphaned_as(FLEET_UNFOLLOWED);
    let info = run.detach(node.jobs(), None, store::now_ms())?;
    let running = results.iter().filter(|r| r.status == Status::Running).count();
    let mut head = format!("fleet job over {} targets; {running} run on as jobs:\n", results.len());
    for r in results.iter().filter(|r| r.status == Status::Running) {
        head.push_str(&format!("  {:<24} {}\n", r.name, r.job.as_deref().unwrap_or("?")));
    }
    run.record(head.as_bytes());
    let detail =
        serde_json::json!({ "job": info.id, "fleet": info.label, "targets": results.len(), "running": running });
    node.audit_op(node.id(), "job.start", "allowed", None, detail, None);
    tokio::spawn(watch(node.clone(), run, results));
    Ok(info)
}

/// Follows every running child to its end, then records the reduced results.
async fn watch(node: Node, mut run: JobRun, mut results: Vec<TargetResult>) {
    let started = Instant::now();
    let mut follow = JoinSet::new();
    let mut children = Vec::new();
    for (i, r) in results.iter().enumerate().filter(|(_, r)| r.status == Status::Running) {
        let child = r.id.parse::<NodeId>().ok().zip(r.job.as_deref().and_then(|j| j.parse::<JobRef>().ok()));
        let Some((peer, job)) = child else { continue };
        children.push((peer, job.seq));
        let node = node.clone();
        follow.spawn(async move { (i, follow_child(&node, peer, job.seq).await) });
    }
    let mut cancelled = false;
    loop {
        tokio::select! {
            done = follow.join_next() => match done {
                None => break,
                Some(Ok((i, ended))) => {
                    let r = &mut results[i];
                    apply(r, ended);
                    let line = format!("{}: {}{}\n", r.name, r.status.as_str(), exit_text(r));
                    run.record(line.as_bytes());
                }
                Some(Err(e)) => tracing::warn!(error = %e, "following a fleet job's child failed"),
            },
            _ = run.cancelled(), if !cancelled => {
                cancelled = true;
                for &(peer, id) in &children {
                    let node = node.clone();
                    tokio::spawn(async move { node.request(peer, Op::JobCancel { id }, ASK_TIMEOUT).await });
                }
            }
        }
    }
    let reduction = reduce(&results, &GroupBy::Output, Limits::default());
    let mut summary = String::from("\n");
    for g in &reduction.groups {
        summary.push_str(&format!("{} {}{}: {}\n", g.count, g.status.as_str(), code_text(g.exit_code), g.members));
        for line in g.stdout.lines().chain(g.stderr.lines()).take(10) {
            summary.push_str(&format!("    {line}\n"));
        }
        if let Some(e) = &g.error {
            summary.push_str(&format!("    {e}\n"));
        }
    }
    run.record(summary.as_bytes());
    let all_ok = reduction.all_ok();
    let exit = ExecExit { code: Some(if all_ok { 0 } else { 1 }), cancelled, ..Default::default() };
    let Some(info) = run.finish(node.jobs(), &Ok(exit)) else { return };
    let record = crate::audit::Entry {
        exit_code: info.exit_code,
        duration_ms: Some(started.elapsed().as_millis() as u64),
        ..Default::default()
    };
    let detail = serde_json::json!({ "job": info.id, "state": info.state.as_str(), "fleet": info.label });
    node.audit_op(info.caller, "job.end", "allowed", None, detail, Some(record));
}

/// How a child ended: its final state and the tail of its output, or why it could not be
/// followed.
type Ended = Result<(JobInfo, String), String>;

async fn follow_child(node: &Node, peer: NodeId, id: u64) -> Ended {
    let mut failures = 0;
    let info = loop {
        let wait_ms = WAIT_MAX.as_millis() as u32;
        match node.request(peer, Op::JobWait { id, wait_ms }, ASK_TIMEOUT).await {
            Ok(Reply::Job(info)) if !info.state.is_running() => break info,
            Ok(Reply::Job(_)) => failures = 0,
            Ok(other) => return Err(format!("unexpected answer: {other:?}")),
            // The child's node answered no (no such job, not allowed): asking again will not help.
            Err(RpcError::Remote { error, .. }) => return Err(error.message),
            Err(e) => {
                failures += 1;
                if failures >= ASK_RETRIES {
                    return Err(format!("its node could not be asked about it: {e}"));
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    let from = OutputFrom::Tail(CHILD_OUTPUT_TAIL as u64);
    let op = Op::JobOutput { id, from, max: CHILD_OUTPUT_TAIL, wait_ms: 0 };
    let tail = match node.request(peer, op, ASK_TIMEOUT).await {
        Ok(Reply::JobOutput(out)) => String::from_utf8_lossy(&out.data).into_owned(),
        _ => String::new(),
    };
    Ok((info, tail))
}

/// A running target's result, made final by how its job ended.
fn apply(r: &mut TargetResult, ended: Ended) {
    match ended {
        Ok((info, tail)) => {
            r.status = match info.state {
                JobState::Exited if info.exit_code == Some(0) => Status::Ok,
                JobState::TimedOut => Status::TimedOut,
                JobState::Lost => Status::Unreachable,
                _ => Status::Failed,
            };
            r.exit_code = info.exit_code;
            r.signal = info.signal;
            r.stdout_bytes = info.output_bytes;
            r.truncated = info.output_bytes > tail.len() as u64;
            r.stdout = tail;
            r.error = info.reason.or_else(|| (info.state == JobState::Cancelled).then(|| "cancelled".into()));
            r.duration_ms = info.ended_ms.unwrap_or(info.started_ms).saturating_sub(info.started_ms).max(0) as u64;
        }
        Err(why) => {
            r.status = Status::Unreachable;
            r.error = Some(why);
        }
    }
}

fn exit_text(r: &TargetResult) -> String {
    let mut text = code_text(r.exit_code);
    if let Some(e) = &r.error {
        text.push_str(&format!(" ({e})"));
    }
    text
}

fn code_text(code: Option<i32>) -> String {
    code.map(|c| format!(" exit {c}")).unwrap_or_default()
}

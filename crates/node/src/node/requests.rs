//! Request/response operations a peer asks of this node: info, mode changes, stat, list,
//! mkdir. Each is checked by policy and audited here; streams (exec, files) have services of
//! their own.

use tracing::info;
use tunnel_proto::message::{NodeInfo, Op, RemoteError, RemoteErrorKind, Reply};
use tunnel_proto::NodeId;

use super::Node;
use crate::audit::Entry;
use crate::policy::{Mode, PathAccess, Refusal};

/// Most entries one `list` returns.
pub(crate) const LIST_MAX: usize = 10_000;
/// Most audit records one `audit_tail` returns, and the bytes they may take (the answer is
/// one message).
pub(crate) const AUDIT_MAX: usize = 1000;
const AUDIT_BYTES: usize = 192 * 1024;

impl Node {
    /// Changes this node's mode. `by` is the peer asking, `None` for the local operator.
    pub fn set_mode(&self, mode: Mode, by: Option<NodeId>) -> Result<(), Refusal> {
        let allowed = self.policy_check(|p| {
            if let Some(peer) = &by {
                p.check_caller(peer)?;
            }
            p.check_set_mode(by.as_ref())
        });
        let detail = serde_json::json!({ "mode": mode.to_string() });
        let (decision, rule) = match &allowed {
            Ok(()) => ("allowed", None),
            Err(r) => ("refused", Some(r.rule.clone())),
        };
        match by {
            Some(peer) => self.audit_op(peer, "mode.set", decision, rule, detail, None),
            None => self.audit(Entry {
                event: "mode.set".into(),
                decision: decision.into(),
                rule,
                detail,
                ..Default::default()
            }),
        }
        allowed?;
        self.inner.policy.write().expect("policy lock").mode = mode;
        self.inner.endpoint.update_hello(|h| h.mode = mode.to_string());
        info!(%mode, "safety mode changed");
        Ok(())
    }

    fn info(&self) -> NodeInfo {
        let policy = self.inner.policy.read().expect("policy lock");
        NodeInfo {
            hostname: crate::services::os_info::hostname(),
            os: crate::services::os_info::detect(),
            shell: std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into()),
            uptime_secs: crate::services::os_info::uptime_secs().unwrap_or(0),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            mode: policy.mode.to_string(),
            policy: policy.summary(),
        }
    }

    /// Answers one peer request. Ping is part of membership and always answered; the rest is
    /// checked by policy and audited.
    pub(super) async fn handle_request(&self, from: NodeId, op: Op) -> Result<Reply, RemoteError> {
        match op {
            Op::Ssh { host, op } => crate::ssh::answer_request(self, from, host, *op).await,
            op => self.answer(from, op, false).await,
        }
    }

    /// Answers a request of the local operator (the CLI on this machine) for this node.
    pub(crate) async fn answer_operator(&self, op: Op) -> Result<Reply, RemoteError> {
        self.answer(self.id(), op, true).await
    }

    /// The operations this node answers itself: reading the audit log off the runtime's
    /// threads, the rest at once.
    async fn answer(&self, from: NodeId, op: Op, operator: bool) -> Result<Reply, RemoteError> {
        match op {
            Op::AuditTail { limit, event_prefix } => self.audit_tail(from, limit, event_prefix, operator).await,
            op @ (Op::Jobs { .. } | Op::JobWait { .. } | Op::JobOutput { .. } | Op::JobCancel { .. }) => {
                crate::jobs::answer::answer(self, from, op, operator).await
            }
            op @ (Op::ScheduleAdd { .. }
            | Op::Schedules
            | Op::ScheduleRemove { .. }
            | Op::ScheduleRuns { .. }
            | Op::ScheduleRunNow { .. }) => crate::schedules::answer::answer(self, from, op, operator).await,
            op => self.answer_now(from, op, operator),
        }
    }

    /// The newest records of this node's audit log, for its admins (and allow list) or the
    /// local operator. The read itself is audited.
    async fn audit_tail(&self, from: NodeId, limit: u32, prefix: String, operator: bool) -> Result<Reply, RemoteError> {
        let detail = serde_json::json!({ "limit": limit, "event_prefix": prefix });
        let checked = if operator { Ok(()) } else { self.policy_check(|p| p.check_audit_reader(&from)) };
        if let Err(r) = checked {
            self.audit_op(from, "audit.read", "refused", Some(r.rule.clone()), detail, None);
            return Err(RemoteError { kind: RemoteErrorKind::Refused, message: r.to_string() });
        }
        let Some(state_dir) = self.state_dir().map(ToOwned::to_owned) else {
            return Err(RemoteError { kind: RemoteErrorKind::Failed, message: "this node keeps no audit log".into() });
        };
        let limit = (limit as usize).clamp(1, AUDIT_MAX);
        let read = tokio::task::spawn_blocking(move || crate::audit::newest_lines(&state_dir, limit, &prefix)).await;
        let mut lines = match read {
            Ok(Ok(lines)) => lines,
            Ok(Err(e)) => return Err(RemoteError { kind: RemoteErrorKind::Failed, message: e.to_string() }),
            Err(e) => {
                return Err(RemoteError {
                    kind: RemoteErrorKind::Failed,
                    message: format!("reading the audit log: {e}"),
                })
            }
        };
        // The newest records that fit in one answer.
        let mut bytes = 0;
        let keep = lines.iter().rev().take_while(|l| {
            bytes += l.len() + 8;
            bytes <= AUDIT_BYTES
        });
        let skip = lines.len() - keep.count();
        lines.drain(..skip);
        self.audit_op(from, "audit.read", "allowed", None, detail, None);
        Ok(Reply::Audit { lines, truncated: skip > 0 })
    }

    fn answer_now(&self, from: NodeId, op: Op, operator: bool) -> Result<Reply, RemoteError> {
        let refused = |r: Refusal| RemoteError { kind: RemoteErrorKind::Refused, message: r.to_string() };
        let failed = |m: String| RemoteError { kind: RemoteErrorKind::Failed, message: m };
        match op {
            Op::Ping { payload } => Ok(Reply::Pong { payload }),
            Op::Ssh { .. } => Err(failed("operations on SSH hosts go to the node that reaches them".into())),
            // `answer` reads the audit log before calling here.
            Op::AuditTail { .. }
            | Op::Jobs { .. }
            | Op::JobWait { .. }
            | Op::JobOutput { .. }
            | Op::JobCancel { .. }
            | Op::ScheduleAdd { .. }
            | Op::Schedules
            | Op::ScheduleRemove { .. }
            | Op::ScheduleRuns { .. }
            | Op::ScheduleRunNow { .. } => Err(failed(format!("{} is answered asynchronously", op.name()))),
            Op::SetMode { mode } => {
                let mode: Mode = mode.parse().map_err(|e: String| failed(e))?;
                // From our own id means from a local front-end: the local operator.
                let by = (from != self.id()).then_some(from);
                self.set_mode(mode, by).map_err(refused)?;
                Ok(Reply::Done)
            }
            Op::Info => {
                self.policy_check(|p| p.check_caller(&from)).map_err(refused)?;
                Ok(Reply::Info(self.info()))
            }
            Op::Stat { path } => {
                let canonical = self.checked_read(from, "fs.stat", path.as_path(), operator).map_err(refused)?;
                let result = crate::services::fs::stat(&canonical).map(Reply::Stat);
                self.audit_op(from, "fs.stat", outcome(&result), None, serde_json::json!({ "path": path }), None);
                result.map_err(failed)
            }
            Op::Mkdir { path, mode } => {
                let detail = serde_json::json!({ "path": path, "mode": mode });
                let checked = self.policy_check(|p| {
                    p.check_caller(&from)?;
                    p.check_file(path.as_path(), PathAccess::Write, operator)
                });
                let canonical = match checked {
                    Ok(c) => c,
                    Err(r) => {
                        self.audit_op(from, "fs.mkdir", "refused", Some(r.rule.clone()), detail, None);
                        return Err(refused(r));
                    }
                };
                let result = crate::services::fs::mkdir(&canonical, mode).map(|()| Reply::Done);
                self.audit_op(from, "fs.mkdir", outcome(&result), None, detail, None);
                result.map_err(failed)
            }
            Op::List { path, limit } => {
                let canonical = self.checked_read(from, "fs.list", path.as_path(), operator).map_err(refused)?;
                let result = crate::services::fs::list(&canonical, (limit as usize).clamp(1, LIST_MAX))
                    .map(|(entries, truncated)| Reply::List { entries, truncated });
                self.audit_op(from, "fs.list", outcome(&result), None, serde_json::json!({ "path": path }), None);
                result.map_err(failed)
            }
        }
    }

    /// Policy for a read-only path operation; a refusal is audited here.
    fn checked_read(
        &self,
        from: NodeId,
        event: &str,
        path: &std::path::Path,
        operator: bool,
    ) -> Result<std::path::PathBuf, Refusal> {
        let checked = self.policy_check(|p| {
            p.check_caller(&from)?;
            p.check_file(path, PathAccess::Read, operator)
        });
        if let Err(r) = &checked {
            self.audit_op(from, event, "refused", Some(r.rule.clone()), serde_json::json!({ "path": path }), None);
        }
        checked
    }
}

fn outcome<T, E>(result: &Result<T, E>) -> &'static str {
    if result.is_ok() {
        "allowed"
    } else {
        "failed"
    }
}

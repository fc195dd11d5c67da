//! Delegated tasks: the AI agent this node is configured with (`task_agent`, such as
//! `["claude", "-p"]`) run as a job with a caller's prompt as its last argument.
//!
//! The agent is the operator's choice, so it is not held to the command lists; the mode still
//! decides: `edit` and `bypass` run `task_agent` (confined as any command in that mode);
//! `plan` runs only `task_agent_plan`, the agent's own read-only invocation if the operator
//! named one, with the node's secrets shielded as in edit mode (the agent writes its own
//! state, so a read-only sandbox would stop it); `disabled` runs nothing. The prompt never
//! reaches the audit log or job listings: its SHA-256 and length do.

use sha2::{Digest, Sha256};
use tunnel_net::Stream;
use tunnel_proto::job::{JobStart, TaskSpec};
use tunnel_proto::message::{ExecCommand, ExecEvent, ExecSpec};

use crate::policy::{CommandLine, Mode, PathAccess, Refusal};
use crate::services::confine::Plan;
use crate::services::exec::{already_ran, refuse, run_decided, send_last, Decided};

pub(crate) async fn serve(node: crate::Node, stream: Stream, task: TaskSpec) {
    let Stream { peer, reader, writer, .. } = stream;
    let hash: String = Sha256::digest(task.prompt.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let mut detail = serde_json::json!({
        "request_id": task.request_id,
        "prompt_sha256": hash,
        "prompt_bytes": task.prompt.len(),
        "cwd": task.cwd,
    });
    if !node.begin_request(peer, task.request_id) {
        return send_last(writer, &already_ran(task.request_id)).await;
    }
    let decision = node.policy_check(|p| {
        p.check_caller(&peer)?;
        let (agent, plan) = match p.mode {
            Mode::Disabled => return Err(Refusal::new("mode disabled runs nothing")),
            Mode::Plan => match &p.task_agent_plan {
                Some(agent) => (agent.clone(), Plan::of(p).confined_as_edit()),
                None => {
                    return Err(Refusal::new(
                        "mode plan runs a task agent only through its read-only invocation, and this node \
                         names none (task_agent_plan in its config)",
                    ))
                }
            },
            Mode::Edit | Mode::Bypass => match &p.task_agent {
                Some(agent) => (agent.clone(), Plan::of(p)),
                None => return Err(Refusal::new("this node has no task agent (task_agent in its config)")),
            },
        };
        if let Some(cwd) = &task.cwd {
            let access = if p.mode == Mode::Plan { PathAccess::Read } else { PathAccess::Write };
            p.check_path(cwd, access)?;
        }
        Ok((agent, plan))
    });
    let (agent, plan) = match decision {
        Ok(d) => d,
        Err(refusal) => return refuse(&node, peer, "task", refusal, detail, writer, ExecEvent::Refused).await,
    };
    detail["agent"] = serde_json::json!(agent);
    let title = format!("{} <prompt: {} bytes, sha256 {}>", agent.join(" "), task.prompt.len(), &hash[..12]);
    let mut argv = agent;
    argv.push(task.prompt);
    let spec = ExecSpec {
        request_id: task.request_id,
        command: ExecCommand::Argv(argv.clone()),
        env: Vec::new(),
        cwd: task.cwd,
        timeout_ms: None,
        output_cap: 0,
        stdin: false,
    };
    let start = Some(JobStart { after_ms: 0, label: task.label });
    let cmd = CommandLine::argv(argv);
    node.audit_op(peer, "task.start", "allowed", None, detail.clone(), None);
    let decided =
        Decided { peer, reader, writer, spec, cmd, plan, plan_env: false, detail, event: "task", title, start };
    run_decided(node, decided).await
}

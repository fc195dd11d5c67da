//! The `git` tool: git in a repository on a node or SSH host, with branch, ahead/behind,
//! changed files and commits as structured content beside git's text. The node that runs it
//! decides by its mode (plan: reading verbs only).

use rmcp::model::CallToolResult;
use rmcp::ErrorData as McpError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tunnel_node::control::{ControlRequest, ControlResponse};
use tunnel_node::git::{GitCommit, GitFile, GitRequest};

use crate::ops_node::next_step;
use crate::server::{check_target, failure, invalid, success, TunnelMcp};

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Verb {
    Status,
    Log,
    Diff,
    Show,
    Fetch,
    Pull,
    Commit,
    Push,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GitParams {
    pub(crate) target: String,
    /// The repository's absolute path on the target.
    pub(crate) path: String,
    pub(crate) verb: Verb,
    /// git's arguments, such as ["-m", "msg"].
    #[serde(default)]
    pub(crate) args: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct GitOut {
    pub(crate) exit_code: Option<i32>,
    pub(crate) text: String,
    pub(crate) branch: Option<String>,
    pub(crate) upstream: Option<String>,
    pub(crate) ahead: Option<u32>,
    pub(crate) behind: Option<u32>,
    pub(crate) files: Vec<FileOut>,
    pub(crate) commits: Vec<CommitOut>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct FileOut {
    pub(crate) path: String,
    pub(crate) status: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct CommitOut {
    pub(crate) hash: String,
    pub(crate) author: String,
    pub(crate) date: String,
    pub(crate) subject: String,
}

pub(crate) async fn git(srv: &TunnelMcp, p: GitParams) -> Result<CallToolResult, McpError> {
    check_target("git", &p.target)?;
    let req = GitRequest { target: p.target.clone(), path: p.path, verb: p.verb.as_str().into(), args: p.args };
    tunnel_node::git::check(&req).map_err(|e| {
        let field = if e.contains("path") { "path" } else { "args" };
        invalid("git", field, &format!("field `{field}`: {e}"))
    })?;
    let r = match srv.backend().request(&ControlRequest::Git(req)).await {
        Ok(ControlResponse::Git(r)) => r,
        Ok(other) => return failure(format!("unexpected answer from the local node: {other:?}")),
        Err(e) => return failure(next_step(&p.target, &e)),
    };
    let out = GitOut {
        exit_code: r.exit_code,
        text: r.text.clone(),
        branch: r.branch.clone(),
        upstream: r.upstream.clone(),
        ahead: r.ahead,
        behind: r.behind,
        files: r
            .files
            .iter()
            .map(|GitFile { path, status }| FileOut { path: path.clone(), status: status.clone() })
            .collect(),
        commits: r
            .commits
            .iter()
            .map(|GitCommit { hash, author, date, subject }| CommitOut {
                hash: hash.clone(),
                author: author.clone(),
                date: date.clone(),
                subject: subject.clone(),
            })
            .collect(),
    };
    let head = format!("git {} on {}: exit {}", r.verb, p.target, r.exit_code.map_or("?".into(), |c| c.to_string()));
    let text = format!("{head}\n{}", crate::fence::fenced(&format!("git {} output", r.verb), &r.text));
    let mut result = success(&out, text)?;
    if r.exit_code != Some(0) {
        result.is_error = Some(true);
    }
    Ok(result)
}

impl Verb {
    /// The verb as git spells it.
    fn as_str(self) -> &'static str {
        match self {
            Verb::Status => "status",
            Verb::Log => "log",
            Verb::Diff => "diff",
            Verb::Show => "show",
            Verb::Fetch => "fetch",
            Verb::Pull => "pull",
            Verb::Commit => "commit",
            Verb::Push => "push",
        }
    }
}

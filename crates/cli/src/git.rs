//! `tunnel git PEER:PATH VERB [ARGS]`: git on a peer or SSH host, run by this node as an exec
//! there (see `tunnel_node::git`). Exits with git's exit code.

use anyhow::bail;
use tunnel_node::control::{ControlRequest, ControlResponse};
use tunnel_node::git::GitRequest;

use crate::args::{GitArgs, Global};

pub(crate) async fn run(global: Global, args: GitArgs) -> anyhow::Result<i32> {
    let Some((target, path)) = crate::remote::split_remote(&args.repo) else {
        bail!("{:?}: give the repository as PEER:PATH (or ssh:HOST:PATH)", args.repo);
    };
    let req = GitRequest { target: target.into(), path: path.into(), verb: args.verb, args: args.args };
    tunnel_node::git::check(&req).map_err(anyhow::Error::msg)?;
    let result = match global.control().await?.request(&ControlRequest::Git(req)).await? {
        ControlResponse::Git(r) => r,
        other => return Err(crate::query::unexpected(other)),
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        let mut out = std::io::stdout().lock();
        std::io::Write::write_all(&mut out, result.text.as_bytes()).map_err(|_| crate::StdoutClosed)?;
    }
    Ok(result.exit_code.unwrap_or(1))
}

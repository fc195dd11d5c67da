//! `tunnel audit tail` and `tunnel audit verify`: read the audit log in the state directory
//! directly, so they work whether or not the node is running.

use tunnel_node::audit;
use tunnel_node::Settings;
use tunnel_proto::message::{Op, Reply};

use crate::args::{AuditCommand, BackupsCommand, Global};

pub(crate) async fn run(global: Global, cmd: AuditCommand) -> anyhow::Result<i32> {
    let settings = Settings::resolve(global.flags(), |k| std::env::var(k).ok())?;
    match cmd {
        AuditCommand::Verify => {
            let n = audit::verify(&settings.state_dir)?;
            outln!("audit log intact: {n} records");
            Ok(0)
        }
        AuditCommand::Tail { target, event, n, json } => {
            let lines = match target.filter(|t| t != tunnel_node::LOCAL_TARGET) {
                Some(target) => {
                    let op = Op::AuditTail { limit: n.min(u32::MAX as usize) as u32, event_prefix: event };
                    match crate::remote::request(&global, &target, op).await? {
                        Reply::Audit { lines, truncated } => {
                            if truncated {
                                eprintln!("{target}: older records left out to keep the answer small; ask for fewer");
                            }
                            lines
                        }
                        other => anyhow::bail!("unexpected answer from {target}: {other:?}"),
                    }
                }
                None => audit::newest_lines(&settings.state_dir, n, &event)?,
            };
            for line in lines {
                let r: audit::AuditRecord = serde_json::from_str(&line)?;
                if json {
                    outln!("{}", serde_json::to_string(&r)?);
                } else {
                    print_record(&r)?;
                }
            }
            Ok(0)
        }
    }
}

fn print_record(r: &audit::AuditRecord) -> anyhow::Result<()> {
    let e = &r.entry;
    let who = e.caller_name.as_deref().or(e.caller.as_deref().map(|c| &c[..8.min(c.len())])).unwrap_or("local");
    let rule = e.rule.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
    outln!("{:>6}  {}  {:<18} {:<8} {}{rule}  {}", r.seq, r.time_ms, e.event, e.decision, who, e.detail);
    Ok(())
}

/// `tunnel backups list` and `tunnel backups restore`, on this machine's state directory.
pub(crate) async fn backups(global: Global, cmd: BackupsCommand) -> anyhow::Result<i32> {
    let settings = Settings::resolve(global.flags(), |k| std::env::var(k).ok())?;
    match cmd {
        BackupsCommand::List { json } => {
            for b in tunnel_node::services::backups::list(&settings.state_dir)? {
                if json {
                    outln!("{}", serde_json::to_string(&b)?);
                } else {
                    outln!("{}  {:>10}  {}  <-  {}", b.time_ms, b.bytes, b.original, b.backup);
                }
            }
        }
        BackupsCommand::Restore { path } => {
            let found = tunnel_node::services::backups::find(&settings.state_dir, &path)?;
            if let Some((host, remote)) = tunnel_node::services::backups::ssh_original(&found) {
                // Kept by this node for one of its SSH hosts: written back through the node,
                // under its policy, which keeps what the restore replaces in turn.
                let target = format!("ssh:{host}");
                let copy = std::path::PathBuf::from(&found.backup);
                let code = crate::cp::send_file(&global, &copy, &target, &remote.into()).await?;
                if code != 0 {
                    return Ok(code);
                }
            } else {
                tunnel_node::services::backups::restore(&settings.state_dir, &path)?;
            }
            outln!("restored {} from {}", found.original, found.backup);
        }
    }
    Ok(0)
}

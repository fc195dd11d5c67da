//! `tunnel jobs`: the jobs peers keep for commands left running (`tunnel exec --detach`).
//! Every operation goes to the peer named in the job's id (`SEQ@PEER`), which answers under
//! its own policy.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::bail;
use tunnel_node::control::{ControlRequest, ControlResponse};
use tunnel_proto::job::{JobInfo, JobRef, JobState, OutputFrom};
use tunnel_proto::message::{Op, Reply};

use crate::args::{Global, JobsArgs, JobsCommand, TaskArgs};

/// How long one request waits for news; the CLI asks again until it is done.
const POLL_MS: u32 = 10_000;

pub(crate) async fn run(global: Global, args: JobsArgs) -> anyhow::Result<i32> {
    match args.command {
        None => list(&global, args.target.as_deref().unwrap_or("all"), args.json).await,
        Some(JobsCommand::Logs { id, follow, tail, since }) => {
            let from = match (tail, since) {
                (Some(n), _) => OutputFrom::Tail(n),
                (None, Some(o)) => OutputFrom::Offset(o),
                (None, None) => OutputFrom::Offset(0),
            };
            logs(&global, &id.parse().map_err(anyhow::Error::msg)?, from, follow).await
        }
        Some(JobsCommand::Wait { id, timeout }) => {
            let timeout = timeout.map(crate::exec::millis_of).transpose()?.map(Duration::from_millis);
            wait(&global, &id.parse().map_err(anyhow::Error::msg)?, timeout).await
        }
        Some(JobsCommand::Cancel { id }) => {
            let job: JobRef = id.parse().map_err(anyhow::Error::msg)?;
            let info = job_reply(&global, &job, Op::JobCancel { id: job.seq }).await?;
            outln!("{job}: {}", describe(&info));
            Ok(0)
        }
    }
}

async fn job_reply(global: &Global, job: &JobRef, op: Op) -> anyhow::Result<JobInfo> {
    match crate::remote::request(global, &job.node, op).await? {
        Reply::Job(info) => Ok(info),
        other => bail!("unexpected answer from {}: {other:?}", job.node),
    }
}

/// The jobs of every peer `target` selects, newest first per peer.
async fn list(global: &Global, target: &str, json: bool) -> anyhow::Result<i32> {
    let mut rows = Vec::new();
    let failed = crate::remote::ask_each(global, target, Op::Jobs { limit: 200 }, |name, reply| match reply {
        Reply::Jobs { jobs, truncated } => {
            if truncated {
                eprintln!("{name}: only its newest {} jobs are listed", jobs.len());
            }
            rows.extend(jobs.into_iter().map(|j| (name.to_owned(), j)));
            None
        }
        other => Some(other),
    })
    .await?;
    if json {
        for (peer, j) in &rows {
            let mut v = serde_json::json!({
                "id": j.reference().to_string(), "peer": peer, "target": j.label, "command": j.command,
                "state": j.state.as_str(), "exit_code": j.exit_code, "signal": j.signal, "reason": j.reason,
                "started_ms": j.started_ms, "ended_ms": j.ended_ms, "output_bytes": j.output_bytes,
                "kept_from": j.kept_from,
            });
            v.as_object_mut().expect("an object").retain(|_, v| !v.is_null());
            outln!("{v}");
        }
    } else if rows.is_empty() {
        outln!("no jobs");
    } else {
        outln!("{:<16} {:<12} {:<10} {:>5} {:>9} {:>10}  COMMAND", "ID", "PEER", "STATE", "EXIT", "STARTED", "OUTPUT");
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        for (peer, j) in &rows {
            let exit = j.exit_code.map(|c| c.to_string()).or(j.signal.map(|s| format!("sig{s}"))).unwrap_or_default();
            outln!(
                "{:<16} {:<12} {:<10} {:>5} {:>9} {:>10}  {}",
                j.reference().to_string(),
                peer,
                j.state.as_str(),
                exit,
                ago(now - j.started_ms),
                j.output_bytes,
                j.command
            );
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// A job's state in words.
pub(crate) fn describe(j: &JobInfo) -> String {
    let mut out = j.state.as_str().to_owned();
    if let Some(code) = j.exit_code {
        out.push_str(&format!(", exit {code}"));
    }
    if let Some(sig) = j.signal {
        out.push_str(&format!(", signal {sig}"));
    }
    if let Some(why) = &j.reason {
        out.push_str(&format!(": {why}"));
    }
    out
}

async fn logs(global: &Global, job: &JobRef, mut from: OutputFrom, follow: bool) -> anyhow::Result<i32> {
    let mut out = std::io::stdout().lock();
    let mut warned = false;
    loop {
        let op = Op::JobOutput { id: job.seq, from, max: 128 * 1024, wait_ms: if follow { POLL_MS } else { 0 } };
        let chunk = match crate::remote::request(global, &job.node, op).await? {
            Reply::JobOutput(chunk) => chunk,
            other => bail!("unexpected answer from {}: {other:?}", job.node),
        };
        if let OutputFrom::Offset(asked) = from {
            if chunk.offset > asked && !warned {
                warned = true;
                eprintln!(
                    "tunnel: output before byte {} is no longer kept (a job keeps its newest {} bytes)",
                    chunk.offset, chunk.job.output_cap
                );
            }
        }
        out.write_all(&chunk.data.0).and_then(|()| out.flush()).map_err(|_| crate::StdoutClosed)?;
        from = OutputFrom::Offset(chunk.next_offset());
        let at_end = chunk.next_offset() >= chunk.job.output_bytes;
        if at_end && (!follow || !chunk.job.state.is_running()) {
            if follow && chunk.job.state != JobState::Exited {
                eprintln!("tunnel: {job}: {}", describe(&chunk.job));
            }
            return Ok(0);
        }
    }
}

async fn wait(global: &Global, job: &JobRef, timeout: Option<Duration>) -> anyhow::Result<i32> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let left = deadline.map_or(POLL_MS, |d| d.saturating_duration_since(Instant::now()).as_millis() as u32);
        let info = job_reply(global, job, Op::JobWait { id: job.seq, wait_ms: left.min(POLL_MS) }).await?;
        if !info.state.is_running() {
            eprintln!("tunnel: {job}: {}", describe(&info));
            return Ok(match (info.state, info.exit_code, info.signal) {
                (JobState::Exited, Some(code), _) => code,
                (_, _, Some(sig)) => 128 + sig,
                (JobState::TimedOut, ..) => 124,
                _ => 1,
            });
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            eprintln!("tunnel: {job} still runs; stopped waiting");
            return Ok(124);
        }
    }
}

/// `tunnel task PEER PROMPT`: the peer's agent, as a job there; prints the job's id.
pub(crate) async fn task(global: Global, args: TaskArgs) -> anyhow::Result<i32> {
    if args.prompt.trim().is_empty() {
        bail!("the prompt is empty");
    }
    let task = tunnel_proto::job::TaskSpec {
        request_id: rand::random(),
        prompt: args.prompt,
        cwd: args.cwd,
        label: args.target.clone(),
    };
    let mut client = global.control().await?;
    let first = client.request(&ControlRequest::Task { target: args.target.clone(), task }).await?;
    match first {
        ControlResponse::Exec(tunnel_proto::message::ExecEvent::Detached(job)) => {
            outln!("{}", job.reference());
            Ok(0)
        }
        ControlResponse::Exec(tunnel_proto::message::ExecEvent::Refused(why)) => {
            eprintln!("tunnel: {why}");
            Ok(126)
        }
        ControlResponse::Exec(tunnel_proto::message::ExecEvent::Failed(why)) => {
            eprintln!("tunnel: {why}");
            Ok(127)
        }
        other => Err(crate::query::unexpected(other)),
    }
}

//! `tunnel fleet exec|read|write|ls`: one operation on many peers, a live progress bar, and
//! the answers grouped at the end (`--json` for every peer's full result). Exits 1 if any
//! peer did not succeed.

use std::time::Instant;

use anyhow::{bail, Context};
use tunnel_node::control::call::Call;
use tunnel_node::control::{ControlRequest, ControlResponse, FleetAction, FLEET_WRITE_MAX};
use tunnel_node::fleet::reduce::{reduce, GroupBy, Limits, Reduction};
use tunnel_node::fleet::{FleetOptions, Status, TargetResult};
use tunnel_proto::message::ExecSpec;

use crate::args::{FleetCommand, FleetCommon, FleetLsArgs, Global, GroupByArg};
use crate::exec::{command_of, env_of, millis_of};
use crate::progress_bar::ProgressBar;

pub(crate) async fn run(global: Global, cmd: FleetCommand) -> anyhow::Result<i32> {
    match cmd {
        FleetCommand::Ls(args) => ls(&global, args).await,
        FleetCommand::Exec(args) => {
            let command = command_of(args.shell, args.argv, "tunnel fleet exec TARGET")?;
            let spec = ExecSpec {
                request_id: 0, // each peer gets its own
                command,
                env: env_of(&args.env)?,
                cwd: args.cwd,
                timeout_ms: None,
                output_cap: args.common.max_output,
                stdin: false,
            };
            let action = match (args.detach, args.job_after) {
                (true, _) => FleetAction::ExecJob { spec, after_ms: 0 },
                (false, Some(secs)) => {
                    let after_ms = millis_of(secs)
                        .map_err(|_| anyhow::anyhow!("--job-after must be a positive number of seconds"))?;
                    FleetAction::ExecJob { spec, after_ms }
                }
                (false, None) => FleetAction::Exec(spec),
            };
            fan_out(&global, args.common, action, None).await
        }
        FleetCommand::Read(args) => {
            let action = FleetAction::Read { path: args.path, max_bytes: args.common.max_output };
            fan_out(&global, args.common, action, None).await
        }
        FleetCommand::Write(args) => {
            let mode = args
                .mode
                .as_deref()
                .map(|m| u32::from_str_radix(m, 8).map_err(|_| anyhow::anyhow!("--mode takes octal bits like 0644")))
                .transpose()?;
            let size =
                std::fs::metadata(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?.len();
            if size > FLEET_WRITE_MAX {
                bail!(
                    "{} is over the {} MiB a fleet write carries; use `tunnel cp`",
                    args.file.display(),
                    FLEET_WRITE_MAX >> 20
                );
            }
            let content = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
            let action = FleetAction::Write { path: args.path, mode, size: content.len() as u64 };
            fan_out(&global, args.common, action, Some(content)).await
        }
    }
}

async fn ls(global: &Global, args: FleetLsArgs) -> anyhow::Result<i32> {
    let mut client = crate::remote::client(global).await?;
    let targets = match client.request(&ControlRequest::Select { target: args.target }).await? {
        ControlResponse::Targets(t) => t,
        ControlResponse::Error(e) => bail!(e),
        other => bail!("unexpected answer from the node: {other:?}"),
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&targets)?);
    } else {
        for t in &targets {
            outln!("{:<24} {}", t.name, t.id);
        }
    }
    Ok(0)
}

async fn fan_out(
    global: &Global,
    common: FleetCommon,
    action: FleetAction,
    content: Option<Vec<u8>>,
) -> anyhow::Result<i32> {
    let group_by = GroupBy::parse(
        match common.group_by {
            GroupByArg::Output => "output",
            GroupByArg::Exit => "exit",
        },
        common.normalize.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    if common.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let options = FleetOptions { concurrency: common.concurrency, timeout_ms: millis_of(common.timeout)? };
    let stream = crate::remote::client(global).await?.into_stream();
    let started = Instant::now();
    let request = ControlRequest::Fleet { target: common.target, action, options };
    let mut call = Call::start(stream, &request, content.as_deref()).await?;
    let mut bar = ProgressBar::new();
    let (mut total, mut failed) = (0, 0);
    let mut results: Vec<TargetResult> = Vec::new();
    let mut fleet_job = None;
    loop {
        match call.next().await.map_err(anyhow::Error::msg)? {
            ControlResponse::Targets(t) => total = t.len(),
            ControlResponse::FleetJob(job) => fleet_job = Some(job.reference()),
            ControlResponse::FleetResult(r) => {
                failed += usize::from(r.status.is_failure());
                if common.stream {
                    outln!("{}", serde_json::to_string(&r)?);
                }
                results.push(r);
            }
            ControlResponse::Done => break,
            other => bail!("unexpected answer from the node: {other:?}"),
        }
        let detail = format!("done, {failed} failed, {} pending", total - results.len());
        bar.update("fleet", results.len(), total, &detail, results.len() == total);
    }
    bar.finish();
    let elapsed = started.elapsed();
    if results.len() != total {
        bail!("the node answered for {} of {total} targets", results.len());
    }
    let reduction = reduce(&results, &group_by, Limits::default());
    let job = fleet_job.map(|j| j.to_string());
    if common.stream {
        let doc = serde_json::json!({ "duration_ms": elapsed.as_millis() as u64, "reduction": reduction, "job": job });
        outln!("{doc}");
    } else if common.json {
        results.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        let doc = serde_json::json!({
            "duration_ms": elapsed.as_millis() as u64,
            "reduction": reduction,
            "targets": results,
            "job": job,
        });
        outln!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_reduction(&reduction, elapsed)?;
        if let Some(id) = &job {
            let running = reduction.by_status.get(&Status::Running).copied().unwrap_or(0);
            eprintln!("tunnel: {running} still running as jobs, followed by fleet job {id} (`tunnel jobs wait {id}`)");
            outln!("{id}");
        }
    }
    // Targets running on are not failures (yet): the fleet job reports how they end.
    let failed = reduction.by_status.keys().any(|s| s.is_failure());
    Ok(if failed { 1 } else { 0 })
}

fn print_reduction(red: &Reduction, elapsed: std::time::Duration) -> anyhow::Result<()> {
    let counts: Vec<String> = red.by_status.iter().map(|(s, n)| format!("{n} {}", s.as_str())).collect();
    outln!("{} targets: {} ({:.2} s)", red.total, counts.join(", "), elapsed.as_secs_f64());
    outln!("{:>7}  {:<11}  {:>4}  TARGETS", "COUNT", "STATUS", "EXIT");
    for g in &red.groups {
        let exit = g.exit_code.map_or_else(|| "-".into(), |c| c.to_string());
        outln!("{:>7}  {:<11}  {:>4}  {}", g.count, g.status.as_str(), exit, g.members);
        let lines = g
            .stdout
            .lines()
            .map(str::to_owned)
            .chain(g.stderr.lines().map(|l| format!("stderr: {l}")))
            .chain(g.error.iter().map(|e| format!("error: {e}")));
        for line in lines.take(SAMPLE_LINES) {
            outln!("{:>7}  │ {line}", "");
        }
    }
    if red.groups_omitted > 0 {
        outln!("… and {} more groups of {} targets (see --json)", red.groups_omitted, red.targets_omitted);
    }
    Ok(())
}

/// Lines of each group's sample output shown in the table.
const SAMPLE_LINES: usize = 8;

//! `tunnel mapreduce TARGET --input FILE --map CMD --reduce CMD`: the node coordinates the
//! job; this sends the input, draws progress and prints the answer (or, with `--json`, the
//! answer and every partition's statistics). With one reducer the reduce runs here, in this
//! process's own shell, with the rights of whoever typed the command: the node only gathers
//! the map outputs, so its mode (plan refuses shells) does not stand between a person and a
//! pipe on their own machine.

use std::io::{Read, Write};

use anyhow::{bail, Context};
use tunnel_node::control::call::Call;
use tunnel_node::control::{ControlRequest, ControlResponse, JobInput, JOB_INPUT_MAX};
use tunnel_node::mapreduce::{JobSpec, Phase};

use crate::args::{Global, MapreduceArgs};
use crate::exec::millis_of;
use crate::progress_bar::ProgressBar;

pub(crate) async fn run(global: Global, args: MapreduceArgs) -> anyhow::Result<i32> {
    if args.reducers == 0 {
        bail!("--reducers must be at least 1");
    }
    let job = JobSpec {
        map: args.map,
        reduce: args.reduce,
        partitions: args.partitions,
        reducers: args.reducers,
        retries: args.retries,
        timeout_ms: millis_of(args.timeout)?,
        output_cap: u64::MAX,
        caller_reduces: args.reducers == 1,
    };
    let reduce_here = job.caller_reduces.then(|| job.reduce.clone());
    let (input, content) = match crate::remote::split_remote(&args.input) {
        Some((peer, path)) => (JobInput::File { target: peer.to_owned(), path: path.to_owned() }, None),
        None => {
            let content = read_input(&args.input)?;
            (JobInput::Inline { size: content.len() as u64 }, Some(content))
        }
    };
    let stream = crate::remote::client(&global).await?.into_stream();
    let request = ControlRequest::MapReduce { target: args.target, job, input };
    let mut call = Call::start(stream, &request, content.as_deref()).await?;
    let mut bar = ProgressBar::new();
    let mut output = Vec::new();
    let mut report = loop {
        match call.next().await.map_err(anyhow::Error::msg)? {
            ControlResponse::Targets(_) => {}
            ControlResponse::JobProgress(p) => {
                let label = match p.phase {
                    Phase::Map => "map",
                    Phase::Reduce => "reduce",
                };
                let detail = format!("done, {} running, {} retried", p.running, p.retried);
                bar.update(label, p.done as usize, p.total as usize, &detail, false);
            }
            ControlResponse::JobOutput(bytes) => output.extend_from_slice(&bytes.0),
            ControlResponse::JobDone(report) => break report,
            other => bail!("unexpected answer from the node: {other:?}"),
        }
    };
    bar.finish();
    let mut code = 0;
    if let Some(reduce) = reduce_here {
        let started = std::time::Instant::now();
        let (reduced, status) = reduce_locally(&reduce, output, args.json)?;
        report.reduce_ms = started.elapsed().as_millis() as u64;
        report.output_bytes = reduced.len() as u64;
        output = reduced;
        if !status.success() {
            eprintln!("tunnel: the reduce ({reduce}) failed here: {status}");
            code = status.code().unwrap_or(1).max(1);
        }
    }
    if args.json {
        let doc = serde_json::json!({
            "output": String::from_utf8_lossy(&output),
            "report": report,
        });
        outln!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(&output).and_then(|()| out.flush()).map_err(|_| crate::StdoutClosed)?;
    }
    Ok(code)
}

/// Pipes `input` through `sh -c REDUCE` in this process's environment. Its output comes back
/// when `capture` (for `--json`), else it goes straight to this process's stdout.
fn reduce_locally(reduce: &str, input: Vec<u8>, capture: bool) -> anyhow::Result<(Vec<u8>, std::process::ExitStatus)> {
    use std::process::{Command, Stdio};
    let mut child = Command::new("sh")
        .args(["-c", reduce])
        .stdin(Stdio::piped())
        .stdout(if capture { Stdio::piped() } else { Stdio::inherit() })
        .spawn()
        .with_context(|| format!("cannot run the reduce ({reduce}) here"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    // A reduce that stops reading early (`head`) is its own business, not an error here.
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_end(&mut out).context("reading the reduce's output")?;
    }
    let status = child.wait().context("waiting for the reduce")?;
    let _ = feeder.join();
    Ok((out, status))
}

fn read_input(path: &str) -> anyhow::Result<Vec<u8>> {
    let mut content = Vec::new();
    let mut source: Box<dyn Read> = if path == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).with_context(|| format!("cannot open the input {path}"))?)
    };
    source.by_ref().take(JOB_INPUT_MAX + 1).read_to_end(&mut content).with_context(|| format!("cannot read {path}"))?;
    if content.len() as u64 > JOB_INPUT_MAX {
        bail!("{path} is over the {} GiB a job's input may be", JOB_INPUT_MAX >> 30);
    }
    Ok(content)
}

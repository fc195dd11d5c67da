//! Mapreduce over the control socket: the input arrives (or is read from a peer), the job
//! runs here, progress and then the answer go back. Closing the connection cancels the job.

use bytes::Bytes;
use tokio::sync::mpsc;
use tunnel_proto::message::ByteBuf;

use crate::control::fleet::{announce_targets, receive_exactly};
use crate::control::{read_frame, write_frame, ControlRequest, ControlResponse, ControlStream, JobInput};
use crate::mapreduce::JobSpec;
use crate::node::ReadEnd;
use crate::Node;

/// Largest job input (it is held in memory while the job runs).
pub const JOB_INPUT_MAX: u64 = 4 << 30;
/// Bytes per `JobOutput` frame.
const OUTPUT_CHUNK: usize = 1 << 20;

pub(crate) async fn serve<S: ControlStream>(stream: S, node: Node, target: String, job: JobSpec, input: JobInput) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let input = match input {
        JobInput::Inline { size } if size > JOB_INPUT_MAX => {
            Err(format!("a job's input may be at most {} GiB", JOB_INPUT_MAX >> 30))
        }
        JobInput::Inline { size } => receive_exactly(&mut rd, size).await,
        JobInput::File { target, path } => read_input(&node, &target, path).await,
    };
    let input = match input {
        Ok(bytes) => Bytes::from(bytes),
        Err(e) => {
            let _ = write_frame(&mut wr, &ControlResponse::Error(format!("job input: {e}"))).await;
            return;
        }
    };
    let Some(targets) = announce_targets(&node, &target, &mut wr).await else { return };
    let (progress_tx, mut progress) = mpsc::channel(64);
    let job_run = node.mapreduce(targets, &job, input, progress_tx);
    tokio::pin!(job_run);
    // The client closing its end means it gave up: returning drops the job, which cancels
    // every command it has running.
    let gone = async { while let Ok(Some(_)) = read_frame::<ControlRequest, _>(&mut rd).await {} };
    tokio::pin!(gone);
    let outcome = loop {
        tokio::select! {
            outcome = &mut job_run => break outcome,
            Some(p) = progress.recv() => {
                if write_frame(&mut wr, &ControlResponse::JobProgress(p)).await.is_err() {
                    return;
                }
            }
            _ = &mut gone => return,
        }
    };
    match outcome {
        Ok((output, report)) => {
            for chunk in output.chunks(OUTPUT_CHUNK) {
                if write_frame(&mut wr, &ControlResponse::JobOutput(ByteBuf::copy_from(chunk))).await.is_err() {
                    return;
                }
            }
            let _ = write_frame(&mut wr, &ControlResponse::JobDone(report)).await;
        }
        Err(e) => {
            let _ = write_frame(&mut wr, &ControlResponse::Error(format!("mapreduce failed: {e}"))).await;
        }
    }
}

/// A job's input file, read from `target` through its read service (its policy applies).
async fn read_input(node: &Node, target: &str, path: String) -> Result<Vec<u8>, String> {
    let peer = node.find_dest(target).await.map_err(|e| e.to_string())?;
    let mut content = Vec::new();
    let read = node.read_whole(peer, path, |chunk| {
        content.extend_from_slice(chunk);
        if content.len() as u64 > JOB_INPUT_MAX {
            return Err(format!("the file is over the {} GiB a job's input may be", JOB_INPUT_MAX >> 30));
        }
        Ok(())
    });
    match read.await {
        Ok(()) => Ok(content),
        Err(ReadEnd::Refused(why) | ReadEnd::Failed(why) | ReadEnd::Lost(why)) => Err(why),
    }
}

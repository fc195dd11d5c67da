//! Which service serves a stream a peer opened, and the built-in ones (`Echo`, `Sink`).

use tokio::task::JoinSet;
use tunnel_net::{Stream, StreamReader, StreamWriter};
use tunnel_proto::message::StreamKind;

use super::Node;

/// Largest echo stream the node serves back (a test and demo service).
const ECHO_LIMIT: u64 = 1 << 40;

impl Node {
    /// Hands a stream to its service's task; services apply policy themselves.
    pub(super) fn serve_stream(&self, stream: Stream, work: &mut JoinSet<()>) {
        let node = self.clone();
        let task = match stream.kind.clone() {
            StreamKind::Exec(spec) => work.spawn(crate::services::exec::serve(node, stream, spec)),
            StreamKind::Job { spec, job } => work.spawn(crate::services::exec::serve_job(node, stream, spec, job)),
            StreamKind::Task(task) => work.spawn(crate::services::task::serve(node, stream, task)),
            StreamKind::ReadFile(spec) => work.spawn(crate::services::fs::serve_read(node, stream, spec)),
            StreamKind::WriteFile(spec) => work.spawn(crate::services::fs::serve_write(node, stream, spec)),
            StreamKind::SshExec { host, spec } => work.spawn(crate::ssh::serve_exec(node, stream, host, spec)),
            StreamKind::SshJob { host, spec, job } => work.spawn(crate::ssh::serve_job(node, stream, host, spec, job)),
            StreamKind::SshRead { host, spec } => work.spawn(crate::ssh::serve_read(node, stream, host, spec)),
            StreamKind::SshWrite { host, spec } => work.spawn(crate::ssh::serve_write(node, stream, host, spec)),
            StreamKind::Connect(spec) => work.spawn(crate::forward::serve_connect(node, stream, spec)),
            StreamKind::SshConnect { host, spec } => {
                work.spawn(crate::forward::serve_ssh_connect(node, stream, host, spec))
            }
            StreamKind::Listen(spec) => work.spawn(crate::forward::serve_listen(node, stream, spec)),
            StreamKind::SshListen { host, spec } => {
                work.spawn(crate::forward::serve_ssh_listen(node, stream, host, spec))
            }
            // Served even with --no-agent: it is this node's own forward coming back.
            StreamKind::Reverse(spec) => work.spawn(crate::forward::serve_reverse(node, stream, spec)),
            _ if !self.inner.agent => {
                stream.writer.reset("this node runs with --no-agent and serves no streams");
                return;
            }
            StreamKind::Echo => work.spawn(echo(stream.reader, stream.writer)),
            StreamKind::Sink => work.spawn(sink(stream.reader, stream.writer)),
            StreamKind::Service(name) => {
                stream.writer.reset(&format!("no stream service {name:?} on this node"));
                return;
            }
        };
        // The event loop's set owns the task; the handle is not needed.
        drop(task);
    }
}

/// Sends every byte back.
async fn echo(mut reader: StreamReader, mut writer: StreamWriter) {
    let mut total = 0u64;
    loop {
        match reader.read().await {
            Ok(Some(chunk)) => {
                total += chunk.len() as u64;
                if total > ECHO_LIMIT || writer.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                let _ = writer.finish().await;
                return;
            }
            Err(_) => return,
        }
    }
}

/// Reads and discards.
async fn sink(mut reader: StreamReader, writer: StreamWriter) {
    drop(writer);
    while let Ok(Some(_)) = reader.read().await {}
}

//! The stdio transport, with a guard in front of rmcp: every line from the client is checked
//! to be JSON (and at most [`MAX_LINE`] bytes) before rmcp sees it, and anything else gets a
//! JSON-RPC parse error back instead of silence. Output from rmcp and from the guard goes to
//! stdout whole line by whole line, so the two can never interleave inside a message.
//!
//! A session may also change hands mid-way (`tunnel run` serving a session that `tunnel mcp`
//! handed to it, and stopping): [`serve_lines_handing_back`] stops at a message boundary,
//! answers every request it read, and returns what it read but did not serve;
//! [`serve_lines_resumed`] serves the rest of the session, with no second handshake.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::TunnelMcp;

/// The longest message accepted: rmcp's own limit, past which it would drop a line without
/// a word; the guard answers such lines instead.
pub const MAX_LINE: usize = rmcp::transport::async_rw::DEFAULT_MAX_LINE_LENGTH;
const PIPE: usize = 1024 * 1024;
/// A session handing back waits this long for the answers to the requests it read; any
/// still due then are answered with an error that says to retry.
const STOP_GRACE: Duration = Duration::from_secs(5);

type Stop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Serves one MCP session over stdin/stdout until the client closes stdin.
pub async fn serve_stdio(server: TunnelMcp) -> Result<(), std::io::Error> {
    let (stdin, stdout) = rmcp::transport::io::stdio_pipes();
    serve_lines(server, stdin, stdout).await
}

/// [`serve_stdio`] over any pair of byte streams.
pub async fn serve_lines<R, W>(server: TunnelMcp, input: R, output: W) -> Result<(), std::io::Error>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    serve(server, None, Vec::new(), input, output, None).await.map(|_| ())
}

/// [`serve_lines`] in a process that may stop before the client is done. `initialized` gets
/// the client's `initialize` request's params (JSON) as soon as they pass. When `stop`
/// resolves, reading stops at a message boundary, every request read is answered (its own
/// answer within [`STOP_GRACE`], else an error saying to retry), and the input read but not
/// served is returned, for [`serve_lines_resumed`] elsewhere. `None`: the client ended the
/// session.
pub async fn serve_lines_handing_back<R, W>(
    server: TunnelMcp,
    input: R,
    output: W,
    stop: impl Future<Output = ()> + Send + 'static,
    initialized: impl FnOnce(String) + Send + 'static,
) -> Result<Option<Vec<u8>>, std::io::Error>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let handing = HandingBack { stop: Box::pin(stop), initialized: Box::new(initialized) };
    serve(server, None, Vec::new(), input, output, Some(handing)).await
}

/// [`serve_lines_resumed`] over this process's stdin and stdout.
pub async fn serve_stdio_resumed(server: TunnelMcp, initialize: &str, unread: Vec<u8>) -> Result<(), std::io::Error> {
    let (stdin, stdout) = rmcp::transport::io::stdio_pipes();
    serve_lines_resumed(server, initialize, unread, stdin, stdout).await
}

/// Serves the rest of a session another process began and handed back: `initialize` is the
/// client's (JSON params, as that process saw them), `unread` what it read and did not serve.
pub async fn serve_lines_resumed<R, W>(
    server: TunnelMcp,
    initialize: &str,
    unread: Vec<u8>,
    input: R,
    output: W,
) -> Result<(), std::io::Error>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let peer: rmcp::model::InitializeRequestParams = serde_json::from_str(initialize)
        .map_err(|e| std::io::Error::other(format!("the handed-back session's initialize: {e}")))?;
    serve(server, Some(peer), unread, input, output, None).await.map(|_| ())
}

struct HandingBack {
    stop: Stop,
    initialized: Box<dyn FnOnce(String) + Send>,
}

async fn serve<R, W>(
    server: TunnelMcp,
    resumed: Option<rmcp::model::InitializeRequestParams>,
    unread: Vec<u8>,
    input: R,
    output: W,
    handing: Option<HandingBack>,
) -> Result<Option<Vec<u8>>, std::io::Error>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    use rmcp::ServiceExt;
    let (to_rmcp, rmcp_in) = tokio::io::duplex(PIPE);
    let (rmcp_out, from_rmcp) = tokio::io::duplex(PIPE);
    let (errors_tx, errors_rx) = mpsc::channel::<String>(64);
    // Requests are tracked only where the session may be handed back.
    let due = handing.as_ref().map(|_| Arc::new(Due::default()));
    let input = AsyncReadExt::chain(std::io::Cursor::new(unread), input);
    let mut guard = Guard { to_rmcp, errors: errors_tx, due: due.clone() };
    let (unread_tx, mut unread_rx) = oneshot::channel();
    let guard = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        let unread = guard.run(input, handing).await;
        let _ = unread_tx.send(unread);
        // Only now does rmcp's input close: what is handed back is known before rmcp ends.
        drop(guard);
    }));
    let writer = tokio::spawn(write_output(from_rmcp, errors_rx, output, due));
    let (rmcp_read, _) = tokio::io::split(rmcp_in);
    let (_, rmcp_write) = tokio::io::split(rmcp_out);
    let running = match resumed {
        Some(peer) => Ok(rmcp::service::serve_directly(server, (rmcp_read, rmcp_write), Some(peer))),
        None => server
            .serve((rmcp_read, rmcp_write))
            .await
            .map_err(|e| std::io::Error::other(format!("MCP session did not start: {e}"))),
    };
    let served = match running {
        Ok(running) => {
            running.waiting().await.map(|_| ()).map_err(|e| std::io::Error::other(format!("MCP session: {e}")))
        }
        Err(e) => Err(e),
    };
    // rmcp ends when the guard lets go of its input (the client's end, or a hand-back), or on
    // an error of its own, when the guard may still be waiting for input: it is stopped.
    let unread = unread_rx.try_recv().ok().flatten();
    drop(guard);
    // rmcp is done; its pipe closes, and the writer ends after the last line.
    let _ = writer.await;
    served.map(|()| unread)
}

fn error_line(id: &str, code: i32, message: &str) -> String {
    let message = serde_json::Value::from(message);
    format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":{message}}}}}"#)
}

const PARSE_ERROR: i32 = -32700;
const INVALID_REQUEST: i32 = -32600;
const INTERNAL_ERROR: i32 = -32603;

/// What the guard and the writer read of a message: whether it is a request (a method and an
/// id) or an answer (an id alone), and which id. The rest is rmcp's business, skipped unread.
#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    method: Option<String>,
}

/// Requests read from the client and not yet answered, by id (as JSON text).
#[derive(Default)]
struct Due {
    ids: Mutex<HashSet<String>>,
    none_left: Notify,
}

impl Due {
    fn add(&self, id: String) {
        self.ids.lock().expect("due lock").insert(id);
    }

    /// Whether `id` was due (it is no longer): an answer for an id not due was sent already.
    fn answered(&self, id: &str) -> bool {
        let mut ids = self.ids.lock().expect("due lock");
        let was = ids.remove(id);
        if ids.is_empty() {
            self.none_left.notify_waiters();
        }
        was
    }

    /// Waits until every request is answered or `within` passes; returns those still due,
    /// which are then no longer (their late answers are dropped).
    async fn settle(&self, within: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let emptied = self.none_left.notified();
            if self.ids.lock().expect("due lock").is_empty() {
                return Vec::new();
            }
            if tokio::time::timeout_at(deadline, emptied).await.is_err() {
                return self.ids.lock().expect("due lock").drain().collect();
            }
        }
    }
}

/// Reads lines from the client; JSON goes on to rmcp, anything else is answered here.
struct Guard {
    to_rmcp: tokio::io::DuplexStream,
    errors: mpsc::Sender<String>,
    due: Option<Arc<Due>>,
}

impl Guard {
    /// Until the client's input ends (`None`) or, handing back, until asked to stop: then
    /// the input read and not served.
    async fn run<R: AsyncRead + Unpin>(&mut self, input: R, handing: Option<HandingBack>) -> Option<Vec<u8>> {
        let (mut stop, mut initialized) = match handing {
            Some(h) => (Some(h.stop), Some(h.initialized)),
            None => (None, None),
        };
        let mut input = BufReader::with_capacity(64 * 1024, input);
        let mut line = Vec::new();
        let mut oversized = false;
        loop {
            // Stopping only here, between reads: every line before was passed on whole.
            let chunk = tokio::select! {
                read = input.fill_buf() => match read {
                    Ok([]) | Err(_) => return None, // end of input: dropping `to_rmcp` ends the session
                    Ok(c) => c,
                },
                () = wait(&mut stop) => break,
            };
            let (part, ended) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], Some(i + 1)),
                None => (chunk, None),
            };
            if !oversized {
                line.extend_from_slice(part);
                if line.len() > MAX_LINE {
                    oversized = true;
                    line = Vec::new();
                }
            }
            let consumed = ended.unwrap_or(chunk.len());
            input.consume(consumed);
            if ended.is_none() {
                continue;
            }
            if oversized {
                oversized = false;
                let msg = format!("Parse error: message over the {} MiB limit", MAX_LINE / (1024 * 1024));
                let _ = self.errors.send(error_line("null", PARSE_ERROR, &msg)).await;
                continue;
            }
            let text = std::mem::take(&mut line);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let answer = match serde_json::from_slice::<Envelope>(&text) {
                Ok(envelope) => {
                    self.note(&envelope, &text, &mut initialized);
                    if self.to_rmcp.write_all(&text).await.is_err() || self.to_rmcp.write_all(b"\n").await.is_err() {
                        return None;
                    }
                    continue;
                }
                Err(e) if e.is_data() => {
                    error_line("null", INVALID_REQUEST, "Invalid request: a message is one JSON object")
                }
                Err(e) => error_line("null", PARSE_ERROR, &format!("Parse error: not JSON ({e})")),
            };
            let _ = self.errors.send(answer).await;
        }
        // Handing back: what was read past the last whole line goes with the session.
        let mut unread = if oversized { Vec::new() } else { line };
        unread.extend_from_slice(input.buffer());
        if let Some(due) = &self.due {
            for id in due.settle(STOP_GRACE).await {
                let msg = "the process serving this session stopped before the call finished; retry it";
                let _ = self.errors.send(error_line(&id, INTERNAL_ERROR, msg)).await;
            }
        }
        Some(unread)
    }

    /// Records a request as due (and one the client cancelled as no longer), and passes on the
    /// client's `initialize`.
    fn note(&self, envelope: &Envelope, text: &[u8], initialized: &mut Option<Box<dyn FnOnce(String) + Send>>) {
        #[derive(serde::Deserialize)]
        struct Params {
            params: serde_json::Value,
        }
        let Some(due) = &self.due else { return };
        let params = || serde_json::from_slice::<Params>(text).ok().map(|p| p.params);
        match (&envelope.id, envelope.method.as_deref()) {
            (Some(id), Some(method)) => {
                due.add(id.to_string());
                if method == "initialize" {
                    if let (Some(tell), Some(params)) = (initialized.take(), params()) {
                        tell(params.to_string());
                    }
                }
            }
            // A cancelled request gets no answer.
            (None, Some("notifications/cancelled")) => {
                if let Some(id) = params().as_ref().and_then(|p| p.get("requestId")) {
                    due.answered(&id.to_string());
                }
            }
            _ => {}
        }
    }
}

async fn wait(stop: &mut Option<Stop>) {
    match stop {
        Some(stop) => stop.await,
        None => std::future::pending().await,
    }
}

/// Writes rmcp's lines and the guard's errors to the client, each line whole. Where requests
/// are tracked, an answer is written only while its request is due (one answer per request).
async fn write_output<W: AsyncWrite + Unpin>(
    from_rmcp: tokio::io::DuplexStream,
    mut errors: mpsc::Receiver<String>,
    mut output: W,
    due: Option<Arc<Due>>,
) {
    let mut lines = BufReader::new(from_rmcp);
    let mut line = Vec::new();
    let mut errors_open = true;
    loop {
        tokio::select! {
            read = lines.read_until(b'\n', &mut line) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let keep = match &due {
                        Some(due) => still_due(due, &line),
                        None => true,
                    };
                    if keep && (output.write_all(&line).await.is_err() || output.flush().await.is_err()) {
                        return;
                    }
                    line.clear();
                }
            },
            err = errors.recv(), if errors_open => match err {
                Some(text) => {
                    if output.write_all(format!("{text}\n").as_bytes()).await.is_err() || output.flush().await.is_err() {
                        return;
                    }
                }
                None => errors_open = false,
            },
        }
    }
    let _ = output.flush().await;
}

/// Whether a line of rmcp's may go out: anything but an answer to a request no longer due.
fn still_due(due: &Due, line: &[u8]) -> bool {
    match serde_json::from_slice::<Envelope>(line) {
        Ok(Envelope { id: Some(id), method: None }) => due.answered(&id.to_string()),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INIT: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"clientInfo":{"name":"t"}}}"#;

    /// Reads whole lines from what the guard passed to rmcp until `n` came.
    async fn passed(from_guard: &mut BufReader<tokio::io::DuplexStream>, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            let mut line = String::new();
            from_guard.read_line(&mut line).await.unwrap();
            out.push(line);
        }
        out
    }

    #[tokio::test]
    async fn a_stop_hands_back_what_was_read_past_the_last_whole_line() {
        let (to_rmcp, rmcp_in) = tokio::io::duplex(PIPE);
        let (errors, _errors) = mpsc::channel(4);
        let due = Arc::new(Due::default());
        let mut guard = Guard { to_rmcp, errors, due: Some(due.clone()) };
        let (mut client, input) = tokio::io::duplex(PIPE);
        let partial = br#"{"jsonrpc":"2.0","id":3,"me"#;
        client
            .write_all(&[INIT, b"\n", br#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#, b"\n", partial].concat())
            .await
            .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let (told, initialize) = std::sync::mpsc::channel();
        let handing = HandingBack {
            stop: Box::pin(async move {
                let _ = stopped.await;
            }),
            initialized: Box::new(move |init| told.send(init).unwrap()),
        };
        let run = tokio::spawn(async move { guard.run(input, Some(handing)).await });
        let mut from_guard = BufReader::new(rmcp_in);
        assert_eq!(passed(&mut from_guard, 2).await.len(), 2, "the whole lines went on");
        assert_eq!(initialize.recv().unwrap(), r#"{"clientInfo":{"name":"t"}}"#);
        // As rmcp answers them.
        assert!(due.answered("1") && due.answered("2"));
        stop.send(()).unwrap();
        let unread = tokio::time::timeout(Duration::from_secs(5), run).await.unwrap().unwrap();
        assert_eq!(unread.as_deref(), Some(&partial[..]), "the part of a line goes back, nothing more");
    }

    #[tokio::test]
    async fn requests_due_at_a_stop_are_named_and_late_answers_dropped() {
        let due = Due::default();
        due.add("7".into());
        due.add(r#""s""#.into());
        // A cancelled request is answered by nobody: it is no longer due.
        assert!(due.answered(r#""s""#));
        let left = due.settle(Duration::from_millis(50)).await;
        assert_eq!(left, ["7"]);
        assert!(!still_due(&due, br#"{"jsonrpc":"2.0","id":7,"result":{}}"#), "answered already: dropped");
        assert!(still_due(&due, br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&error_line("7", INTERNAL_ERROR, "stopped \"now\"")).unwrap(),
            serde_json::json!({"jsonrpc": "2.0", "id": 7, "error": {"code": INTERNAL_ERROR, "message": "stopped \"now\""}})
        );
        // Settling with nothing due returns at once.
        assert!(tokio::time::timeout(Duration::from_millis(500), due.settle(STOP_GRACE)).await.unwrap().is_empty());
    }
}

//! The stdio transport, with a guard in front of rmcp: every line from the client is checked
//! to be JSON (and at most [`MAX_LINE`] bytes) before rmcp sees it, and anything else gets a
//! JSON-RPC parse error back instead of silence. Output from rmcp and from the guard goes to
//! stdout whole line by whole line, so the two can never interleave inside a message.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::TunnelMcp;

/// The longest message accepted: rmcp's own limit, past which it would drop a line without
/// a word; the guard answers such lines instead.
pub const MAX_LINE: usize = rmcp::transport::async_rw::DEFAULT_MAX_LINE_LENGTH;
const PIPE: usize = 1024 * 1024;

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
    use rmcp::ServiceExt;
    let (to_rmcp, rmcp_in) = tokio::io::duplex(PIPE);
    let (rmcp_out, from_rmcp) = tokio::io::duplex(PIPE);
    let (errors_tx, errors_rx) = mpsc::channel::<String>(64);
    let guard = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(guard_input(input, to_rmcp, errors_tx)));
    let writer = tokio::spawn(write_output(from_rmcp, errors_rx, output));
    let (rmcp_read, _) = tokio::io::split(rmcp_in);
    let (_, rmcp_write) = tokio::io::split(rmcp_out);
    let served = match server.serve((rmcp_read, rmcp_write)).await {
        Ok(running) => {
            running.waiting().await.map(|_| ()).map_err(|e| std::io::Error::other(format!("MCP session: {e}")))
        }
        Err(e) => Err(std::io::Error::other(format!("MCP session did not start: {e}"))),
    };
    drop(guard);
    // rmcp is done; its pipe closes, and the writer ends after the last line.
    let _ = writer.await;
    served
}

fn error_line(code: i32, message: &str) -> String {
    serde_json::json!({ "jsonrpc": "2.0", "id": null, "error": { "code": code, "message": message } }).to_string()
}

const PARSE_ERROR: i32 = -32700;
const INVALID_REQUEST: i32 = -32600;

/// Any JSON object; its fields are rmcp's business.
#[derive(serde::Deserialize)]
struct AnyObject {}

/// Reads lines from the client; JSON goes on to rmcp, anything else is answered here.
async fn guard_input<R: AsyncRead + Unpin>(
    input: R,
    mut to_rmcp: tokio::io::DuplexStream,
    errors: mpsc::Sender<String>,
) {
    let mut input = BufReader::with_capacity(64 * 1024, input);
    let mut line = Vec::new();
    let mut oversized = false;
    loop {
        let chunk = match input.fill_buf().await {
            Ok([]) | Err(_) => return, // end of input: dropping `to_rmcp` ends the session
            Ok(c) => c,
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
            let _ = errors.send(error_line(PARSE_ERROR, &msg)).await;
            continue;
        }
        let text = std::mem::take(&mut line);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let answer = match serde_json::from_slice::<AnyObject>(&text) {
            Ok(_) => {
                if to_rmcp.write_all(&text).await.is_err() || to_rmcp.write_all(b"\n").await.is_err() {
                    return;
                }
                continue;
            }
            Err(e) if e.is_data() => error_line(INVALID_REQUEST, "Invalid request: a message is one JSON object"),
            Err(e) => error_line(PARSE_ERROR, &format!("Parse error: not JSON ({e})")),
        };
        let _ = errors.send(answer).await;
    }
}

/// Writes rmcp's lines and the guard's errors to the client, each line whole.
async fn write_output<W: AsyncWrite + Unpin>(
    from_rmcp: tokio::io::DuplexStream,
    mut errors: mpsc::Receiver<String>,
    mut output: W,
) {
    let mut lines = BufReader::new(from_rmcp);
    let mut line = Vec::new();
    let mut errors_open = true;
    loop {
        tokio::select! {
            read = lines.read_until(b'\n', &mut line) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
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

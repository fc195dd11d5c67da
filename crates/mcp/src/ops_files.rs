//! The file tools: read_file, write_file (streamed through the node's file services, with
//! progress) and list_dir.

use base64::Engine;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use tokio::io::WriteHalf;
use tunnel_node::control::{read_frame, write_frame, ControlRequest, ControlResponse};
use tunnel_proto::message::{ByteBuf, FileEvent, FileKind, Op, ReadSpec, Reply, WriteSpec};

use crate::backend::Conn;
use crate::ops_node::next_step;
use crate::params::*;
use crate::progress::{human_bytes, Progress};
use crate::server::{check_target, failure, invalid, success, TunnelMcp};

const LIST_DEFAULT: u32 = 1000;
const LIST_MAX: u32 = 10_000;
const CHUNK: usize = 64 * 1024;

pub(crate) fn check_path(tool: &str, target: &str, path: &str) -> Result<(), McpError> {
    check_target(tool, target)?;
    if !path.starts_with('/') {
        return Err(invalid(tool, "path", &format!("field `path` must be absolute, got {path:?}")));
    }
    Ok(())
}

/// What went wrong with a file operation, with the next step where there is one.
fn file_failure(target: &str, event: FileEvent) -> Result<CallToolResult, McpError> {
    match event {
        FileEvent::Refused(why) => failure(format!(
            "refused by {target}'s policy: {why}. Call `get_info` on it to see its mode and path rules."
        )),
        FileEvent::Failed(why) => failure(format!("failed on {target}: {why}")),
        other => failure(format!("unexpected answer from {target}: {other:?}")),
    }
}

/// The longest prefix of `bytes` that is valid UTF-8 when only a character cut at the end
/// spoils it (a read cut mid-character), else `None` (the content is binary).
fn utf8_prefix(bytes: &[u8], cut: bool) -> Option<usize> {
    match std::str::from_utf8(bytes) {
        Ok(_) => Some(bytes.len()),
        Err(e) if cut && e.error_len().is_none() => Some(e.valid_up_to()),
        Err(_) => None,
    }
}

pub(crate) async fn read_file(
    srv: &TunnelMcp,
    p: ReadParams,
    ctx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    check_path("read_file", &p.target, &p.path)?;
    let max = srv.cap(p.max_bytes);
    if max == 0 {
        return Err(invalid("read_file", "max_bytes", "field `max_bytes` must be at least 1"));
    }
    let offset = p.offset.unwrap_or(0);
    let spec = ReadSpec { request_id: rand::random(), path: p.path.clone().into(), offset, length: Some(max) };
    let mut conn = match srv.backend().open(&ControlRequest::Read { target: p.target.clone(), spec }).await {
        Ok(c) => c,
        Err(e) => return failure(e),
    };
    let mut progress = Progress::new(ctx);
    let (mut size, mut data) = (0u64, Vec::new());
    loop {
        let frame = tokio::select! {
            _ = ctx.ct.cancelled() => return failure("cancelled"),
            frame = read_frame::<ControlResponse, _>(&mut conn) => frame,
        };
        match frame {
            Ok(Some(ControlResponse::File(FileEvent::Meta(stat)))) => size = stat.size,
            Ok(Some(ControlResponse::File(FileEvent::Data(b)))) => {
                data.extend_from_slice(&b.0);
                let total = size.saturating_sub(offset).min(max) as f64;
                let msg = format!("{} read", human_bytes(data.len() as u64));
                progress.report(data.len() as f64, Some(total), msg).await;
            }
            Ok(Some(ControlResponse::File(FileEvent::Done { .. }))) => break,
            Ok(Some(ControlResponse::File(event))) => return file_failure(&p.target, event),
            Ok(Some(ControlResponse::Error(e))) => return failure(next_step(&p.target, &e)),
            Ok(Some(other)) => return failure(format!("unexpected answer from the local node: {other:?}")),
            Ok(None) => return failure("the local node closed the connection before the read finished"),
            Err(e) => return failure(crate::backend::node_lost(e)),
        }
    }
    let cut = offset + (data.len() as u64) < size;
    let (encoding, content) = match utf8_prefix(&data, cut) {
        Some(n) => {
            data.truncate(n);
            (Encoding::Utf8, String::from_utf8(data.clone()).unwrap_or_default())
        }
        None => (Encoding::Base64, base64::engine::general_purpose::STANDARD.encode(&data)),
    };
    let returned = data.len() as u64;
    let truncated = offset + returned < size;
    let mut text = format!("{}:{} ({}", p.target, p.path, human_bytes(size));
    if truncated || offset > 0 {
        text.push_str(&format!(
            ", bytes {offset}..{} shown; read on with offset {}",
            offset + returned,
            offset + returned
        ));
    }
    text.push_str(")\n");
    match encoding {
        Encoding::Utf8 => text.push_str(&crate::fence::fenced(&format!("{} on {}", p.path, p.target), &content)),
        Encoding::Base64 => text.push_str("[binary content, base64 in the structured result]"),
    }
    let out = ReadOut {
        target: p.target,
        path: p.path,
        size,
        offset,
        bytes_returned: returned,
        truncated,
        encoding,
        content,
    };
    success(&out, text)
}

pub(crate) fn parse_mode(mode: &Option<String>) -> Result<Option<u32>, McpError> {
    let Some(text) = mode else { return Ok(None) };
    match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
        Ok(bits) if bits <= 0o7777 => Ok(Some(bits)),
        _ => Err(invalid(
            "write_file",
            "mode",
            &format!("field `mode` must be octal permission bits like \"0644\", got {text:?}"),
        )),
    }
}

/// A write's `content` as bytes.
pub(crate) fn decode_content(tool: &str, content: String, encoding: Encoding) -> Result<Vec<u8>, McpError> {
    match encoding {
        Encoding::Utf8 => Ok(content.into_bytes()),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(content.trim())
            .map_err(|e| invalid(tool, "content", &format!("field `content` is not valid base64: {e}"))),
    }
}

pub(crate) async fn write_file(
    srv: &TunnelMcp,
    p: WriteParams,
    ctx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    check_path("write_file", &p.target, &p.path)?;
    let mode = parse_mode(&p.mode)?;
    let bytes = decode_content("write_file", p.content, p.encoding)?;
    let size = bytes.len() as u64;
    let spec =
        WriteSpec { request_id: rand::random(), path: p.path.clone().into(), size, mode, create_only: p.create_only };
    let conn = match srv.backend().open(&ControlRequest::Write { target: p.target.clone(), spec }).await {
        Ok(c) => c,
        Err(e) => return failure(e),
    };
    let (mut rd, wr) = tokio::io::split(conn);
    let mut progress = Progress::new(ctx);
    // The upload runs beside the answer: a refusal can come before all bytes are sent.
    let upload = upload(wr, bytes);
    tokio::pin!(upload);
    let mut uploaded = false;
    // The write half, held once the upload is done: closing it early would abandon the write.
    let mut _held = None;
    let answer = loop {
        tokio::select! {
            _ = ctx.ct.cancelled() => return failure("cancelled; the node discards the partial upload"),
            (sent, wr) = &mut upload, if !uploaded => {
                uploaded = true;
                _held = Some(wr);
                progress.report(sent as f64, Some(size as f64), format!("{} sent", human_bytes(sent))).await;
            }
            frame = read_frame::<ControlResponse, _>(&mut rd) => break frame,
        }
    };
    match answer {
        Ok(Some(ControlResponse::File(FileEvent::Done { bytes, backup }))) => {
            let text = match &backup {
                Some(b) => format!(
                    "wrote {} to {}:{} (the old file is backed up at {b})",
                    human_bytes(bytes),
                    p.target,
                    p.path
                ),
                None => format!("wrote {} to {}:{}", human_bytes(bytes), p.target, p.path),
            };
            success(&WriteOut { target: p.target, path: p.path, bytes, backup }, text)
        }
        Ok(Some(ControlResponse::File(event))) => file_failure(&p.target, event),
        Ok(Some(ControlResponse::Error(e))) => failure(next_step(&p.target, &e)),
        Ok(Some(other)) => failure(format!("unexpected answer from the local node: {other:?}")),
        Ok(None) => failure("the local node closed the connection before the write finished"),
        Err(e) => failure(crate::backend::node_lost(e)),
    }
}

/// Sends the content and the end marker; returns the bytes sent and the write half, which
/// the caller holds until the node answers.
async fn upload(mut wr: WriteHalf<Conn>, bytes: Vec<u8>) -> (u64, WriteHalf<Conn>) {
    let mut sent = 0u64;
    for chunk in bytes.chunks(CHUNK) {
        if write_frame(&mut wr, &ControlRequest::Input(ByteBuf::copy_from(chunk))).await.is_err() {
            return (sent, wr);
        }
        sent += chunk.len() as u64;
    }
    let _ = write_frame(&mut wr, &ControlRequest::InputEnd).await;
    (sent, wr)
}

pub(crate) async fn list_dir(srv: &TunnelMcp, p: ListParams) -> Result<CallToolResult, McpError> {
    check_path("list_dir", &p.target, &p.path)?;
    let limit = p.limit.unwrap_or(LIST_DEFAULT);
    if !(1..=LIST_MAX).contains(&limit) {
        return Err(invalid("list_dir", "limit", &format!("field `limit` must be 1 to {LIST_MAX}")));
    }
    let req = ControlRequest::Request { target: p.target.clone(), op: Op::List { path: p.path.clone().into(), limit } };
    let (entries, truncated) = match srv.backend().request(&req).await {
        Ok(ControlResponse::Reply(Reply::List { entries, truncated })) => (entries, truncated),
        Ok(other) => return failure(format!("unexpected answer from the local node: {other:?}")),
        Err(e) if e.contains("refused") || e.contains("policy") => {
            return failure(format!("{e}. Call `get_info` on {} to see its mode and path rules.", p.target))
        }
        Err(e) => return failure(next_step(&p.target, &e)),
    };
    let entries: Vec<EntryOut> = entries
        .into_iter()
        .map(|e| EntryOut {
            name: e.name.to_string(),
            kind: match e.kind {
                FileKind::File => "file",
                FileKind::Dir => "dir",
                FileKind::Symlink => "symlink",
                FileKind::Other => "other",
            }
            .into(),
            size: e.size,
            mode: format!("{:04o}", e.mode),
            mtime_ms: e.mtime_ms,
        })
        .collect();
    let mut text = format!(
        "{}:{} ({} entries{})\n",
        p.target,
        p.path,
        entries.len(),
        if truncated { ", more not shown" } else { "" }
    );
    let mut listing = String::new();
    for e in &entries {
        let mark = if e.kind == "dir" { "/" } else { "" };
        listing.push_str(&format!("{} {:>10} {}{mark}\n", e.mode, e.size, e.name));
    }
    text.push_str(&crate::fence::fenced(&format!("entries of {}", p.path), &listing));
    success(&ListOut { target: p.target, path: p.path, entries, truncated }, text)
}

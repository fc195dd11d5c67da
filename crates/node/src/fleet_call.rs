//! The client's side of a fleet operation over the control protocol (the CLI and `tunnel
//! mcp` both use it): send the request (and a write's bytes), then take the targets and each
//! result as they come. Dropping the call closes the connection, which cancels the rest.

use tokio::io::AsyncWrite;
use tunnel_proto::message::ByteBuf;

use crate::control::{read_frame, write_frame, ControlRequest, ControlResponse, ControlStream, FleetAction};
use crate::fleet::{FleetOptions, TargetResult};
use crate::targets::Target;

/// Bytes per `Input` frame of a write's content.
const CHUNK: usize = 1 << 20;

/// What a fleet call reports, in order: the targets once, then one result per target.
#[derive(Debug)]
pub enum FleetUpdate {
    Targets(Vec<Target>),
    Result(TargetResult),
}

pub struct FleetCall<S> {
    rd: tokio::io::ReadHalf<S>,
    // Kept open until the call ends: closing it would cancel the operation.
    _wr: tokio::io::WriteHalf<S>,
}

impl<S: ControlStream> FleetCall<S> {
    /// Starts `action` on `target`; `content` is a write's file (and ignored otherwise).
    pub async fn start(
        stream: S,
        target: String,
        action: FleetAction,
        options: FleetOptions,
        content: Option<&[u8]>,
    ) -> std::io::Result<Self> {
        let (rd, mut wr) = tokio::io::split(stream);
        let is_write = matches!(action, FleetAction::Write { .. });
        write_frame(&mut wr, &ControlRequest::Fleet { target, action, options }).await?;
        if is_write {
            send_content(&mut wr, content.unwrap_or_default()).await?;
        }
        Ok(Self { rd, _wr: wr })
    }

    /// The next update; `Ok(None)` once every target has its result.
    pub async fn next(&mut self) -> Result<Option<FleetUpdate>, String> {
        match read_frame::<ControlResponse, _>(&mut self.rd).await {
            Ok(Some(ControlResponse::Targets(t))) => Ok(Some(FleetUpdate::Targets(t))),
            Ok(Some(ControlResponse::FleetResult(r))) => Ok(Some(FleetUpdate::Result(r))),
            Ok(Some(ControlResponse::Done)) => Ok(None),
            Ok(Some(ControlResponse::Error(e))) => Err(e),
            Ok(Some(other)) => Err(format!("unexpected answer from the node: {other:?}")),
            Ok(None) => Err("the node closed the connection before the fleet operation finished".into()),
            Err(e) => Err(format!("control connection: {e}")),
        }
    }
}

async fn send_content<W: AsyncWrite + Unpin>(wr: &mut W, content: &[u8]) -> std::io::Result<()> {
    for chunk in content.chunks(CHUNK) {
        write_frame(wr, &ControlRequest::Input(ByteBuf(chunk.to_vec()))).await?;
    }
    write_frame(wr, &ControlRequest::InputEnd).await
}

//! The client's side of a long control exchange (a fleet operation, a mapreduce job): send
//! the request and its input, then read answers until the last. The CLI and `tunnel mcp`
//! both use it. Dropping the call closes the connection, which cancels the operation.

use tokio::io::AsyncWrite;
use tunnel_proto::message::ByteBuf;

use crate::control::{read_frame, write_frame, ControlRequest, ControlResponse, ControlStream};

/// Bytes per `Input` frame.
const CHUNK: usize = 1 << 20;

pub struct Call<S> {
    rd: tokio::io::ReadHalf<S>,
    // Kept open until the call ends: closing it would cancel the operation.
    _wr: tokio::io::WriteHalf<S>,
}

impl<S: ControlStream> Call<S> {
    /// Sends `request`, then `input` (if any) as `Input` frames and `InputEnd`.
    pub async fn start(mut stream: S, request: &ControlRequest, input: Option<&[u8]>) -> std::io::Result<Self> {
        write_frame(&mut stream, request).await?;
        Self::sent(stream, input).await
    }

    /// Like [`Call::start`] on a connection that already carries the request.
    pub async fn sent(stream: S, input: Option<&[u8]>) -> std::io::Result<Self> {
        let (rd, mut wr) = tokio::io::split(stream);
        if let Some(input) = input {
            send_input(&mut wr, input).await?;
        }
        Ok(Self { rd, _wr: wr })
    }

    /// The next answer. An `Error` answer, or the connection ending, is `Err`.
    pub async fn next(&mut self) -> Result<ControlResponse, String> {
        match read_frame::<ControlResponse, _>(&mut self.rd).await {
            Ok(Some(ControlResponse::Error(e))) => Err(e),
            Ok(Some(answer)) => Ok(answer),
            Ok(None) => Err("the node closed the connection before the operation finished".into()),
            Err(e) => Err(format!("control connection: {e}")),
        }
    }
}

async fn send_input<W: AsyncWrite + Unpin>(wr: &mut W, input: &[u8]) -> std::io::Result<()> {
    for chunk in input.chunks(CHUNK) {
        write_frame(wr, &ControlRequest::Input(ByteBuf::copy_from(chunk))).await?;
    }
    write_frame(wr, &ControlRequest::InputEnd).await
}

//! `tunnel exec` over the control socket: a command, a job or a task started on a peer, its
//! stdin relayed from the client, its events relayed back until the last.

use tokio::sync::mpsc;
use tunnel_proto::message::{ExecEvent, ExecSpec};

use crate::control::{read_frame, write_frame, ControlRequest, ControlResponse, ControlStream};
use crate::Node;

/// What a control client starts on a peer.
pub(super) enum Launch {
    Exec(ExecSpec),
    Job(crate::JobLaunch),
}

/// Relays one exec between the control client and the peer. The client going away (its
/// end closing before the command finished) cancels the command.
pub(super) async fn serve<S: ControlStream>(stream: S, node: Node, target: String, launch: Launch) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let peer = match node.find_dest(&target).await {
        Ok(p) => p,
        Err(e) => {
            let _ = write_frame(&mut wr, &ControlResponse::Error(e.to_string())).await;
            return;
        }
    };
    let wants_stdin = match &launch {
        Launch::Exec(spec) | Launch::Job(crate::JobLaunch::Exec { spec, .. }) => spec.stdin,
        Launch::Job(crate::JobLaunch::Task(_)) => false,
    };
    let (stdin_tx, stdin_rx) = if wants_stdin {
        let (tx, rx) = mpsc::channel::<Vec<u8>>(16);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let (events_tx, mut events) = mpsc::channel(64);
    let runner = node.clone();
    let run = tokio::spawn(crate::node::lookup::inherit(async move {
        let ran = match launch {
            Launch::Job(launch) => runner.exec_as_job(peer, launch, stdin_rx, events_tx.clone()).await,
            Launch::Exec(spec) => runner.exec(peer, spec, stdin_rx, events_tx.clone()).await,
        };
        if let Err(e) = ran {
            let _ = events_tx.send(ExecEvent::Failed(e.to_string())).await;
        }
    }));
    let _run = tokio_util::task::AbortOnDropHandle::new(run);
    let client = tokio::spawn(async move {
        let mut stdin_tx = stdin_tx;
        loop {
            match read_frame::<ControlRequest, _>(&mut rd).await {
                Ok(Some(ControlRequest::Input(bytes))) => {
                    if let Some(tx) = &stdin_tx {
                        let _ = tx.send(bytes.0.into()).await;
                    }
                }
                Ok(Some(ControlRequest::InputEnd)) => stdin_tx = None,
                // The client closed its end: it is gone.
                Ok(None) | Err(_) => return,
                Ok(Some(_)) => {}
            }
        }
    });
    let mut client = tokio_util::task::AbortOnDropHandle::new(client);
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return };
                let last = event.is_last();
                if write_frame(&mut wr, &ControlResponse::Exec(event)).await.is_err() || last {
                    return;
                }
            }
            // Returning drops `events`, which cancels the command on the peer.
            _ = &mut client => return,
        }
    }
}

//! Who is the local operator. The CLI on this machine reaches its node through the control
//! socket and then the loopback, so a local operation arrives "from our own id", exactly as
//! one an MCP session (an AI agent) asks for. The control connection knows which it is (MCP
//! sessions say so first: [`crate::control::ControlRequest::Agent`]), and marks the operator's
//! file streams here by request id before opening them; the service serving the stream takes
//! the mark. Only the operator is exempt from the secret list.

use std::collections::VecDeque;
use std::sync::Mutex;

use tunnel_proto::NodeId;

use super::Node;

/// Marks kept for streams about to open; older ones are dropped (their stream never came).
const MARKS_MAX: usize = 256;

#[derive(Default)]
pub(super) struct OperatorMarks(Mutex<VecDeque<u64>>);

impl Node {
    /// Notes that the stream with `request_id` about to open to this node is the operator's.
    pub(crate) fn mark_operator(&self, request_id: u64) {
        let mut marks = self.inner.operator.0.lock().expect("operator marks lock");
        if marks.len() == MARKS_MAX {
            marks.pop_front();
        }
        marks.push_back(request_id);
    }

    /// Whether a stream from `peer` with `request_id` is the local operator's (taking the mark).
    pub(crate) fn is_operator(&self, peer: &NodeId, request_id: u64) -> bool {
        if *peer != self.id() {
            return false;
        }
        let mut marks = self.inner.operator.0.lock().expect("operator marks lock");
        match marks.iter().position(|m| *m == request_id) {
            Some(at) => marks.remove(at).is_some(),
            None => false,
        }
    }
}

//! `notifications/progress` for a call whose client asked for them (sent a progress token).

use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::RequestContext;
use rmcp::RoleServer;

pub(crate) struct Progress {
    peer: rmcp::Peer<RoleServer>,
    token: Option<ProgressToken>,
    last: f64,
}

impl Progress {
    pub(crate) fn new(ctx: &RequestContext<RoleServer>) -> Self {
        Self { peer: ctx.peer.clone(), token: ctx.meta.get_progress_token(), last: -1.0 }
    }

    /// Reports `progress` (of `total`, if known). Progress only ever grows, as the protocol
    /// requires; a report that would not is skipped.
    pub(crate) async fn report(&mut self, progress: f64, total: Option<f64>, message: String) {
        let Some(token) = &self.token else { return };
        if progress <= self.last {
            return;
        }
        self.last = progress;
        let mut param = ProgressNotificationParam::new(token.clone(), progress).with_message(message);
        if let Some(total) = total {
            param = param.with_total(total);
        }
        // A client that went away is noticed by the call's cancellation, not here.
        let _ = self.peer.notify_progress(param).await;
    }
}

/// `1.5 KiB`, `3.0 MiB`: sizes for messages.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

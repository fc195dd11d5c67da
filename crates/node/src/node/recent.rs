//! At most once: the executing node remembers recent request ids. A caller that resends a
//! request (its first copy or the answer was lost) gets the remembered answer; the work is
//! never done twice. Bounded in count and age.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tunnel_proto::message::{RemoteError, Reply};
use tunnel_proto::NodeId;

const CAPACITY: usize = 4096;
const KEEP_FOR: Duration = Duration::from_secs(600);

type Key = (NodeId, u64);
pub(crate) type Outcome = Result<Reply, RemoteError>;

enum Entry {
    Running,
    Done(Box<Outcome>),
}

/// What to do with an incoming request.
pub(crate) enum Seen {
    /// First time: run it, then call [`Recent::finish`].
    New,
    /// Already running: its answer will be sent when it finishes.
    Running,
    /// Already done: send this answer again.
    Done(Box<Outcome>),
}

#[derive(Default)]
pub(crate) struct Recent {
    entries: HashMap<Key, Entry>,
    order: VecDeque<(Key, Instant)>,
}

impl Recent {
    pub(crate) fn begin(&mut self, from: NodeId, id: u64, now: Instant) -> Seen {
        self.expire(now);
        match self.entries.get(&(from, id)) {
            Some(Entry::Running) => Seen::Running,
            Some(Entry::Done(outcome)) => Seen::Done(outcome.clone()),
            None => {
                self.entries.insert((from, id), Entry::Running);
                self.order.push_back(((from, id), now));
                Seen::New
            }
        }
    }

    pub(crate) fn finish(&mut self, from: NodeId, id: u64, outcome: Outcome) {
        if let Some(entry) = self.entries.get_mut(&(from, id)) {
            *entry = Entry::Done(Box::new(outcome));
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((key, at)) = self.order.front() {
            let old = now.saturating_duration_since(*at) > KEEP_FOR;
            // Never forget a request that is still running: its resend must not start it again.
            let full = self.order.len() >= CAPACITY && !matches!(self.entries.get(key), Some(Entry::Running));
            if !(old || full) {
                break;
            }
            self.entries.remove(key);
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tunnel_proto::message::ByteBuf;

    #[test]
    fn a_resent_request_is_answered_from_memory() {
        let mut r = Recent::default();
        let peer = NodeId::from_bytes([1; 32]);
        let now = Instant::now();
        assert!(matches!(r.begin(peer, 7, now), Seen::New));
        assert!(matches!(r.begin(peer, 7, now), Seen::Running));
        let reply = Reply::Pong { payload: ByteBuf::from(vec![1]) };
        r.finish(peer, 7, Ok(reply.clone()));
        assert!(matches!(r.begin(peer, 7, now), Seen::Done(ref got) if **got == Ok(reply.clone())));
        // Same id from another peer is another request.
        assert!(matches!(r.begin(NodeId::from_bytes([2; 32]), 7, now), Seen::New));
        // Forgotten after the retention time.
        assert!(matches!(r.begin(peer, 7, now + KEEP_FOR + Duration::from_secs(1)), Seen::New));
    }

    #[test]
    fn bounded_in_count() {
        let mut r = Recent::default();
        let peer = NodeId::from_bytes([1; 32]);
        let now = Instant::now();
        for id in 0..(CAPACITY as u64 * 2) {
            r.begin(peer, id, now);
            r.finish(peer, id, Ok(Reply::Pong { payload: ByteBuf::from(vec![]) }));
        }
        assert!(r.entries.len() <= CAPACITY);
    }
}

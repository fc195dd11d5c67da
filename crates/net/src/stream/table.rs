//! The actor-side state of a peer's streams: windows granted and used, data held for resend,
//! ids opened and reset, what goes to the caller's handles.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tunnel_proto::message::{ByteBuf, PeerMessage, StreamKind};
use tunnel_proto::NodeId;

use super::{Chunk, Credit, Stream, StreamCmd, StreamReader, StreamWriter, MAX_MISSING, RECENT_RESETS, WINDOW};
use crate::error::StreamError;

struct Slot {
    in_tx: mpsc::UnboundedSender<Chunk>,
    in_expected: u64,
    in_granted: u64,
    in_done: bool,
    credit: watch::Sender<Credit>,
    out_acked: u64,
    unacked: VecDeque<(u64, Bytes)>,
    out_fin: Option<u64>,
    out_done: bool,
    /// Our `Open`, until the peer's first `Credit` shows it arrived.
    open_unacked: Option<StreamKind>,
    /// The acknowledged position at which we last fast-resent the next chunk.
    fast_resent: Option<u64>,
}

/// Handles a new stream needs to reach its actor.
pub(crate) struct StreamPorts {
    pub(crate) data: mpsc::Sender<StreamCmd>,
    pub(crate) ctl: mpsc::UnboundedSender<StreamCmd>,
    pub(crate) window: Arc<AtomicU64>,
}

impl StreamPorts {
    pub(crate) fn new(data: mpsc::Sender<StreamCmd>, ctl: mpsc::UnboundedSender<StreamCmd>) -> Self {
        Self { data, ctl, window: Arc::new(AtomicU64::new(WINDOW)) }
    }

    /// The window new grants use from now on (credit granted stays granted).
    pub(crate) fn set_window(&self, window: u64) {
        self.window.store(window, Ordering::Relaxed);
    }
}

/// All streams with one peer, owned by that peer's actor.
impl StreamTable {
    /// No stream open with the peer, either way.
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

pub(crate) struct StreamTable {
    peer: NodeId,
    slots: HashMap<u64, Slot>,
    next_local: u64,
    /// Highest stream id the peer has opened; lower unknown ids are finished streams...
    highest_remote: u64,
    /// ...except these, skipped over when a later `Open` overtook theirs (theirs was dropped
    /// on the way and will be resent). Bounded: the oldest are forgotten first.
    missing_remote: BTreeSet<u64>,
    local_odd: bool,
    recent_resets: VecDeque<(u64, String)>,
}

/// Where a new table starts numbering its streams: the clock in microseconds (doubled, with the
/// side's parity). A peer keeps its table when ours is made anew (our actor was dropped when
/// the relay briefly said the peer was gone), and it ignores ids at or below the highest it
/// saw as finished streams; counting up from 1 again would have every new stream ignored.
fn first_local_id(local_odd: bool) -> u64 {
    let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
    (u64::try_from(micros).unwrap_or(0) << 1) + 2 + u64::from(local_odd)
}

impl StreamTable {
    /// The node with the smaller id opens odd stream ids, the other even ones.
    pub(crate) fn new(me: NodeId, peer: NodeId) -> Self {
        Self::with_parity(peer, me < peer)
    }

    /// A table whose side is chosen explicitly: both ends of a loopback have the same id.
    pub(crate) fn with_parity(peer: NodeId, local_odd: bool) -> Self {
        Self {
            peer,
            slots: HashMap::new(),
            next_local: first_local_id(local_odd),
            highest_remote: 0,
            missing_remote: BTreeSet::new(),
            local_odd,
            recent_resets: VecDeque::new(),
        }
    }

    fn new_slot(
        &mut self,
        id: u64,
        kind: StreamKind,
        out_credit: u64,
        ports: &StreamPorts,
        open_unacked: bool,
    ) -> Stream {
        let (in_tx, rx) = mpsc::unbounded_channel();
        let (credit, credit_rx) = watch::channel(Credit { max: out_credit, failed: None });
        let slot = Slot {
            in_tx,
            in_expected: 0,
            in_granted: WINDOW,
            in_done: false,
            credit,
            out_acked: 0,
            unacked: VecDeque::new(),
            out_fin: None,
            out_done: false,
            open_unacked: open_unacked.then(|| kind.clone()),
            fast_resent: None,
        };
        self.slots.insert(id, slot);
        Stream {
            peer: self.peer,
            kind,
            reader: StreamReader {
                id,
                rx,
                consumed: 0,
                granted: WINDOW,
                window: ports.window.clone(),
                ctl: ports.ctl.clone(),
                done: false,
            },
            writer: StreamWriter {
                id,
                offset: 0,
                credit: credit_rx,
                data: ports.data.clone(),
                ctl: ports.ctl.clone(),
                finished: false,
            },
        }
    }

    /// Opens a stream from this side.
    pub(crate) fn open(&mut self, kind: StreamKind, ports: &StreamPorts) -> (Stream, PeerMessage) {
        let id = self.next_local;
        self.next_local += 2;
        let msg = PeerMessage::Open { stream: id, kind: kind.clone(), window: WINDOW };
        (self.new_slot(id, kind, 0, ports, true), msg)
    }

    fn is_remote_id(&self, id: u64) -> bool {
        (id % 2 == 1) != self.local_odd
    }

    /// A stream the peer opened. Returns the new stream (if it is new) and what to send.
    pub(crate) fn on_open(
        &mut self,
        id: u64,
        kind: StreamKind,
        window: u64,
        ports: &StreamPorts,
    ) -> (Option<Stream>, Vec<PeerMessage>) {
        if !self.is_remote_id(id) {
            return (None, vec![]);
        }
        if let Some(slot) = self.slots.get(&id) {
            // A resent Open: our Credit was probably lost; send it again.
            return (
                None,
                vec![PeerMessage::Credit { stream: id, max_offset: slot.in_granted, received: slot.in_expected }],
            );
        }
        if id <= self.highest_remote {
            if !self.missing_remote.remove(&id) {
                return (None, vec![]); // finished long ago: a late duplicate
            }
        } else {
            self.skip_to(id);
        }
        let stream = self.new_slot(id, kind, window, ports, false);
        (Some(stream), vec![PeerMessage::Credit { stream: id, max_offset: WINDOW, received: 0 }])
    }

    pub(crate) fn on_data(&mut self, id: u64, offset: u64, bytes: Bytes) -> Vec<PeerMessage> {
        let Some(slot) = self.slots.get_mut(&id) else {
            return vec![];
        };
        if slot.in_done {
            return vec![];
        }
        let end = offset + bytes.len() as u64;
        if end > slot.in_granted {
            return self.fail(id, StreamError::Reset("peer sent past its flow-control window".into()), true);
        }
        if offset > slot.in_expected {
            // A gap: data was lost on the way (the relay path keeps order). Say at once what
            // arrived, so the sender resends the missing piece without waiting for its timer.
            return vec![PeerMessage::Credit { stream: id, max_offset: slot.in_granted, received: slot.in_expected }];
        }
        if end <= slot.in_expected {
            // A duplicate: the sender resent because it heard no ack; say what arrived so it
            // stops resending.
            return vec![PeerMessage::Credit { stream: id, max_offset: slot.in_granted, received: slot.in_expected }];
        }
        let skip = (slot.in_expected - offset) as usize;
        slot.in_expected = end;
        // A reader that is gone has queued its own reset, behind whatever its stream still
        // had to send; resetting from here would overtake that. Just discard the data.
        let _ = slot.in_tx.send(Chunk::Data(bytes.slice(skip..)));
        vec![]
    }

    /// Whether stream `id` existed and is gone (as opposed to never opened).
    fn is_finished(&self, id: u64) -> bool {
        if self.slots.contains_key(&id) {
            return false;
        }
        if self.is_remote_id(id) {
            id <= self.highest_remote && !self.missing_remote.contains(&id)
        } else {
            id < self.next_local
        }
    }

    /// Records the remote ids between the highest seen and `id` as missing, then `id` as seen.
    fn skip_to(&mut self, id: u64) {
        let first_remote = if self.local_odd { 2 } else { 1 };
        let from = if self.highest_remote == 0 { first_remote } else { self.highest_remote.saturating_add(2) };
        let from = from.max(id.saturating_sub(2 * MAX_MISSING as u64));
        self.missing_remote.extend((from..id).step_by(2));
        while self.missing_remote.len() > MAX_MISSING {
            self.missing_remote.pop_first();
        }
        self.highest_remote = id;
    }

    /// Returns the first unacknowledged chunk when the peer reports a gap there (fast
    /// retransmit), at most once per acknowledged position.
    pub(crate) fn on_credit(&mut self, id: u64, max_offset: u64, received: u64) -> Option<PeerMessage> {
        let slot = self.slots.get_mut(&id)?;
        let advanced = received > slot.out_acked;
        slot.open_unacked = None;
        slot.credit.send_if_modified(|c| {
            let grew = max_offset > c.max;
            c.max = c.max.max(max_offset);
            grew
        });
        if received > slot.out_acked {
            slot.out_acked = received;
            while slot.unacked.front().is_some_and(|(off, b)| off + b.len() as u64 <= received) {
                slot.unacked.pop_front();
            }
        }
        // The FIN counts as one byte past the data: an ack of every data byte is not an ack
        // of the FIN, which may still have been lost (and must then be sent again).
        if slot.out_fin.is_some_and(|fin| received > fin) {
            slot.out_done = true;
        }
        let resend = match slot.unacked.front() {
            Some((offset, bytes)) if !advanced && received == slot.out_acked && slot.fast_resent != Some(received) => {
                slot.fast_resent = Some(received);
                Some(PeerMessage::Data { stream: id, offset: *offset, bytes: ByteBuf(bytes.clone()) })
            }
            _ => None,
        };
        self.remove_if_done(id);
        resend
    }

    pub(crate) fn on_close(&mut self, id: u64, final_offset: u64, error: Option<String>) -> Vec<PeerMessage> {
        if let Some(reason) = error {
            return self.fail(id, StreamError::Reset(reason), false);
        }
        let fin_ack = |max_offset| PeerMessage::Credit { stream: id, max_offset, received: final_offset + 1 };
        let Some(slot) = self.slots.get_mut(&id) else {
            // A stream that ended here already: our ack of its FIN was lost. Ack it again, or
            // the peer resends the FIN forever.
            return if self.is_finished(id) { vec![fin_ack(0)] } else { vec![] };
        };
        if slot.in_done {
            return vec![fin_ack(slot.in_granted)];
        }
        if final_offset != slot.in_expected {
            // Early FIN: some data is still missing and will be resent with the FIN.
            return vec![];
        }
        slot.in_done = true;
        let _ = slot.in_tx.send(Chunk::Fin);
        let ack = fin_ack(slot.in_granted);
        self.remove_if_done(id);
        vec![ack]
    }

    /// Our writer's data: remembered until acknowledged, then sent.
    pub(crate) fn local_data(&mut self, id: u64, offset: u64, bytes: Bytes) -> Option<PeerMessage> {
        let slot = self.slots.get_mut(&id)?;
        if slot.out_fin.is_some() || slot.out_done {
            return None;
        }
        slot.unacked.push_back((offset, bytes.clone()));
        Some(PeerMessage::Data { stream: id, offset, bytes: ByteBuf(bytes.clone()) })
    }

    pub(crate) fn local_finish(&mut self, id: u64, final_offset: u64) -> Option<PeerMessage> {
        let slot = self.slots.get_mut(&id)?;
        slot.out_fin = Some(final_offset);
        Some(PeerMessage::Close { stream: id, final_offset, error: None })
    }

    /// What one command from a local stream handle makes us say to the peer.
    pub(crate) fn local_cmd(&mut self, cmd: StreamCmd) -> Vec<PeerMessage> {
        match cmd {
            StreamCmd::Data { stream, offset, bytes } => self.local_data(stream, offset, bytes).into_iter().collect(),
            StreamCmd::Finish { stream, final_offset } => self.local_finish(stream, final_offset).into_iter().collect(),
            StreamCmd::Consumed { stream, max_offset } => self.local_consumed(stream, max_offset).into_iter().collect(),
            StreamCmd::Reset { stream, reason } => self.local_reset(stream, reason),
        }
    }

    pub(crate) fn local_consumed(&mut self, id: u64, max_offset: u64) -> Option<PeerMessage> {
        let slot = self.slots.get_mut(&id)?;
        slot.in_granted = slot.in_granted.max(max_offset);
        Some(PeerMessage::Credit { stream: id, max_offset: slot.in_granted, received: slot.in_expected })
    }

    /// A local reset (a handle dropped early): tells the peer.
    pub(crate) fn local_reset(&mut self, id: u64, reason: String) -> Vec<PeerMessage> {
        self.fail(id, StreamError::Reset(reason), true)
    }

    /// Ends a stream with `error` for both local halves; optionally tells the peer.
    fn fail(&mut self, id: u64, error: StreamError, tell_peer: bool) -> Vec<PeerMessage> {
        let Some(slot) = self.slots.remove(&id) else {
            return vec![];
        };
        let _ = slot.in_tx.send(Chunk::Failed(error.clone()));
        let reason = match &error {
            StreamError::Reset(r) | StreamError::Lost(r) => r.clone(),
            StreamError::Closed => "closed".into(),
        };
        slot.credit.send_modify(|c| c.failed = Some(error));
        if !tell_peer {
            return vec![];
        }
        if self.recent_resets.len() == RECENT_RESETS {
            self.recent_resets.pop_front();
        }
        self.recent_resets.push_back((id, reason.clone()));
        vec![PeerMessage::Close { stream: id, final_offset: 0, error: Some(reason) }]
    }

    /// Every stream fails with `reason` (the peer restarted or left, or our relay connection
    /// dropped and took frames with it).
    pub(crate) fn fail_all(&mut self, reason: &str) {
        let ids: Vec<u64> = self.slots.keys().copied().collect();
        for id in ids {
            self.fail(id, StreamError::Lost(reason.to_owned()), false);
        }
        self.recent_resets.clear();
    }

    /// Whether any sent data or FIN waits for an acknowledgement.
    pub(crate) fn has_unacked(&self) -> bool {
        self.slots
            .values()
            .any(|s| !s.unacked.is_empty() || s.open_unacked.is_some() || (s.out_fin.is_some() && !s.out_done))
    }

    /// Everything the peer may not have got: called when the relay dropped a frame to it.
    pub(crate) fn resend(&self) -> Vec<PeerMessage> {
        let mut out = Vec::new();
        for (&id, slot) in &self.slots {
            if let Some(kind) = &slot.open_unacked {
                out.push(PeerMessage::Open { stream: id, kind: kind.clone(), window: WINDOW });
            }
            for (offset, bytes) in &slot.unacked {
                out.push(PeerMessage::Data { stream: id, offset: *offset, bytes: ByteBuf(bytes.clone()) });
            }
            if let (Some(fin), false) = (slot.out_fin, slot.out_done) {
                out.push(PeerMessage::Close { stream: id, final_offset: fin, error: None });
            }
            if !slot.in_done {
                out.push(PeerMessage::Credit { stream: id, max_offset: slot.in_granted, received: slot.in_expected });
            }
        }
        for (id, reason) in &self.recent_resets {
            out.push(PeerMessage::Close { stream: *id, final_offset: 0, error: Some(reason.clone()) });
        }
        out
    }

    fn remove_if_done(&mut self, id: u64) {
        if self.slots.get(&id).is_some_and(|s| s.in_done && s.out_done) {
            self.slots.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> (StreamTable, StreamPorts, mpsc::Receiver<StreamCmd>, mpsc::UnboundedReceiver<StreamCmd>) {
        let (data, data_rx) = mpsc::channel(16);
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let me = NodeId::from_bytes([2; 32]);
        (StreamTable::new(me, NodeId::from_bytes([1; 32])), StreamPorts::new(data, ctl), data_rx, ctl_rx)
    }

    fn data(id: u64, offset: u64, bytes: &[u8]) -> (u64, u64, Bytes) {
        (id, offset, Bytes::copy_from_slice(bytes))
    }

    /// A stream the peer (smaller id: odd ids) opened to us.
    fn accepted(t: &mut StreamTable, ports: &StreamPorts) -> Stream {
        let (stream, replies) = t.on_open(1, StreamKind::Sink, WINDOW, ports);
        assert!(matches!(replies.as_slice(), [PeerMessage::Credit { stream: 1, max_offset: WINDOW, received: 0 }]));
        stream.expect("new stream")
    }

    #[tokio::test]
    async fn regression_an_open_overtaken_by_a_later_one_is_still_accepted() {
        // 100 streams opened at once, the relay dropping some Opens: their resends arrive
        // after later Opens, and used to be taken for finished streams and ignored.
        let (mut t, ports, _d, _c) = table();
        assert!(t.on_open(5, StreamKind::Sink, WINDOW, &ports).0.is_some());
        assert!(t.on_open(1, StreamKind::Sink, WINDOW, &ports).0.is_some(), "the resent Open of 1");
        assert!(t.on_open(3, StreamKind::Sink, WINDOW, &ports).0.is_some(), "the resent Open of 3");
        assert!(t.on_open(3, StreamKind::Sink, WINDOW, &ports).0.is_none(), "a duplicate is not a new stream");
        t.slots.remove(&1);
        assert!(t.on_open(1, StreamKind::Sink, WINDOW, &ports).0.is_none(), "a finished stream stays finished");
        assert!(t.on_open(2, StreamKind::Sink, WINDOW, &ports).0.is_none(), "our own parity");
        // A peer jumping far ahead costs bounded memory.
        assert!(t.on_open(u64::MAX, StreamKind::Sink, WINDOW, &ports).0.is_some());
        assert!(t.missing_remote.len() <= MAX_MISSING);
    }

    #[tokio::test]
    async fn in_order_duplicates_and_gaps() {
        let (mut t, ports, _d, _c) = table();
        let mut s = accepted(&mut t, &ports);
        let (id, off, b) = data(1, 0, b"hello ");
        assert!(t.on_data(id, off, b).is_empty());
        // A resend overlapping what arrived: only the new tail is delivered.
        let (id, off, b) = data(1, 3, b"lo world");
        assert!(t.on_data(id, off, b).is_empty());
        // A pure duplicate is acknowledged so the sender stops resending.
        let (id, off, b) = data(1, 0, b"hel");
        assert!(matches!(t.on_data(id, off, b).as_slice(), [PeerMessage::Credit { received: 11, .. }]));
        // A gap is reported at once and nothing past it is delivered.
        let (id, off, b) = data(1, 20, b"later");
        assert!(matches!(t.on_data(id, off, b).as_slice(), [PeerMessage::Credit { received: 11, .. }]));
        // An early FIN waits for the missing bytes; the right one ends the stream (its ack
        // counts the FIN as one byte more).
        assert!(t.on_close(1, 25, None).is_empty());
        assert!(matches!(t.on_close(1, 11, None).as_slice(), [PeerMessage::Credit { received: 12, .. }]));
        let mut got = Vec::new();
        while let Some(chunk) = s.reader.read().await.unwrap() {
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, b"hello world");
    }

    #[tokio::test]
    async fn regression_data_for_a_dropped_reader_does_not_reset_from_the_packet_path() {
        // The reader's own reset is queued behind the stream's answer; a reset sent from here
        // would overtake that answer (a write refused with create_only arrived as "ended").
        let (mut t, ports, _d, _c) = table();
        let s = accepted(&mut t, &ports);
        drop(s.reader);
        let (id, off, b) = data(1, 0, b"late");
        assert!(t.on_data(id, off, b).is_empty());
    }

    #[tokio::test]
    async fn sending_past_the_window_resets_the_stream() {
        let (mut t, ports, _d, _c) = table();
        let mut s = accepted(&mut t, &ports);
        let out = t.on_data(1, WINDOW - 2, Bytes::from(vec![0; 4]));
        assert!(matches!(out.as_slice(), [PeerMessage::Close { error: Some(_), .. }]));
        assert!(matches!(s.reader.read().await, Err(StreamError::Reset(r)) if r.contains("flow-control")));
    }

    #[tokio::test]
    async fn unacknowledged_data_is_resent_until_acknowledged() {
        let (mut t, ports, _d, _c) = table();
        let (_stream, open) = t.open(StreamKind::Sink, &ports);
        let PeerMessage::Open { stream: id, .. } = open else { panic!() };
        assert_eq!(id % 2, 0, "the larger id opens even streams");
        t.local_data(id, 0, Bytes::from_static(b"abc"));
        t.local_data(id, 3, Bytes::from_static(b"def"));
        let resend = t.resend();
        assert!(matches!(resend[0], PeerMessage::Open { .. }), "the Open until the peer acknowledges it");
        assert_eq!(resend.iter().filter(|m| matches!(m, PeerMessage::Data { .. })).count(), 2);
        // The peer has the first chunk; it reports the gap after it twice: one fast resend.
        assert!(t.on_credit(id, WINDOW, 3).is_none(), "progress is not a gap");
        assert!(matches!(t.on_credit(id, WINDOW, 3), Some(PeerMessage::Data { offset: 3, .. })));
        assert!(t.on_credit(id, WINDOW, 3).is_none(), "once per position");
        let resend = t.resend();
        assert!(!resend.iter().any(|m| matches!(m, PeerMessage::Open { .. })));
        assert!(matches!(resend.as_slice(), [PeerMessage::Data { offset: 3, .. }, PeerMessage::Credit { .. }]));
        t.on_credit(id, WINDOW, 6);
        assert!(!t.has_unacked());
    }

    #[tokio::test]
    async fn regression_a_fin_lost_after_its_data_arrived_is_sent_again() {
        // The peer acked every data byte; the FIN behind them was dropped by the relay. An ack
        // of the data used to count as an ack of the FIN, so it was never resent, and the
        // peer's reader waited forever (a forwarded connection whose half-close never came).
        let (mut t, ports, _d, _c) = table();
        let (_stream, open) = t.open(StreamKind::Sink, &ports);
        let PeerMessage::Open { stream: id, .. } = open else { panic!("an Open") };
        t.local_data(id, 0, Bytes::from_static(b"abc"));
        t.local_finish(id, 3);
        t.on_credit(id, WINDOW, 3);
        assert!(t.has_unacked(), "the FIN is not acknowledged yet");
        assert!(t.resend().iter().any(|m| matches!(m, PeerMessage::Close { final_offset: 3, error: None, .. })));
        t.on_credit(id, WINDOW, 4);
        assert!(!t.has_unacked());

        // The receiving side acks a FIN as the byte after the data, and again if it comes
        // back (its first ack lost), even once the stream is gone.
        let mut s = accepted(&mut t, &ports);
        assert!(t.on_data(1, 0, Bytes::from_static(b"xy")).is_empty());
        let acks = t.on_close(1, 2, None);
        assert!(matches!(acks.as_slice(), [PeerMessage::Credit { stream: 1, received: 3, .. }]), "{acks:?}");
        assert_eq!(s.reader.read().await.unwrap().as_deref(), Some(&b"xy"[..]));
        assert_eq!(s.reader.read().await.unwrap(), None);
        t.slots.remove(&1);
        assert!(matches!(t.on_close(1, 2, None).as_slice(), [PeerMessage::Credit { received: 3, .. }]));
        assert!(t.on_close(7, 0, None).is_empty(), "no ack for a stream never opened");
    }
}

//! Sliding replay window over 64-bit transport counters (RFC 6479 style bitmap).
//!
//! Accepts each counter at most once, tolerates reordering up to [`WINDOW`] behind the
//! highest counter seen, and rejects anything older. The direct path (UDP) reorders; the relay
//! path does not, but a hostile relay may replay or reorder, and both end here.

/// How far behind the newest counter a frame may arrive and still be accepted.
pub const WINDOW: u64 = 8192;
const WORD_BITS: u64 = 64;
/// One more word than the window needs, so the word holding the newest counter never
/// overlaps the oldest one still in the window.
const WORDS: usize = (WINDOW / WORD_BITS) as usize + 1;

#[derive(Clone)]
pub struct ReplayWindow {
    /// Highest counter accepted plus one; 0 when nothing has been accepted.
    next: u64,
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self { next: 0, bits: [0; WORDS] }
    }
}

impl ReplayWindow {
    /// Whether `n` would be accepted. Does not record it: call [`Self::accept`] only after the
    /// frame authenticated, so forged counters cannot move the window.
    pub fn check(&self, n: u64) -> bool {
        if n == u64::MAX {
            return false;
        }
        if n >= self.next {
            return true;
        }
        if self.next - 1 - n >= WINDOW {
            return false;
        }
        self.bits[Self::word(n)] & Self::bit(n) == 0
    }

    /// Records `n`; returns false (and records nothing) if it is a replay or too old.
    pub fn accept(&mut self, n: u64) -> bool {
        if !self.check(n) {
            return false;
        }
        if n >= self.next {
            let new_top = n / WORD_BITS;
            let first_clear = if self.next == 0 { 0 } else { (self.next - 1) / WORD_BITS + 1 };
            // Advancing past the whole ring clears it all; bound the loop by the ring size.
            let span = (new_top + 1).saturating_sub(first_clear).min(WORDS as u64);
            for w in (new_top + 1 - span)..=new_top {
                self.bits[(w % WORDS as u64) as usize] = 0;
            }
            self.next = n + 1;
        }
        self.bits[Self::word(n)] |= Self::bit(n);
        true
    }

    fn word(n: u64) -> usize {
        ((n / WORD_BITS) % WORDS as u64) as usize
    }

    fn bit(n: u64) -> u64 {
        1 << (n % WORD_BITS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_then_replays() {
        let mut w = ReplayWindow::default();
        for n in 0..20_000 {
            assert!(w.accept(n), "{n}");
        }
        for n in [0, 19_999, 15_000, 11_808] {
            assert!(!w.accept(n), "{n} replayed");
        }
    }

    #[test]
    fn reordering_within_window_is_accepted_once() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(10_000));
        assert!(w.accept(10_000 - 8191));
        assert!(!w.accept(10_000 - 8191));
        assert!(!w.accept(10_000 - 8192), "just outside the window");
        assert!(w.accept(9_999));
        assert!(w.accept(10_001));
        assert!(!w.accept(10_000));
    }

    #[test]
    fn large_jump_clears_stale_bits() {
        let mut w = ReplayWindow::default();
        for n in 0..200 {
            assert!(w.accept(n));
        }
        assert!(w.accept(1_000_000));
        // Counters whose ring slots were used before the jump are fresh again in range.
        assert!(w.accept(1_000_000 - 64));
        assert!(w.accept(999_999));
        assert!(!w.accept(199));
    }

    #[test]
    fn agrees_with_a_set_model() {
        use std::collections::BTreeSet;
        let mut w = ReplayWindow::default();
        let mut seen = BTreeSet::new();
        let mut top: Option<u64> = None;
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let base = top.unwrap_or(0);
            let n = (base + (x % 300)).saturating_sub(x % 9000);
            let model = !seen.contains(&n) && top.is_none_or(|t| n > t || t - n < WINDOW);
            assert_eq!(w.accept(n), model, "counter {n}, top {top:?}");
            if model {
                seen.insert(n);
                top = Some(top.map_or(n, |t| t.max(n)));
            }
        }
    }
}

//! Finding a runner's markers in one output stream of a command.
//!
//! Before a command the runner writes `N\n` on the stream, and after it `\nN TRAILER\n`, where
//! N is a random nonce fresh for each command and TRAILER is the exit status on stdout (empty
//! on stderr). The bytes between are the command's, exactly. Anything before the start or after
//! the end came from something else, such as a background process an earlier command left
//! writing, and is counted as stray so the runner is not trusted again.

use std::borrow::Cow;

use memchr::memmem;

/// Longest trailer accepted: an exit status is at most a few digits.
const TRAILER_MAX: usize = 32;

pub(crate) struct Marks {
    start: Vec<u8>,
    end: Vec<u8>,
    state: State,
    /// Bytes that may be the beginning of the marker being looked for.
    held: Vec<u8>,
    /// Bytes seen outside the markers.
    pub(crate) stray: u64,
}

enum State {
    Before,
    Body,
    Trailer(Vec<u8>),
    Done(Result<Vec<u8>, ()>),
}

impl Marks {
    pub(crate) fn new(nonce: &str) -> Self {
        Self {
            start: format!("{nonce}\n").into_bytes(),
            end: format!("\n{nonce}").into_bytes(),
            state: State::Before,
            held: Vec::new(),
            stray: 0,
        }
    }

    /// Takes the next bytes of the stream; the command's own are appended to `out`.
    pub(crate) fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let mut data: Cow<[u8]> = if self.held.is_empty() {
            Cow::Borrowed(data)
        } else {
            let mut joined = std::mem::take(&mut self.held);
            joined.extend_from_slice(data);
            Cow::Owned(joined)
        };
        loop {
            match &mut self.state {
                State::Before => match memmem::find(&data, &self.start) {
                    Some(at) => {
                        self.stray += at as u64;
                        self.state = State::Body;
                        data = Cow::Owned(data[at + self.start.len()..].to_vec());
                    }
                    None => {
                        let keep = prefix_at_end(&data, &self.start);
                        self.stray += (data.len() - keep) as u64;
                        self.held = data[data.len() - keep..].to_vec();
                        return;
                    }
                },
                State::Body => match memmem::find(&data, &self.end) {
                    Some(at) => {
                        out.extend_from_slice(&data[..at]);
                        self.state = State::Trailer(Vec::new());
                        data = Cow::Owned(data[at + self.end.len()..].to_vec());
                    }
                    None => {
                        let keep = prefix_at_end(&data, &self.end);
                        out.extend_from_slice(&data[..data.len() - keep]);
                        self.held = data[data.len() - keep..].to_vec();
                        return;
                    }
                },
                State::Trailer(trailer) => match memchr::memchr(b'\n', &data) {
                    Some(at) => {
                        trailer.extend_from_slice(&data[..at]);
                        let trailer = std::mem::take(trailer);
                        self.state = State::Done(if trailer.len() > TRAILER_MAX { Err(()) } else { Ok(trailer) });
                        data = Cow::Owned(data[at + 1..].to_vec());
                    }
                    None => {
                        trailer.extend_from_slice(&data);
                        if trailer.len() > TRAILER_MAX {
                            self.state = State::Done(Err(()));
                        }
                        return;
                    }
                },
                State::Done(_) => {
                    self.stray += data.len() as u64;
                    return;
                }
            }
        }
    }

    /// Whether the start marker has arrived: the runner got as far as starting the command.
    pub(crate) fn started(&self) -> bool {
        !matches!(self.state, State::Before)
    }

    /// Whether the end marker and its line have arrived.
    pub(crate) fn done(&self) -> bool {
        matches!(self.state, State::Done(_))
    }

    /// The text after the end marker, once complete and well formed (` STATUS` on stdout).
    pub(crate) fn trailer(&self) -> Option<&str> {
        match &self.state {
            State::Done(Ok(t)) => std::str::from_utf8(t).ok(),
            _ => None,
        }
    }
}

/// How many bytes at the end of `data` could be the start of `marker` (never all of it).
fn prefix_at_end(data: &[u8], marker: &[u8]) -> usize {
    let longest = (marker.len() - 1).min(data.len());
    (1..=longest).rev().find(|&n| data[data.len() - n..] == marker[..n]).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: &str = "0123456789abcdef0123456789abcdef";

    fn run(chunks: &[&[u8]]) -> (Vec<u8>, Marks) {
        let mut marks = Marks::new(N);
        let mut out = Vec::new();
        for c in chunks {
            marks.feed(c, &mut out);
        }
        (out, marks)
    }

    fn stream(body: &[u8], status: &str) -> Vec<u8> {
        [format!("{N}\n").as_bytes(), body, format!("\n{N} {status}\n").as_bytes()].concat()
    }

    #[test]
    fn the_body_is_exactly_what_the_command_wrote_however_the_stream_is_cut() {
        let bodies: [&[u8]; 5] = [b"", b"no newline", b"line\n", b"\n\n", b"\x00\xff binary \n0123456789abcdef\n"];
        for body in bodies {
            let whole = stream(body, "3");
            // Every split point, and one byte at a time.
            for cut in 0..=whole.len() {
                let (out, marks) = run(&[&whole[..cut], &whole[cut..]]);
                assert_eq!(out, body, "cut at {cut}");
                assert_eq!((marks.trailer(), marks.stray), (Some(" 3"), 0));
            }
            let bytes: Vec<&[u8]> = whole.chunks(1).collect();
            let (out, marks) = run(&bytes);
            assert_eq!((out.as_slice(), marks.trailer()), (body, Some(" 3")));
        }
    }

    #[test]
    fn bytes_outside_the_markers_are_stray_and_never_output() {
        let whole = [b"left over".as_slice(), &stream(b"mine", "0"), b"late"].concat();
        let (out, marks) = run(&[&whole]);
        assert_eq!((out.as_slice(), marks.stray, marks.done()), (b"mine".as_slice(), 13, true));
        // Half a marker is held back, not output, until it is known.
        let (out, marks) = run(&[format!("{N}\nabc\n{}", &N[..10]).as_bytes()]);
        assert_eq!((out.as_slice(), marks.done()), (b"abc".as_slice(), false));
        // A nonce that is not a whole marker is output like any other bytes.
        let (out, _) = run(&[format!("{N}\n{N}\n").as_bytes()]);
        assert_eq!(out, N.as_bytes());
    }

    #[test]
    fn an_endless_trailer_is_malformed() {
        let (_, marks) = run(&[format!("{N}\n\n{N} ").as_bytes(), &[b'9'; 100]]);
        assert!(marks.done() && marks.trailer().is_none());
    }
}

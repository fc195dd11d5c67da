//! Splitting the input on line boundaries, and shuffling map output to reducers by key.
//! Both are pure and deterministic: the same input gives the same partitions and the same
//! reducer inputs on every machine.

use std::ops::Range;

/// One partition of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    pub bytes: Range<usize>,
    /// 1-based number of the partition's first line.
    pub first_line: u64,
    pub lines: u64,
}

/// At most `n` partitions of nearly equal size, each ending after a newline (or at the end);
/// none empty, but at least one (an empty input is one empty partition).
pub fn split(input: &[u8], n: usize) -> Vec<Slice> {
    // More partitions than bytes could only be empty ones.
    let n = n.clamp(1, input.len().max(1));
    let mut cuts = vec![0usize];
    for i in 1..n {
        let nominal = (input.len() as u128 * i as u128 / n as u128) as usize;
        let from = nominal.max(*cuts.last().expect("cuts start with 0"));
        let cut = match input[from..].iter().position(|&b| b == b'\n') {
            Some(p) => from + p + 1,
            None => input.len(),
        };
        if cut > *cuts.last().expect("non-empty") && cut < input.len() {
            cuts.push(cut);
        }
    }
    cuts.push(input.len());
    let mut first_line = 1;
    let mut out = Vec::new();
    for w in cuts.windows(2) {
        if w[0] == w[1] && !out.is_empty() {
            continue;
        }
        let lines = count_lines(&input[w[0]..w[1]]);
        out.push(Slice { bytes: w[0]..w[1], first_line, lines });
        first_line += lines;
    }
    out
}

/// Lines in a piece of text: newlines, plus one for a last line without its newline.
fn count_lines(text: &[u8]) -> u64 {
    let newlines = text.iter().filter(|&&b| b == b'\n').count() as u64;
    newlines + u64::from(text.last().is_some_and(|&b| b != b'\n'))
}

/// Which of `reducers` a key goes to: FNV-1a, fixed so every run agrees.
pub fn reducer_of(key: &[u8], reducers: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % reducers.max(1) as u64) as usize
}

/// Map outputs (in partition order) as `reducers` inputs: each `key<TAB>value` line goes to
/// its key's reducer (a line without a tab is all key), keeping partition order within each.
pub fn shuffle<'a>(outputs: impl Iterator<Item = &'a [u8]>, reducers: usize) -> Vec<Vec<u8>> {
    let mut inputs = vec![Vec::new(); reducers.max(1)];
    for output in outputs {
        for line in output.split_inclusive(|&b| b == b'\n') {
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            let key = body.split(|&b| b == b'\t').next().unwrap_or(body);
            let input = &mut inputs[reducer_of(key, reducers)];
            input.extend_from_slice(body);
            input.push(b'\n');
        }
    }
    inputs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_line_boundaries_without_losing_a_byte() {
        let text: Vec<u8> = (0..1000).flat_map(|i| format!("line {i} {}\n", "x".repeat(i % 17)).into_bytes()).collect();
        for n in [1, 2, 3, 7, 64, 5000] {
            let parts = split(&text, n);
            assert!(parts.len() <= n && !parts.is_empty());
            let mut joined = Vec::new();
            let mut next_line = 1;
            for p in &parts {
                assert!(p.bytes.start == joined.len(), "contiguous");
                assert!(text[..p.bytes.end].ends_with(b"\n"), "ends on a line boundary");
                assert_eq!(p.first_line, next_line);
                next_line += p.lines;
                joined.extend_from_slice(&text[p.bytes.clone()]);
            }
            assert_eq!(joined, text, "n = {n}");
            assert_eq!(next_line, 1001);
        }
        assert_eq!(split(b"", 4), vec![Slice { bytes: 0..0, first_line: 1, lines: 0 }]);
        let no_newline = split(b"one line without end", 3);
        assert_eq!(no_newline, vec![Slice { bytes: 0..20, first_line: 1, lines: 1 }]);
        assert_eq!(split(b"a\nb", 2).iter().map(|s| s.lines).collect::<Vec<_>>(), vec![1, 1]);
    }

    #[test]
    fn shuffle_sends_each_key_to_one_reducer_in_order() {
        let outputs: Vec<&[u8]> = vec![b"apple\t1\npear\t2\n", b"apple\t3\nplum", b""];
        let inputs = shuffle(outputs.into_iter(), 4);
        let all: Vec<&[u8]> = inputs.iter().flat_map(|i| i.split_inclusive(|&b| b == b'\n')).collect();
        assert_eq!(all.len(), 4);
        let apple = &inputs[reducer_of(b"apple", 4)];
        let apples: Vec<&[u8]> = apple.split_inclusive(|&b| b == b'\n').filter(|l| l.starts_with(b"apple")).collect();
        assert_eq!(apples, vec![b"apple\t1\n".as_slice(), b"apple\t3\n"]);
        assert!(inputs[reducer_of(b"plum", 4)].ends_with(b"plum\n"));
        assert_eq!(reducer_of(b"apple", 4), reducer_of(b"apple", 4));
        assert_eq!(shuffle([b"x\t1\n".as_slice()].into_iter(), 1), vec![b"x\t1\n".to_vec()]);
    }
}

//! Host-list notation: many names written as one, `web-[001-003,007]`.
//!
//! [`compact`] writes a set of names that way, so a group of 10,000 similar hosts fits on a
//! line; [`expand`] reads it back, so a member list from a fleet answer can be pasted as a
//! target. Only the last run of digits in a name is folded; zero padding is kept.

use std::collections::BTreeMap;

/// Most names one bracket expression may expand to.
pub const EXPAND_MAX: usize = 100_000;

/// A name split around its last run of digits.
struct Numbered<'a> {
    prefix: &'a str,
    digits: &'a str,
    suffix: &'a str,
}

fn split_number(name: &str) -> Option<Numbered<'_>> {
    let bytes = name.as_bytes();
    let end = bytes.iter().rposition(u8::is_ascii_digit)? + 1;
    let start = bytes[..end].iter().rposition(|b| !b.is_ascii_digit()).map_or(0, |i| i + 1);
    // Numbers too long for a u64 are left as plain names.
    (end - start <= 18).then(|| Numbered { prefix: &name[..start], digits: &name[start..end], suffix: &name[end..] })
}

/// Writes `names` compactly: `db, web-[001-250,300]`. Names are sorted; duplicates kept once.
pub fn compact<S: AsRef<str>>(names: &[S]) -> String {
    let mut series: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    let mut plain: Vec<&str> = Vec::new();
    for name in names {
        let name = name.as_ref();
        match split_number(name) {
            Some(n) => series.entry((n.prefix, n.suffix)).or_default().push(n.digits),
            None => plain.push(name),
        }
    }
    // (prefix, suffix, width) -> numbers. Width 0 means "not zero-padded"; a number as long
    // as a padded one of its series (web-100 beside web-007) is part of the padded run.
    let mut runs: BTreeMap<(&str, &str, usize), Vec<u64>> = BTreeMap::new();
    for ((prefix, suffix), numbers) in series {
        let padded: Vec<usize> =
            numbers.iter().filter(|d| d.len() > 1 && d.starts_with('0')).map(|d| d.len()).collect();
        for digits in numbers {
            let width = if padded.contains(&digits.len()) { digits.len() } else { 0 };
            let value = digits.parse().expect("a run of at most 18 digits");
            runs.entry((prefix, suffix, width)).or_default().push(value);
        }
    }
    let mut parts: Vec<String> = plain.into_iter().map(str::to_owned).collect();
    for ((prefix, suffix, width), mut numbers) in runs {
        numbers.sort_unstable();
        numbers.dedup();
        let pad = |n: u64| format!("{n:0width$}");
        if numbers.len() == 1 {
            parts.push(format!("{prefix}{}{suffix}", pad(numbers[0])));
            continue;
        }
        let mut ranges: Vec<String> = Vec::new();
        let mut i = 0;
        while i < numbers.len() {
            let mut j = i;
            while j + 1 < numbers.len() && numbers[j + 1] == numbers[j] + 1 {
                j += 1;
            }
            ranges.push(if i == j { pad(numbers[i]) } else { format!("{}-{}", pad(numbers[i]), pad(numbers[j])) });
            i = j + 1;
        }
        parts.push(format!("{prefix}[{}]{suffix}", ranges.join(",")));
    }
    parts.sort();
    parts.dedup();
    parts.join(", ")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad host range {text:?}: {why}")]
pub struct RangeError {
    pub text: String,
    pub why: String,
}

/// Expands one `prefix[1-3,7]suffix` term into names; a term without brackets is itself.
pub fn expand(term: &str) -> Result<Vec<String>, RangeError> {
    let bad = |why: &str| RangeError { text: term.to_owned(), why: why.to_owned() };
    let Some(open) = term.find('[') else {
        return if term.contains(']') { Err(bad("']' without '['")) } else { Ok(vec![term.to_owned()]) };
    };
    let close = term[open..].find(']').map(|i| open + i).ok_or_else(|| bad("'[' without ']'"))?;
    let (prefix, body, suffix) = (&term[..open], &term[open + 1..close], &term[close + 1..]);
    if suffix.contains('[') || suffix.contains(']') {
        return Err(bad("only one [range] per name"));
    }
    let mut out = Vec::new();
    for item in body.split(',') {
        let (lo, hi) = item.split_once('-').unwrap_or((item, item));
        let digits = |s: &str| !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(lo) || !digits(hi) {
            return Err(bad(&format!("{item:?} is not a number or a range like 001-250")));
        }
        let (a, b): (u64, u64) = (lo.parse().expect("digits"), hi.parse().expect("digits"));
        if a > b {
            return Err(bad(&format!("{item:?} runs backwards")));
        }
        if out.len() as u64 + (b - a + 1) > EXPAND_MAX as u64 {
            return Err(bad(&format!("more than {EXPAND_MAX} names")));
        }
        let width = if lo.len() > 1 && lo.starts_with('0') { lo.len() } else { 0 };
        out.extend((a..=b).map(|n| format!("{prefix}{n:0width$}{suffix}")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacts_runs_keeping_padding() {
        let names: Vec<String> = (1..=250).map(|i| format!("web-{i:03}")).chain(["web-300".into()]).collect();
        assert_eq!(compact(&names), "web-[001-250,300]");
        assert_eq!(compact(&["db", "web-1", "web-2", "web-3", "web-7", "web-9", "web-10"]), "db, web-[1-3,7,9-10]");
        assert_eq!(compact(&["a1b", "a2b", "c"]), "a[1-2]b, c");
        assert_eq!(compact(&["x", "x", "n5"]), "n5, x");
        assert_eq!(compact::<&str>(&[]), "");
    }

    #[test]
    fn expand_reads_what_compact_writes() {
        let names: Vec<String> = [1, 2, 3, 7, 10, 11].iter().map(|i| format!("web-{i:03}.lan")).collect();
        let text = compact(&names);
        assert_eq!(text, "web-[001-003,007,010-011].lan");
        assert_eq!(expand(&text).unwrap(), names);
        assert_eq!(expand("db").unwrap(), vec!["db"]);
        assert_eq!(expand("n[8-10]").unwrap(), vec!["n8", "n9", "n10"]);
    }

    #[test]
    fn bad_ranges_say_what_is_wrong() {
        for (term, needle) in [
            ("web-[3-1]", "backwards"),
            ("web-[a-b]", "not a number"),
            ("web-[1-2", "without ']'"),
            ("web-1]", "without '['"),
            ("w[1-2]x[1-2]", "only one"),
            ("w[0-999999]", "more than"),
            ("w[]", "not a number"),
        ] {
            let err = expand(term).unwrap_err().to_string();
            assert!(err.contains(needle), "{term}: {err}");
        }
    }
}

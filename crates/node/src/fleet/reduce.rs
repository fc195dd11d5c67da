//! Reduction: many targets' results as a few groups of identical outcomes, largest first,
//! so the answer from ten thousand machines fits on a screen or in an AI's context.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::fleet::names;
use crate::fleet::{Status, TargetResult};

/// What makes two results "the same".
#[derive(Debug, Clone)]
pub enum GroupBy {
    /// Same status, exit code, output and error.
    Output,
    /// Same status and exit code; output ignored.
    ExitCode,
    /// Like `Output`, after replacing every match of the pattern with `*` (timestamps,
    /// PIDs, host names that differ where nothing else does).
    Normalized(regex::Regex),
}

impl GroupBy {
    /// `output`, `exit`, or a regex for `Normalized`.
    pub fn parse(by: &str, normalize: Option<&str>) -> Result<Self, String> {
        match (by, normalize) {
            (_, Some(pattern)) => regex::Regex::new(pattern)
                .map(Self::Normalized)
                .map_err(|e| format!("bad normalizing regex {pattern:?}: {e}")),
            ("output", None) => Ok(Self::Output),
            ("exit", None) => Ok(Self::ExitCode),
            (other, None) => Err(format!("cannot group by {other:?}: use output or exit (or a normalizing regex)")),
        }
    }
}

/// How much of each group the reduction shows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of sample stdout and stderr per group.
    pub sample_bytes: usize,
    /// Groups shown; the rest are counted.
    pub groups: usize,
    /// Characters of each group's member list.
    pub members_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { sample_bytes: 512, groups: 20, members_chars: 400 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub count: usize,
    pub status: Status,
    pub exit_code: Option<i32>,
    /// One member's output (the first by name), cut at the sample size.
    pub stdout: String,
    pub stderr: String,
    pub error: Option<String>,
    /// `web-[001-250], db-1`, cut at the member list size.
    pub members: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reduction {
    pub total: usize,
    /// Targets per status; statuses with none left out.
    pub by_status: BTreeMap<Status, usize>,
    pub groups: Vec<Group>,
    /// Groups beyond the shown ones, and how many targets they hold.
    pub groups_omitted: usize,
    pub targets_omitted: usize,
}

impl Reduction {
    /// True when every target succeeded.
    pub fn all_ok(&self) -> bool {
        self.by_status.keys().all(|s| *s == Status::Ok)
    }
}

/// Groups `results`; largest group first, ties by member list.
pub fn reduce(results: &[TargetResult], by: &GroupBy, limits: Limits) -> Reduction {
    let mut groups: HashMap<Key, Vec<&TargetResult>> = HashMap::new();
    for r in results {
        groups.entry(Key::of(r, by)).or_default().push(r);
    }
    let mut groups: Vec<Vec<&TargetResult>> = groups.into_values().collect();
    for members in &mut groups {
        members.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    }
    groups.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a[0].name.cmp(&b[0].name)));
    let shown = groups.len().min(limits.groups);
    let mut by_status = BTreeMap::new();
    for r in results {
        *by_status.entry(r.status).or_insert(0) += 1;
    }
    Reduction {
        total: results.len(),
        by_status,
        groups_omitted: groups.len() - shown,
        targets_omitted: groups[shown..].iter().map(Vec::len).sum(),
        groups: groups[..shown].iter().map(|members| group(members, limits)).collect(),
    }
}

fn group(members: &[&TargetResult], limits: Limits) -> Group {
    let first = members[0];
    let names: Vec<&str> = members.iter().map(|r| r.name.as_str()).collect();
    Group {
        count: members.len(),
        status: first.status,
        exit_code: first.exit_code,
        stdout: cut(&first.stdout, limits.sample_bytes),
        stderr: cut(&first.stderr, limits.sample_bytes),
        error: first.error.as_deref().map(|e| cut(e, limits.sample_bytes)),
        members: cut(&names::compact(&names), limits.members_chars),
    }
}

/// `text` cut at `max` bytes on a character boundary, with a marker saying how much went.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &text[..end], text.len() - end)
}

/// What two results must share to be grouped. The texts are held as one SHA-256 over them
/// (each length-prefixed), so grouping 10,000 outputs does not copy them all.
#[derive(PartialEq, Eq, Hash)]
struct Key {
    status: Status,
    exit_code: Option<i32>,
    signal: Option<i32>,
    text: Option<[u8; 32]>,
}

impl Key {
    fn of(r: &TargetResult, by: &GroupBy) -> Self {
        let error = r.error.as_deref().unwrap_or_default();
        let digest = r.sha256.as_deref().unwrap_or_default();
        let text = match by {
            GroupBy::ExitCode => None,
            GroupBy::Output => Some(fingerprint([r.stdout.as_str(), &r.stderr, error, digest])),
            GroupBy::Normalized(re) => {
                let norm = |s: &str| re.replace_all(s, "*").into_owned();
                Some(fingerprint([&norm(&r.stdout), &norm(&r.stderr), &norm(error), digest]))
            }
        };
        Self { status: r.status, exit_code: r.exit_code, signal: r.signal, text }
    }
}

fn fingerprint(parts: [&str; 4]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, status: Status, code: i32, stdout: &str) -> TargetResult {
        TargetResult {
            exit_code: Some(code),
            stdout: stdout.into(),
            stdout_bytes: stdout.len() as u64,
            ..TargetResult::empty(name, &format!("id-{name}"), status)
        }
    }

    #[test]
    fn groups_identical_results_largest_first() {
        let mut results: Vec<TargetResult> =
            (1..=9500).map(|i| result(&format!("web-{i:05}"), Status::Ok, 0, "Ubuntu 24.04\n")).collect();
        results.extend((9501..=10000).map(|i| result(&format!("web-{i:05}"), Status::Ok, 0, "RHEL 9\n")));
        results.push(result("db", Status::Failed, 2, "boom\n"));
        let red = reduce(&results, &GroupBy::Output, Limits::default());
        assert_eq!(red.total, 10_001);
        assert_eq!(red.by_status, BTreeMap::from([(Status::Ok, 10_000), (Status::Failed, 1)]));
        assert_eq!(red.groups.len(), 3);
        assert_eq!((red.groups[0].count, red.groups[0].members.as_str()), (9500, "web-[00001-09500]"));
        assert_eq!(red.groups[0].stdout, "Ubuntu 24.04\n");
        assert_eq!((red.groups[1].count, red.groups[1].members.as_str()), (500, "web-[09501-10000]"));
        assert_eq!((red.groups[2].count, red.groups[2].exit_code), (1, Some(2)));
        assert!(!red.all_ok());
        let json = serde_json::to_string(&red).unwrap();
        assert!(json.len() < 1024, "10,001 targets reduce to {} bytes", json.len());
    }

    #[test]
    fn exit_code_and_normalized_grouping() {
        let results = vec![
            result("a", Status::Ok, 0, "up 5 days, pid 100"),
            result("b", Status::Ok, 0, "up 7 days, pid 200"),
            result("c", Status::Failed, 1, "x"),
            result("d", Status::Failed, 1, "y"),
        ];
        assert_eq!(reduce(&results, &GroupBy::Output, Limits::default()).groups.len(), 4);
        let by_exit = reduce(&results, &GroupBy::ExitCode, Limits::default());
        assert_eq!(by_exit.groups.iter().map(|g| g.count).collect::<Vec<_>>(), vec![2, 2]);
        let norm = GroupBy::parse("output", Some(r"\d+")).unwrap();
        let red = reduce(&results, &norm, Limits::default());
        assert_eq!(red.groups.len(), 3);
        assert_eq!((red.groups[0].count, red.groups[0].members.as_str()), (2, "a, b"));
        assert!(GroupBy::parse("output", Some("(")).unwrap_err().contains("bad normalizing regex"));
        assert!(GroupBy::parse("color", None).unwrap_err().contains("cannot group by"));
    }

    #[test]
    fn limits_bound_the_answer() {
        let results: Vec<TargetResult> =
            (0..300).map(|i| result(&format!("h{i:x}z{}", i * 7), Status::Ok, 0, &"x".repeat(5000 + i))).collect();
        let red = reduce(&results, &GroupBy::Output, Limits::default());
        assert_eq!(red.groups.len(), 20);
        assert_eq!((red.groups_omitted, red.targets_omitted), (280, 280));
        assert!(red.groups[0].stdout.ends_with("more bytes)"));
        assert!(serde_json::to_string(&red).unwrap().len() < 16 * 1024);
        assert_eq!(cut("héllo", 2), "h… (5 more bytes)");
    }
}

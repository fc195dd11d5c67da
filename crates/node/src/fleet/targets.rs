//! Fleet targets: which peers an expression like `tag:web,os:linux,db-[01-03]` names.
//!
//! ```text
//! TARGET := TERM ("," TERM)*      union, each peer once, sorted by name
//! TERM   := all | local | tag:T | os:FAMILY | NAME | NAME-[RANGE] | NODE_ID_PREFIX
//!         | ssh:all | ssh:tag:T | ssh:HOST | ssh:HOST-[RANGE]
//! ```
//! `all`, `tag:` and `os:` cover the peers, not this node (`local` or its own name add it).
//! `ssh:` terms select SSH hosts from the inventories peers (and this node) announce; each
//! is reached through the node that announced it.
//! Every term must select someone: a typo never silently shrinks a fleet. An unknown name
//! is answered with the close matches.

use serde::{Deserialize, Serialize};
use tunnel_proto::message::OsInfo;
use tunnel_proto::NodeId;

use crate::fleet::names;

/// One peer (or this node) a target expression may select.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: NodeId,
    pub name: String,
    pub tags: Vec<String>,
    /// `None`: the peer has not said who it is yet (only `all` and its id select it).
    pub os: Option<OsInfo>,
    pub is_self: bool,
    /// The SSH hosts it reaches (`ssh:` terms select these).
    pub ssh_hosts: std::sync::Arc<Vec<crate::ssh::SshHostInfo>>,
}

/// A selected peer, or an SSH host and the peer that reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The peer's node id (for an SSH host: the jump peer's).
    pub id: String,
    /// The peer's name, or `ssh:HOST`.
    pub name: String,
    /// The SSH host, when the target is one.
    pub ssh: Option<String>,
}

impl Target {
    /// Where operations on this target run; `None` if `id` is not a node id.
    pub fn dest(&self) -> Option<crate::Dest> {
        Some(crate::Dest { peer: self.id.parse().ok()?, ssh: self.ssh.clone() })
    }
}

/// The prefix of SSH host targets.
pub const SSH_PREFIX: &str = "ssh:";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    #[error("empty target: give all, tag:T, os:FAMILY, names or node id prefixes, joined by commas")]
    Empty,
    #[error(transparent)]
    Range(#[from] names::RangeError),
    #[error("{term:?} selects no peers ({hint})")]
    NoneSelected { term: String, hint: String },
    #[error("no peer named {name:?}{}", close_text(.close))]
    Unknown { name: String, close: Vec<String> },
    #[error("{term:?} matches several peers by id prefix: {candidates}; use more of the node id")]
    Ambiguous { term: String, candidates: String },
    #[error("no peer announces an SSH host named {name:?}{}", close_text(.close))]
    UnknownSsh { name: String, close: Vec<String> },
    #[error("SSH host {name:?} is announced by several peers: {peers}; give one peer's inventory the name")]
    AmbiguousSsh { name: String, peers: String },
    #[error("{term:?}: {why}")]
    Bad { term: String, why: String },
}

fn close_text(close: &[String]) -> String {
    if close.is_empty() {
        String::new()
    } else {
        format!("; close matches: {}", close.join(", "))
    }
}

/// Most close matches an unknown name is answered with.
const CLOSE_MAX: usize = 5;

/// The peers `expr` names among `candidates`, each once, sorted by name then id.
pub fn select(expr: &str, candidates: &[Candidate]) -> Result<Vec<Target>, TargetError> {
    let terms = split_terms(expr);
    if terms.iter().all(|t| t.is_empty()) {
        return Err(TargetError::Empty);
    }
    let mut chosen: Vec<Target> = Vec::new();
    for term in terms {
        if term.is_empty() {
            return Err(TargetError::Bad { term: expr.to_owned(), why: "an empty term between commas".into() });
        }
        if let Some(rest) = term.strip_prefix(SSH_PREFIX) {
            chosen.extend(crate::ssh::targets::select(term, rest, candidates)?);
            continue;
        }
        let found = select_term(term, candidates)?;
        chosen.extend(found.into_iter().map(|c| Target { id: c.id.to_string(), name: c.name.clone(), ssh: None }));
    }
    chosen.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    chosen.dedup_by(|a, b| a.id == b.id && a.ssh == b.ssh);
    Ok(chosen)
}

/// `PEER:PATH` into its parts; `None` for a local path (no peer before the colon, or a
/// slash in it).
pub fn split_remote(arg: &str) -> Option<(&str, &str)> {
    let (peer, path) = split_remote_bytes(arg.as_bytes())?;
    Some((peer, std::str::from_utf8(path).expect("split at an ASCII colon")))
}

/// [`split_remote`] for an argument whose path may not be UTF-8 (the peer part must be).
pub fn split_remote_bytes(arg: &[u8]) -> Option<(&str, &[u8])> {
    // `ssh:HOST:PATH`: the target is `ssh:HOST`.
    let skip = if arg.starts_with(SSH_PREFIX.as_bytes()) { SSH_PREFIX.len() } else { 0 };
    let colon = skip + arg[skip..].iter().position(|&b| b == b':')?;
    let peer = std::str::from_utf8(&arg[..colon]).ok()?;
    (peer.len() > skip && !peer.contains('/')).then_some((peer, &arg[colon + 1..]))
}

/// Splits on commas outside `[...]`, so `web-[1-3,7],db` is two terms.
pub(crate) fn split_terms(expr: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in expr.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(expr[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(expr[start..].trim());
    terms
}

fn select_term<'a>(term: &str, candidates: &'a [Candidate]) -> Result<Vec<&'a Candidate>, TargetError> {
    let peers = || candidates.iter().filter(|c| !c.is_self);
    let none = |hint: String| TargetError::NoneSelected { term: term.to_owned(), hint };
    let found: Vec<&Candidate> = if term == "all" {
        let all: Vec<_> = peers().collect();
        if all.is_empty() {
            return Err(none("no peers are present: do all nodes use the same relay, room name and token?".into()));
        }
        all
    } else if term == crate::LOCAL_TARGET {
        candidates.iter().filter(|c| c.is_self).collect()
    } else if let Some(tag) = term.strip_prefix("tag:") {
        let found: Vec<_> = peers().filter(|c| c.tags.iter().any(|t| t == tag)).collect();
        if found.is_empty() {
            return Err(none(present("tags", peers().flat_map(|c| c.tags.iter().cloned()))));
        }
        found
    } else if let Some(family) = term.strip_prefix("os:") {
        let family = family.to_ascii_lowercase();
        let found: Vec<_> = peers().filter(|c| c.os.as_ref().is_some_and(|os| os_matches(os, &family))).collect();
        if found.is_empty() {
            let seen = peers().filter_map(|c| c.os.as_ref()).flat_map(|os| [os.family.clone(), distro_word(os)]);
            return Err(none(present("systems", seen.filter(|s| !s.is_empty()))));
        }
        found
    } else if term.contains('[') || term.contains(']') {
        let mut found = Vec::new();
        for name in names::expand(term)? {
            found.extend(by_name(&name, candidates)?);
        }
        found
    } else {
        by_name(term, candidates)?
    };
    Ok(found)
}

/// Peers with this exact name, else a unique node id prefix (at least 4 characters).
fn by_name<'a>(name: &str, candidates: &'a [Candidate]) -> Result<Vec<&'a Candidate>, TargetError> {
    let named: Vec<_> = candidates.iter().filter(|c| c.name == name).collect();
    if !named.is_empty() {
        return Ok(named);
    }
    let lower = name.to_ascii_lowercase();
    let by_id: Vec<_> = if name.len() >= 4 {
        candidates.iter().filter(|c| c.id.to_string().starts_with(&lower)).collect()
    } else {
        vec![]
    };
    match by_id.len() {
        1 => Ok(by_id),
        0 => Err(TargetError::Unknown { name: name.to_owned(), close: close_matches(name, candidates) }),
        _ => Err(TargetError::Ambiguous {
            term: name.to_owned(),
            candidates: by_id.iter().map(|c| format!("{} ({})", c.name, c.id.short())).collect::<Vec<_>>().join(", "),
        }),
    }
}

fn os_matches(os: &OsInfo, family: &str) -> bool {
    os.family.eq_ignore_ascii_case(family) || distro_word(os) == family
}

/// `Ubuntu 24.04.1 LTS` -> `ubuntu`, so `os:ubuntu` works beside `os:linux`.
fn distro_word(os: &OsInfo) -> String {
    os.distro.split_whitespace().next().unwrap_or("").to_ascii_lowercase()
}

pub(crate) fn present(what: &str, items: impl Iterator<Item = String>) -> String {
    let mut items: Vec<String> = items.collect();
    items.sort();
    items.dedup();
    if items.is_empty() {
        format!("no {what} are announced by the peers present")
    } else {
        format!("{what} present: {}", items.join(", "))
    }
}

/// Peer names close to `name`.
fn close_matches(name: &str, candidates: &[Candidate]) -> Vec<String> {
    close_names(name, candidates.iter().map(|c| c.name.as_str()))
}

/// Names within a small edit distance of `name`, or sharing a long prefix with it; closest first.
pub(crate) fn close_names<'a>(name: &str, names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let limit = (name.chars().count() / 3).max(2);
    let mut scored: Vec<(usize, &str)> = names
        .filter(|n| !n.is_empty())
        .filter_map(|n| {
            let d = edit_distance(name, n);
            let related = d <= limit || (name.len() >= 3 && (n.starts_with(name) || name.starts_with(n)));
            related.then_some((d, n))
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(CLOSE_MAX).map(|(_, n)| n.to_owned()).collect()
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diag + usize::from(ca != *cb));
            diag = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(n: u8, name: &str, tags: &[&str], family: &str, is_self: bool) -> Candidate {
        Candidate {
            id: NodeId::from_bytes([n; 32]),
            name: name.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            os: Some(OsInfo { family: family.into(), distro: "Ubuntu 24.04 LTS".into(), ..Default::default() }),
            is_self,
            ssh_hosts: Default::default(),
        }
    }

    fn ssh(hosts: &[(&str, &[&str])]) -> std::sync::Arc<Vec<crate::ssh::SshHostInfo>> {
        let list = hosts.iter().map(|(n, t)| crate::ssh::SshHostInfo {
            name: n.to_string(),
            tags: t.iter().map(|t| t.to_string()).collect(),
        });
        std::sync::Arc::new(list.collect())
    }

    #[test]
    fn ssh_terms_select_hosts_through_their_jump_peer() {
        let mut fleet = fleet();
        fleet[1].ssh_hosts = ssh(&[("lan-01", &["lan", "web"]), ("lan-02", &["lan"]), ("shared", &[])]);
        fleet[3].ssh_hosts = ssh(&[("dc-1", &["dc"]), ("shared", &[])]);
        fleet[0].ssh_hosts = ssh(&[("mine", &["lan"])]);
        let pick_in = |fleet: &[Candidate], e: &str| {
            select(e, fleet).map(|ts| ts.into_iter().map(|t| (t.name, t.ssh, t.id)).collect::<Vec<_>>())
        };
        let pick = |e: &str| pick_in(&fleet, e);
        let web01 = fleet[1].id.to_string();
        assert_eq!(pick("ssh:lan-01").unwrap(), [("ssh:lan-01".into(), Some("lan-01".into()), web01.clone())]);
        let names = |e: &str| pick(e).unwrap().into_iter().map(|t| t.0).collect::<Vec<_>>();
        assert_eq!(names("ssh:tag:lan"), ["ssh:lan-01", "ssh:lan-02", "ssh:mine"]);
        assert_eq!(names("ssh:lan-[01-02],web-02,ssh:dc-1"), ["ssh:dc-1", "ssh:lan-01", "ssh:lan-02", "web-02"]);
        assert_eq!(names("ssh:all").len(), 6);
        // A name two peers announce is ambiguous, unless this node is one of them.
        let err = pick("ssh:shared").unwrap_err().to_string();
        assert!(err.contains("several peers: web-01, db-01"), "{err}");
        let mut mine = fleet.clone();
        mine[0].ssh_hosts = ssh(&[("shared", &[])]);
        assert_eq!(pick_in(&mine, "ssh:shared").unwrap()[0].2, mine[0].id.to_string());
        let err = pick("ssh:lan-1").unwrap_err().to_string();
        assert!(err.contains("close matches: lan-01, lan-02"), "{err}");
        let err = pick("ssh:tag:gpu").unwrap_err().to_string();
        assert!(err.contains("SSH host tags present: dc, lan, web"), "{err}");
        assert!(pick("ssh:").unwrap_err().to_string().contains("ssh:HOST"));
    }

    fn fleet() -> Vec<Candidate> {
        vec![
            cand(1, "me", &["ops"], "linux", true),
            cand(2, "web-01", &["web", "prod"], "linux", false),
            cand(3, "web-02", &["web"], "linux", false),
            cand(4, "db-01", &["db", "prod"], "macos", false),
            Candidate {
                os: None,
                name: NodeId::from_bytes([5; 32]).short(),
                tags: vec![],
                ..cand(5, "", &[], "", false)
            },
        ]
    }

    fn names_of(expr: &str) -> Vec<String> {
        select(expr, &fleet()).unwrap().into_iter().map(|t| t.name).collect()
    }

    #[test]
    fn terms_select_exactly() {
        let unknown = NodeId::from_bytes([5; 32]).short();
        assert_eq!(names_of("all"), vec![unknown.as_str(), "db-01", "web-01", "web-02"]);
        assert_eq!(names_of("tag:web"), vec!["web-01", "web-02"]);
        assert_eq!(names_of("tag:prod"), vec!["db-01", "web-01"]);
        assert_eq!(names_of("os:macos"), vec!["db-01"]);
        assert_eq!(names_of("os:ubuntu"), vec!["db-01", "web-01", "web-02"]);
        assert_eq!(names_of("local"), vec!["me"]);
        assert_eq!(names_of("me,web-01"), vec!["me", "web-01"]);
        assert_eq!(names_of("web-[01-02], tag:db,web-01"), vec!["db-01", "web-01", "web-02"]);
        let prefix = &NodeId::from_bytes([4; 32]).to_string()[..6];
        assert_eq!(names_of(prefix), vec!["db-01"]);
    }

    #[test]
    fn mistakes_are_errors_that_help() {
        let err = |e: &str| select(e, &fleet()).unwrap_err().to_string();
        assert!(err("web-1").contains("close matches: web-01, web-02"), "{}", err("web-1"));
        assert!(err("tag:gpu").contains("tags present: db, prod, web"), "{}", err("tag:gpu"));
        assert!(err("os:windows").contains("systems present: linux, macos, ubuntu"), "{}", err("os:windows"));
        assert!(err("").contains("empty target"));
        assert!(err("web-01,,db-01").contains("empty term"));
        assert!(err("web-[01-03]").contains("no peer named \"web-03\""));
        assert!(err("ssh:host1").contains("no peer announces an SSH host named \"host1\""));
        assert!(select("all", &fleet()[..1]).unwrap_err().to_string().contains("no peers are present"));
    }

    #[test]
    fn remote_paths_split_at_the_right_colon() {
        assert_eq!(split_remote("web-1:/etc/hosts"), Some(("web-1", "/etc/hosts")));
        assert_eq!(split_remote("ssh:web-1:/etc/os-release"), Some(("ssh:web-1", "/etc/os-release")));
        assert_eq!(split_remote("./a:b"), None);
        assert_eq!(split_remote(":x"), None);
        assert_eq!(split_remote("ssh::x"), None);
        assert_eq!(split_remote("plain"), None);
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(edit_distance("web", "web"), 0);
    }
}

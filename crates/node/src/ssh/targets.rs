//! `ssh:` target terms: `ssh:all`, `ssh:tag:T`, `ssh:HOST` and `ssh:HOST-[RANGE]`, over the
//! SSH hosts each candidate announces.

use crate::fleet::targets::{close_names, present, Candidate, Target, TargetError, SSH_PREFIX};

/// The hosts `term` (whose text after `ssh:` is `rest`) selects, each with its jump peer.
pub(crate) fn select(term: &str, rest: &str, candidates: &[Candidate]) -> Result<Vec<Target>, TargetError> {
    let hosts = || candidates.iter().flat_map(|c| c.ssh_hosts.iter().map(move |h| (c, h)));
    let target = |c: &Candidate, name: &str| Target {
        id: c.id.to_string(),
        name: format!("{SSH_PREFIX}{name}"),
        ssh: Some(name.to_owned()),
    };
    let none = |hint: String| TargetError::NoneSelected { term: term.to_owned(), hint };
    if rest == "all" {
        let all: Vec<Target> = hosts().map(|(c, h)| target(c, &h.name)).collect();
        if all.is_empty() {
            return Err(none("no peer announces SSH hosts".into()));
        }
        return Ok(all);
    }
    if let Some(tag) = rest.strip_prefix("tag:") {
        let found: Vec<Target> =
            hosts().filter(|(_, h)| h.tags.iter().any(|t| t == tag)).map(|(c, h)| target(c, &h.name)).collect();
        if found.is_empty() {
            return Err(none(present("SSH host tags", hosts().flat_map(|(_, h)| h.tags.iter().cloned()))));
        }
        return Ok(found);
    }
    if rest.is_empty() {
        return Err(TargetError::Bad { term: term.to_owned(), why: "give ssh:HOST, ssh:tag:T or ssh:all".into() });
    }
    let names = if rest.contains('[') { crate::fleet::names::expand(rest)? } else { vec![rest.to_owned()] };
    let mut out = Vec::new();
    for name in names {
        let reaching: Vec<&Candidate> = hosts().filter(|(_, h)| h.name == name).map(|(c, _)| c).collect();
        // This node's own inventory wins: its operator configured it.
        let chosen = match reaching.as_slice() {
            [] => {
                let close = close_names(&name, hosts().map(|(_, h)| h.name.as_str()));
                return Err(TargetError::UnknownSsh { name, close });
            }
            [one] => *one,
            many => match many.iter().find(|c| c.is_self) {
                Some(me) => *me,
                None => {
                    let peers = many.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
                    return Err(TargetError::AmbiguousSsh { name, peers });
                }
            },
        };
        out.push(target(chosen, &name));
    }
    Ok(out)
}

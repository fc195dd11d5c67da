//! What the three Ansible inventory forms (INI, YAML, `--list` JSON) have in common: groups
//! with hosts, variables and child groups. Each parser fills a [`Groups`]; [`Groups::hosts`]
//! turns it into hosts: a host's groups (its own and every ancestor's, `all` and
//! `ungrouped` aside) become its tags, and variables apply from `all`, then from groups,
//! parents before children, then the host's own, as Ansible's precedence has it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{check_name, expand_home, Host, Loaded, NO_PASSWORDS};

pub(crate) type Vars = BTreeMap<String, String>;

#[derive(Debug, Default)]
pub(crate) struct Group {
    /// Host name and where it was defined, `file:line`.
    pub(crate) hosts: Vec<(String, String)>,
    pub(crate) vars: Vars,
    pub(crate) children: Vec<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Groups {
    pub(crate) groups: BTreeMap<String, Group>,
    pub(crate) host_vars: BTreeMap<String, Vars>,
}

impl Groups {
    pub(crate) fn group(&mut self, name: &str) -> &mut Group {
        self.groups.entry(name.to_owned()).or_default()
    }

    /// Adds a host (ranges expanded) to a group; problems go to `loaded`.
    pub(crate) fn add_host(
        &mut self,
        group: &str,
        pattern: &str,
        vars: Vars,
        file: &Path,
        line: usize,
        loaded: &mut Loaded,
    ) {
        let names = match super::expand_ranges(pattern) {
            Ok(n) => n,
            Err(e) => return loaded.problem(file, line, e),
        };
        for name in names {
            let source = format!("{}:{line}", file.display());
            self.group(group).hosts.push((name.clone(), source));
            self.host_vars.entry(name).or_default().extend(vars.clone());
        }
    }

    /// Every host once, in name order.
    pub(crate) fn hosts(self, file: &Path, loaded: &mut Loaded) -> Vec<Host> {
        let mut parents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, group) in &self.groups {
            for child in &group.children {
                parents.entry(child.as_str()).or_default().push(name.as_str());
            }
        }
        let mut first_seen: BTreeMap<&str, &str> = BTreeMap::new();
        let mut member_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (group, g) in &self.groups {
            for (host, source) in &g.hosts {
                first_seen.entry(host.as_str()).or_insert(source.as_str());
                member_of.entry(host.as_str()).or_default().push(group.as_str());
            }
        }
        let mut out = Vec::new();
        for (name, direct) in member_of {
            // Groups ordered by depth, so children's variables override their parents'.
            let mut chain: Vec<(usize, &str)> = Vec::new();
            let mut seen = BTreeSet::new();
            let mut stack: Vec<(usize, &str)> = direct.iter().map(|g| (usize::MAX / 2, *g)).collect();
            while let Some((depth, g)) = stack.pop() {
                if !seen.insert(g) {
                    continue; // a cycle or a diamond
                }
                chain.push((depth, g));
                for p in parents.get(g).into_iter().flatten() {
                    stack.push((depth - 1, p));
                }
            }
            chain.sort();
            let mut vars = self.groups.get("all").map(|g| g.vars.clone()).unwrap_or_default();
            for (_, g) in &chain {
                vars.extend(self.groups[*g].vars.clone());
            }
            vars.extend(self.host_vars.get(name).cloned().unwrap_or_default());
            let tags: Vec<String> = {
                let set: BTreeSet<&str> =
                    chain.iter().map(|(_, g)| *g).filter(|g| *g != "all" && *g != "ungrouped").collect();
                set.into_iter().map(str::to_owned).collect()
            };
            let source = first_seen[name].to_owned();
            let line = super::split_source(&source).1;
            match host_of(name, &vars, tags, source) {
                Ok(h) => out.push(h),
                Err(e) => loaded.problem(file, line, e),
            }
        }
        out
    }
}

fn var<'a>(vars: &'a Vars, names: &[&str]) -> Option<&'a String> {
    names.iter().find_map(|n| vars.get(*n))
}

fn host_of(name: &str, vars: &Vars, tags: Vec<String>, source: String) -> Result<Host, String> {
    check_name(name)?;
    if var(vars, &["ansible_password", "ansible_ssh_pass", "ansible_ssh_password"]).is_some() {
        return Err(format!("host {name:?}: {NO_PASSWORDS}"));
    }
    let mut host = Host::new(name, source);
    host.tags = tags;
    if let Some(a) = var(vars, &["ansible_host", "ansible_ssh_host"]) {
        host.address = a.clone();
    }
    if let Some(p) = var(vars, &["ansible_port", "ansible_ssh_port"]) {
        host.port = p.parse().ok().filter(|p| *p != 0).ok_or_else(|| format!("host {name:?}: port {p:?}"))?;
    }
    host.user = var(vars, &["ansible_user", "ansible_ssh_user"]).cloned();
    if let Some(k) = var(vars, &["ansible_ssh_private_key_file", "ansible_private_key_file"]) {
        host.identity_files.push(expand_home(k));
    }
    Ok(host)
}

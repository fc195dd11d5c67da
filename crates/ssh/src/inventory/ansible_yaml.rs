//! Ansible YAML inventories:
//!
//! ```yaml
//! all:
//!   vars: { ansible_user: ops }
//!   hosts:
//!     bastion: { ansible_host: 10.0.0.1 }
//!   children:
//!     web:
//!       hosts:
//!         web-[01:03]:
//! ```
//!
//! A YAML syntax error is reported with its line and loads nothing from the file (YAML has
//! no line-level recovery). A bad host or group is reported at the line its key is on and the
//! rest loads.

use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

use super::ansible::{Groups, Vars};
use super::Loaded;

/// Whether a file is YAML rather than INI: INI files start (after comments) with a section
/// header or a host line; YAML inventories with `name:`.
pub(crate) fn looks_like_yaml(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .is_some_and(|l| l == "---" || (l.ends_with(':') && !l.starts_with('[')) || l.contains(": "))
}

pub(crate) fn parse(text: &str, path: &Path) -> Loaded {
    let mut loaded = Loaded::default();
    let docs = match YamlLoader::load_from_str(text) {
        Ok(d) => d,
        Err(e) => {
            loaded.problem(path, e.marker().line(), format!("YAML: {}", e.info()));
            return loaded;
        }
    };
    let mut groups = Groups::default();
    let lines = Lines(text);
    for doc in &docs {
        match doc {
            Yaml::Hash(top) => {
                for (name, body) in top {
                    match name.as_str() {
                        Some(name) => group(&mut groups, name, body, path, &lines, &mut loaded),
                        None => loaded.problem(path, 0, "a top-level key that is not a group name"),
                    }
                }
            }
            Yaml::Null => {}
            _ => loaded.problem(path, 1, "the inventory is not a map of groups"),
        }
    }
    loaded.hosts = groups.hosts(path, &mut loaded);
    loaded
}

/// Finds the line a key is written on, for reports (YAML values do not carry positions).
struct Lines<'a>(&'a str);

impl Lines<'_> {
    fn of(&self, key: &str) -> usize {
        self.0
            .lines()
            .position(|l| {
                let t = l.trim_start().trim_start_matches("- ");
                [format!("{key}:"), format!("\"{key}\":"), format!("'{key}':")]
                    .iter()
                    .any(|k| t.starts_with(k.as_str()))
            })
            .map_or(0, |i| i + 1)
    }
}

fn group(groups: &mut Groups, name: &str, body: &Yaml, path: &Path, lines: &Lines, loaded: &mut Loaded) {
    groups.group(name);
    let body = match body {
        Yaml::Hash(h) => h,
        Yaml::Null => return,
        _ => return loaded.problem(path, lines.of(name), format!("group {name:?} is not a map")),
    };
    for (key, value) in body {
        match key.as_str() {
            Some("hosts") => match value {
                Yaml::Hash(hosts) => {
                    for (host, vars) in hosts {
                        let Some(host) = scalar(host) else {
                            loaded.problem(path, lines.of(name), format!("a host name in group {name:?} is not text"));
                            continue;
                        };
                        let line = lines.of(&host);
                        match vars_of(vars) {
                            Ok(vars) => groups.add_host(name, &host, vars, path, line, loaded),
                            Err(e) => loaded.problem(path, line, format!("host {host:?}: {e}")),
                        }
                    }
                }
                Yaml::Null => {}
                _ => loaded.problem(path, lines.of(name), format!("hosts of group {name:?} is not a map")),
            },
            Some("vars") => match vars_of(value) {
                Ok(vars) => groups.group(name).vars.extend(vars),
                Err(e) => loaded.problem(path, lines.of(name), format!("vars of group {name:?}: {e}")),
            },
            Some("children") => match value {
                Yaml::Hash(children) => {
                    for (child, child_body) in children {
                        let Some(child) = scalar(child) else { continue };
                        groups.group(name).children.push(child.clone());
                        group(groups, &child, child_body, path, lines, loaded);
                    }
                }
                Yaml::Null => {}
                _ => loaded.problem(path, lines.of(name), format!("children of group {name:?} is not a map")),
            },
            _ => {
                let key = scalar(key).unwrap_or_default();
                let message = format!("group {name:?} has key {key:?}; expected hosts, vars or children");
                loaded.problem(path, lines.of(&key), message)
            }
        }
    }
}

fn vars_of(value: &Yaml) -> Result<Vars, String> {
    match value {
        Yaml::Null => Ok(Vars::new()),
        Yaml::Hash(h) => Ok(h.iter().filter_map(|(k, v)| Some((scalar(k)?, scalar(v).unwrap_or_default()))).collect()),
        _ => Err("variables are not a map".into()),
    }
}

fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

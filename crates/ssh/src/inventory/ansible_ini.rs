//! Ansible INI inventories: `[group]` host lines (`name key=value ...`, ranges like
//! `web-[01:20]`), `[group:vars]` and `[group:children]`. Hosts before any section are
//! `ungrouped`.

use std::path::Path;

use super::ansible::{Groups, Vars};
use super::Loaded;

enum Section {
    Hosts(String),
    Vars(String),
    Children(String),
}

pub(crate) fn parse(text: &str, path: &Path) -> Loaded {
    let mut loaded = Loaded::default();
    let mut groups = Groups::default();
    let mut section = Section::Hosts("ungrouped".into());
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let Some(header) = header.strip_suffix(']') else {
                loaded.problem(path, line_no, format!("section header {line:?} has no closing ']'"));
                continue;
            };
            section = match header.split_once(':') {
                None => Section::Hosts(header.to_owned()),
                Some((g, "vars")) => Section::Vars(g.to_owned()),
                Some((g, "children")) => Section::Children(g.to_owned()),
                Some((_, other)) => {
                    loaded.problem(path, line_no, format!("unknown section kind {other:?} (vars or children)"));
                    Section::Vars(String::new())
                }
            };
            let (Section::Hosts(g) | Section::Vars(g) | Section::Children(g)) = &section;
            if !g.is_empty() {
                groups.group(g);
            }
            continue;
        }
        match &section {
            Section::Hosts(group) => {
                let mut words = shell_words(line).into_iter();
                let Some(name) = words.next() else { continue };
                let mut vars = Vars::new();
                let mut bad = false;
                for word in words {
                    match word.split_once('=') {
                        Some((k, v)) if !k.is_empty() => {
                            vars.insert(k.to_owned(), v.to_owned());
                        }
                        _ => {
                            loaded.problem(path, line_no, format!("{word:?} after host {name:?} is not key=value"));
                            bad = true;
                        }
                    }
                }
                if !bad {
                    groups.add_host(group, &name, vars, path, line_no, &mut loaded);
                }
            }
            Section::Vars(group) if group.is_empty() => {}
            Section::Vars(group) => match line.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    let v = unquote(v.trim());
                    groups.group(group).vars.insert(k.trim().to_owned(), v);
                }
                _ => loaded.problem(path, line_no, format!("{line:?} in [{group}:vars] is not key=value")),
            },
            Section::Children(group) => {
                let child = line.to_owned();
                groups.group(&child);
                groups.group(group).children.push(child);
            }
        }
    }
    loaded.hosts = groups.hosts(path, &mut loaded);
    loaded
}

/// Splits on whitespace; single or double quotes group and are removed.
fn shell_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => current.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, c) if c.is_whitespace() => {
                if started || !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            (None, '#') if current.is_empty() && !started => break,
            (None, c) => current.push(c),
        }
    }
    if started || !current.is_empty() {
        out.push(current);
    }
    out
}

fn unquote(v: &str) -> String {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner.to_owned();
        }
    }
    v.to_owned()
}

//! Editing one entry of a YAML config (Goose's `extensions:` map, Continue's `mcpServers:`
//! list) as lines of text, so comments and everything else stay as written. The file is
//! parsed before (a malformed file is left alone) and after (the edit must say what we meant).

use yaml_rust2::{Yaml, YamlLoader};

/// Where our entry lives under a top-level key.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Entry<'a> {
    /// `top: { NAME: {...} }`
    Key(&'a str),
    /// `top: [ {name: NAME, ...} ]`
    Named(&'a str),
}

pub(crate) fn parse(text: &str) -> Result<Yaml, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    match docs.into_iter().next() {
        None | Some(Yaml::Null) => Ok(Yaml::Hash(Default::default())),
        Some(doc @ Yaml::Hash(_)) => Ok(doc),
        Some(_) => Err("the top level is not a mapping".into()),
    }
}

/// Our entry as parsed, if present.
pub(crate) fn get(text: &str, top: &str, entry: Entry<'_>) -> Result<Option<Yaml>, String> {
    let doc = parse(text)?;
    let under = &doc[top];
    Ok(match entry {
        Entry::Key(name) => Some(under[name].clone()).filter(|y| !y.is_badvalue()),
        Entry::Named(name) => {
            under.as_vec().and_then(|items| items.iter().find(|i| i["name"].as_str() == Some(name)).cloned())
        }
    })
}

/// Sets our entry to `body` (YAML lines of the entry's contents, unindented).
pub(crate) fn set(text: &str, top: &str, entry: Entry<'_>, body: &[String]) -> Result<String, String> {
    parse(text)?;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let top_line = match find_top(&lines, top)? {
        Some(i) => {
            // An empty flow value (`top: {}`) becomes a block.
            lines[i] = format!("{top}:");
            i
        }
        None => {
            if lines.last().is_some_and(|l| !l.trim().is_empty()) {
                lines.push(String::new());
            }
            lines.push(format!("{top}:"));
            lines.len() - 1
        }
    };
    let block_end = block_end(&lines, top_line);
    let indent = child_indent(&lines, top_line + 1, block_end).unwrap_or_else(|| "  ".into());
    let rendered = render(entry, body, &indent);
    let (start, end) = match find_entry(&lines, top_line + 1, block_end, &indent, entry) {
        Some(range) => range,
        None => (block_end, block_end),
    };
    // Keep comments and blank lines that trail the entry's block outside of it.
    lines.splice(start..end, rendered);
    let out = lines.join("\n") + "\n";
    parse(&out).map_err(|e| format!("the edit would not parse ({e}); left alone"))?;
    Ok(out)
}

/// Removes our entry; `None` if it is not there.
pub(crate) fn remove(text: &str, top: &str, entry: Entry<'_>) -> Result<Option<String>, String> {
    parse(text)?;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let Some(top_line) = find_top(&lines, top)? else { return Ok(None) };
    let block_end = block_end(&lines, top_line);
    let Some(indent) = child_indent(&lines, top_line + 1, block_end) else { return Ok(None) };
    let Some((start, end)) = find_entry(&lines, top_line + 1, block_end, &indent, entry) else { return Ok(None) };
    lines.drain(start..end);
    let out = lines.join("\n") + "\n";
    parse(&out).map_err(|e| format!("the edit would not parse ({e}); left alone"))?;
    Ok(Some(out))
}

fn render(entry: Entry<'_>, body: &[String], indent: &str) -> Vec<String> {
    match entry {
        Entry::Key(name) => {
            std::iter::once(format!("{indent}{name}:")).chain(body.iter().map(|l| format!("{indent}  {l}"))).collect()
        }
        Entry::Named(name) => std::iter::once(format!("{indent}- name: {name}"))
            .chain(body.iter().map(|l| format!("{indent}  {l}")))
            .collect(),
    }
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// The line of `top:` at the left margin. A flow value (`top: {}` / `top: []`) that is empty
/// becomes a block; any other inline value cannot be edited line-wise.
fn find_top(lines: &[String], top: &str) -> Result<Option<usize>, String> {
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.strip_prefix(top).and_then(|r| r.strip_prefix(':')) else { continue };
        let value = rest.split(" #").next().unwrap_or_default().trim();
        return match value {
            "" | "{}" | "[]" | "~" | "null" => Ok(Some(i)),
            _ => Err(format!("`{top}:` is written inline; rewrite it as a block to let tunnel edit it")),
        };
    }
    Ok(None)
}

/// The end of a top-level key's block: its last line of content, plus one. A `- ` item at the
/// left margin still belongs to it (YAML lets a list sit there).
fn block_end(lines: &[String], top: usize) -> usize {
    extent(lines, top, lines.len(), 0, true)
}

/// The indentation of the first entry in a block.
fn child_indent(lines: &[String], start: usize, end: usize) -> Option<String> {
    lines[start..end].iter().find(|l| !is_blank_or_comment(l)).map(|l| " ".repeat(indent_of(l)))
}

fn find_entry(lines: &[String], start: usize, end: usize, indent: &str, entry: Entry<'_>) -> Option<(usize, usize)> {
    let width = indent.len();
    let at_margin =
        |i: usize| !is_blank_or_comment(&lines[i]) && indent_of(&lines[i]) == width && lines[i].starts_with(indent);
    for i in start..end {
        if !at_margin(i) {
            continue;
        }
        let item = &lines[i][width..];
        let found = match entry {
            Entry::Key(name) => item.strip_prefix(name).is_some_and(|r| r.starts_with(':')),
            Entry::Named(name) => {
                item.starts_with("- ") && {
                    let item_end = entry_end(lines, i, end, width);
                    lines[i..item_end].iter().any(|l| {
                        let t = l.trim_start().trim_start_matches("- ");
                        t.strip_prefix("name:").is_some_and(|v| v.trim().trim_matches(['"', '\'']) == name)
                    })
                }
            }
        };
        if found {
            return Some((i, entry_end(lines, i, end, width)));
        }
    }
    None
}

/// The end of the entry starting at `start`: the next line at its margin or left of it.
fn entry_end(lines: &[String], start: usize, end: usize, width: usize) -> usize {
    extent(lines, start, end, width, false)
}

/// Past the last line of content (not blank, not a comment) indented deeper than `width`
/// after `start`, up to `end`: where the next item of a list, the next key of a map, or the
/// parent's next key begins. With `items_at_margin`, `- ` items at `width` count as inside.
fn extent(lines: &[String], start: usize, end: usize, width: usize, items_at_margin: bool) -> usize {
    let mut last_content = start + 1;
    for (i, line) in lines.iter().enumerate().take(end).skip(start + 1) {
        if is_blank_or_comment(line) {
            continue;
        }
        let own = indent_of(line);
        let item_at_margin = items_at_margin && own == width && line.trim_start().starts_with("- ");
        if own <= width && !item_at_margin {
            break;
        }
        last_content = i + 1;
    }
    last_content.min(lines.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOSE: &str = "# goose\nGOOSE_PROVIDER: openai\nextensions:\n  developer:\n    enabled: true   # built in\n    name: developer\n    type: builtin\nGOOSE_MODEL: gpt-4o\n";

    fn body() -> Vec<String> {
        ["cmd: /usr/local/bin/tunnel", "args:", "- mcp", "enabled: true", "type: stdio"].map(String::from).to_vec()
    }

    #[test]
    fn goose_extension_added_replaced_and_removed() {
        let out = set(GOOSE, "extensions", Entry::Key("tunnel"), &body()).unwrap();
        assert!(
            out.contains("# built in") && out.contains("GOOSE_MODEL: gpt-4o") && out.starts_with("# goose\n"),
            "{out}"
        );
        let doc = parse(&out).unwrap();
        assert_eq!(doc["extensions"]["tunnel"]["cmd"].as_str(), Some("/usr/local/bin/tunnel"));
        assert_eq!(doc["extensions"]["developer"]["type"].as_str(), Some("builtin"));
        assert_eq!(doc["GOOSE_MODEL"].as_str(), Some("gpt-4o"));
        let again = set(&out, "extensions", Entry::Key("tunnel"), &body()).unwrap();
        assert_eq!(again, out);
        let removed = remove(&out, "extensions", Entry::Key("tunnel")).unwrap().unwrap();
        assert_eq!(removed, GOOSE);
    }

    #[test]
    fn continue_list_item_added_and_removed() {
        let text = "name: my assistant\nmcpServers:\n  - name: other\n    command: x\nmodels: []\n";
        let out = set(text, "mcpServers", Entry::Named("tunnel"), &["command: /bin/tunnel".into()]).unwrap();
        let doc = parse(&out).unwrap();
        let items = doc["mcpServers"].as_vec().unwrap();
        assert_eq!(items.len(), 2, "{out}");
        assert_eq!(
            get(&out, "mcpServers", Entry::Named("tunnel")).unwrap().unwrap()["command"].as_str(),
            Some("/bin/tunnel")
        );
        assert_eq!(set(&out, "mcpServers", Entry::Named("tunnel"), &["command: /bin/tunnel".into()]).unwrap(), out);
        assert_eq!(remove(&out, "mcpServers", Entry::Named("tunnel")).unwrap().unwrap(), text);
        // A list at the key's margin, and a file without the key at all.
        let flush = "mcpServers:\n- name: other\n  command: x\n";
        let out = set(flush, "mcpServers", Entry::Named("tunnel"), &["command: t".into()]).unwrap();
        assert_eq!(parse(&out).unwrap()["mcpServers"].as_vec().unwrap().len(), 2, "{out}");
        let out = set("", "mcpServers", Entry::Named("tunnel"), &["command: t".into()]).unwrap();
        assert!(get(&out, "mcpServers", Entry::Named("tunnel")).unwrap().is_some(), "{out}");
    }

    #[test]
    fn malformed_or_inline_files_are_left_alone() {
        assert!(set("a: [unclosed\n", "extensions", Entry::Key("t"), &body()).is_err());
        assert!(set("- a\n- b\n", "extensions", Entry::Key("t"), &body()).is_err());
        assert!(set("extensions: {developer: {}}\n", "extensions", Entry::Key("t"), &body()).is_err());
    }
}

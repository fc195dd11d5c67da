//! Editing JSON with comments (VS Code's and Zed's settings, and every client's plain JSON)
//! without disturbing it: the text is parsed only to find where members are, and the change
//! is a splice of the text, so comments, key order and formatting elsewhere stay as they were.

use std::ops::Range;

/// An object's members, by where they are in the text.
#[derive(Debug)]
struct Object {
    /// From `{` to `}` inclusive.
    span: Range<usize>,
    members: Vec<Member>,
}

#[derive(Debug)]
struct Member {
    key: String,
    key_start: usize,
    value: Range<usize>,
}

/// Sets `path` (object keys from the root) to `value`, creating objects on the way. Returns
/// the new text, or why the document could not be edited.
pub(crate) fn set(text: &str, path: &[&str], value: &serde_json::Value) -> Result<String, String> {
    let text = if text.trim().is_empty() { "{}\n" } else { text };
    let mut object = root_object(text)?;
    for (depth, key) in path.iter().enumerate() {
        let last = depth + 1 == path.len();
        match object.members.iter().find(|m| m.key == *key) {
            Some(member) if last => {
                let indent = line_indent(text, member.key_start);
                let mut out = text.to_owned();
                out.replace_range(member.value.clone(), &render(value, &indent));
                return Ok(out);
            }
            Some(member) => {
                object = parse_object_at(text, member.value.start)
                    .map_err(|e| format!("{} is not an object: {e}", path[..=depth].join(".")))?;
            }
            None => {
                // Build the rest of the path as nested objects and insert it here.
                let mut nested = value.clone();
                for k in path[depth + 1..].iter().rev() {
                    nested = serde_json::json!({ *k: nested });
                }
                return Ok(insert(text, &object, key, &nested));
            }
        }
    }
    Err("empty path".into())
}

/// Removes the member at `path`; `None` when it is not there.
pub(crate) fn remove(text: &str, path: &[&str]) -> Result<Option<String>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let (last, parents) = path.split_last().ok_or("empty path")?;
    let Some(object) = parent(text, parents)? else { return Ok(None) };
    let Some(index) = object.members.iter().position(|m| m.key == *last) else { return Ok(None) };
    let member = &object.members[index];
    let range = match (index.checked_sub(1), object.members.get(index + 1)) {
        // Up to the next member: takes this one's comma and the space before the next key;
        // whole lines when each member has its own.
        (_, Some(next)) => {
            let (start, next_start) = (line_start(text, member.key_start), line_start(text, next.key_start));
            let own_line = text[start..member.key_start].trim().is_empty() && next_start > member.key_start;
            if own_line {
                start..next_start
            } else {
                member.key_start..next.key_start
            }
        }
        // The last one: from the end of the previous value, taking the comma before it.
        (Some(prev), None) => object.members[prev].value.end..after_comma(text, member.value.end),
        (None, None) => object.span.start + 1..after_comma(text, member.value.end),
    };
    let mut out = text.to_owned();
    out.replace_range(range, "");
    Ok(Some(out))
}

/// Whether `path` is present (and what it holds).
pub(crate) fn get(text: &str, path: &[&str]) -> Result<Option<serde_json::Value>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let (last, parents) = path.split_last().ok_or("empty path")?;
    let Some(object) = parent(text, parents)? else { return Ok(None) };
    let Some(member) = object.members.iter().find(|m| m.key == *last) else { return Ok(None) };
    Ok(Some(to_value(&text[member.value.clone()])?))
}

/// The object at `parents`; `None` if it is missing or not an object.
fn parent(text: &str, parents: &[&str]) -> Result<Option<Object>, String> {
    let mut object = root_object(text)?;
    for key in parents {
        let Some(member) = object.members.iter().find(|m| m.key == *key) else { return Ok(None) };
        object = match parse_object_at(text, member.value.start) {
            Ok(o) => o,
            Err(_) => return Ok(None),
        };
    }
    Ok(Some(object))
}

/// A JSONC value's text as plain JSON (comments and trailing commas dropped).
fn to_value(text: &str) -> Result<serde_json::Value, String> {
    let mut plain = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let end = skip_string(bytes, i)?;
                plain.push_str(&text[i..end]);
                i = end;
            }
            b'/' if matches!(bytes.get(i + 1), Some(b'/' | b'*')) => i = skip_space(bytes, i)?,
            b',' => {
                let next = skip_space(bytes, i + 1)?;
                if !matches!(bytes.get(next), Some(b'}' | b']')) {
                    plain.push(',');
                }
                i += 1;
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or(' ');
                plain.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    serde_json::from_str(&plain).map_err(|e| e.to_string())
}

fn insert(text: &str, object: &Object, key: &str, value: &serde_json::Value) -> String {
    let mut out = text.to_owned();
    let key = serde_json::to_string(key).unwrap_or_default();
    match object.members.last() {
        Some(last) => {
            let indent = line_indent(text, last.key_start);
            let member = format!(",\n{indent}{key}: {}", render(value, &indent));
            out.insert_str(last.value.end, &member);
        }
        None => {
            let outer = line_indent(text, object.span.start);
            let indent = format!("{outer}  ");
            let member = format!("\n{indent}{key}: {}\n{outer}", render(value, &indent));
            // Replace whatever space sits between the braces.
            out.replace_range(object.span.start + 1..object.span.end - 1, &member);
        }
    }
    out
}

/// Pretty JSON whose later lines sit under `indent`.
fn render(value: &serde_json::Value, indent: &str) -> String {
    let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
    pretty.lines().enumerate().map(|(i, l)| if i == 0 { l.to_owned() } else { format!("\n{indent}{l}") }).collect()
}

fn line_start(text: &str, at: usize) -> usize {
    text[..at].rfind('\n').map_or(0, |i| i + 1)
}

fn line_indent(text: &str, at: usize) -> String {
    let start = line_start(text, at);
    text[start..].chars().take_while(|c| *c == ' ' || *c == '\t').collect()
}

/// Past a comma that follows `at` (after space and comments), else `at`.
fn after_comma(text: &str, at: usize) -> usize {
    let bytes = text.as_bytes();
    match skip_space(bytes, at) {
        Ok(i) if bytes.get(i) == Some(&b',') => i + 1,
        _ => at,
    }
}

fn root_object(text: &str) -> Result<Object, String> {
    let bytes = text.as_bytes();
    let start = skip_space(bytes, 0)?;
    let object = parse_object_at(text, start).map_err(|e| format!("the file is not a JSON object: {e}"))?;
    let end = skip_space(bytes, object.span.end)?;
    if end != bytes.len() {
        return Err(format!("unexpected text after the top-level object at byte {end}"));
    }
    Ok(object)
}

fn parse_object_at(text: &str, start: usize) -> Result<Object, String> {
    let bytes = text.as_bytes();
    if bytes.get(start) != Some(&b'{') {
        return Err(format!("expected {{ at byte {start}"));
    }
    let mut members = Vec::new();
    let mut i = skip_space(bytes, start + 1)?;
    loop {
        match bytes.get(i) {
            Some(b'}') => return Ok(Object { span: start..i + 1, members }),
            Some(b'"') => {
                let key_end = skip_string(bytes, i)?;
                let key: String = serde_json::from_str(&text[i..key_end]).map_err(|e| e.to_string())?;
                let colon = skip_space(bytes, key_end)?;
                if bytes.get(colon) != Some(&b':') {
                    return Err(format!("expected : at byte {colon}"));
                }
                let value_start = skip_space(bytes, colon + 1)?;
                let value_end = skip_value(bytes, value_start)?;
                members.push(Member { key, key_start: i, value: value_start..value_end });
                i = skip_space(bytes, value_end)?;
                match bytes.get(i) {
                    Some(b',') => i = skip_space(bytes, i + 1)?,
                    Some(b'}') => {}
                    _ => return Err(format!("expected , or }} at byte {i}")),
                }
            }
            _ => return Err(format!("expected a key or }} at byte {i}")),
        }
    }
}

fn skip_value(bytes: &[u8], i: usize) -> Result<usize, String> {
    match bytes.get(i) {
        Some(b'"') => skip_string(bytes, i),
        Some(open @ (b'{' | b'[')) => {
            let close = if *open == b'{' { b'}' } else { b']' };
            let mut j = skip_space(bytes, i + 1)?;
            loop {
                match bytes.get(j) {
                    Some(c) if *c == close => return Ok(j + 1),
                    Some(b',' | b':') => j = skip_space(bytes, j + 1)?,
                    Some(_) => j = skip_space(bytes, skip_value(bytes, j)?)?,
                    None => return Err("unterminated object or array".into()),
                }
            }
        }
        Some(c) if c.is_ascii_alphanumeric() || *c == b'-' => {
            let mut j = i;
            while bytes.get(j).is_some_and(|c| c.is_ascii_alphanumeric() || b"+-.".contains(c)) {
                j += 1;
            }
            Ok(j)
        }
        _ => Err(format!("expected a value at byte {i}")),
    }
}

fn skip_string(bytes: &[u8], i: usize) -> Result<usize, String> {
    let mut j = i + 1;
    while let Some(c) = bytes.get(j) {
        match c {
            b'\\' => j += 2,
            b'"' => return Ok(j + 1),
            _ => j += 1,
        }
    }
    Err(format!("unterminated string at byte {i}"))
}

/// Past white space and comments.
fn skip_space(bytes: &[u8], mut i: usize) -> Result<usize, String> {
    loop {
        match (bytes.get(i), bytes.get(i + 1)) {
            (Some(c), _) if c.is_ascii_whitespace() => i += 1,
            (Some(b'/'), Some(b'/')) => {
                while bytes.get(i).is_some_and(|c| *c != b'\n') {
                    i += 1;
                }
            }
            (Some(b'/'), Some(b'*')) => {
                let rest = &bytes[i + 2..];
                let end = rest.windows(2).position(|w| w == b"*/").ok_or("unterminated comment")?;
                i += 2 + end + 2;
            }
            _ => return Ok(i),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const VSCODE: &str = r#"{
    // my servers
    "servers": {
        "other": { "command": "x" }, // keep me
    },
    /* trailing */
    "inputs": [],
}
"#;

    #[test]
    fn adding_keeps_comments_and_other_members() {
        let out = set(VSCODE, &["servers", "tunnel"], &json!({"command": "/bin/tunnel", "args": ["mcp"]})).unwrap();
        assert!(out.contains("// my servers") && out.contains("// keep me") && out.contains("/* trailing */"));
        assert!(out.contains("\"other\": { \"command\": \"x\" }"));
        assert_eq!(get(&out, &["servers", "tunnel", "command"]).unwrap(), Some(json!("/bin/tunnel")));
        assert_eq!(get(&out, &["servers", "other"]).unwrap(), Some(json!({"command": "x"})));
        // Twice is the same as once.
        let again = set(&out, &["servers", "tunnel"], &json!({"command": "/bin/tunnel", "args": ["mcp"]})).unwrap();
        assert_eq!(get(&again, &["servers"]).unwrap(), get(&out, &["servers"]).unwrap());
        let removed = remove(&out, &["servers", "tunnel"]).unwrap().unwrap();
        assert_eq!(get(&removed, &["servers"]).unwrap(), Some(json!({"other": {"command": "x"}})));
        assert!(removed.contains("// keep me"));
    }

    #[test]
    fn missing_parents_and_empty_files_are_made() {
        for start in ["", "{}", "{\n  \"theme\": \"dark\"\n}\n"] {
            let out = set(start, &["mcpServers", "tunnel"], &json!({"command": "t"})).unwrap();
            let plain: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
            assert_eq!(plain["mcpServers"]["tunnel"]["command"], "t", "{out}");
            let back = remove(&out, &["mcpServers", "tunnel"]).unwrap().unwrap();
            assert!(serde_json::from_str::<serde_json::Value>(&back).is_ok(), "{back}");
        }
    }

    #[test]
    fn removing_first_middle_and_last_members_leaves_valid_json() {
        let text = r#"{"a": 1, "b": 2, "c": 3}"#;
        for (key, left) in
            [("a", json!({"b": 2, "c": 3})), ("b", json!({"a": 1, "c": 3})), ("c", json!({"a": 1, "b": 2}))]
        {
            let out = remove(text, &[key]).unwrap().unwrap();
            assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap(), left, "{out}");
        }
        assert_eq!(remove(text, &["z"]).unwrap(), None);
    }

    #[test]
    fn malformed_files_are_errors() {
        for bad in ["{", "[1]", "{\"a\" 1}", "{\"a\": 1} x", "{/* open"] {
            assert!(set(bad, &["a"], &json!(1)).is_err(), "{bad}");
        }
    }
}

//! Dynamic inventories: a command that prints Ansible `--list` JSON, so existing cloud
//! inventory scripts work unchanged:
//!
//! ```json
//! { "web": { "hosts": ["web-1"], "vars": {}, "children": [] },
//!   "db": ["db-1"],
//!   "_meta": { "hostvars": { "web-1": { "ansible_host": "10.0.0.5" } } } }
//! ```
//!
//! The command runs as argv (no shell), with a timeout; its stdout is capped.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::ansible::{Groups, Vars};
use super::Loaded;

/// Largest inventory JSON read from a command.
const MAX_OUTPUT: u64 = 64 << 20;

pub(crate) async fn run(argv: &[String], timeout: Duration) -> Loaded {
    let label = argv.join(" ");
    let label_path = Path::new(&label);
    let mut loaded = Loaded::default();
    let Some(program) = argv.first() else {
        loaded.problem(label_path, 0, "an empty dynamic inventory command");
        return loaded;
    };
    let child = tokio::process::Command::new(program)
        .args(&argv[1..])
        .arg("--list")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            loaded.problem(label_path, 0, format!("cannot start the inventory command: {e}"));
            return loaded;
        }
    };
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let collect = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut stdout = (&mut stdout).take(MAX_OUTPUT + 1);
        let mut stderr = (&mut stderr).take(64 * 1024);
        let (a, b) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        a.and(b)?;
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, out, err))
    };
    let (status, out, err) = match tokio::time::timeout(timeout, collect).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            loaded.problem(label_path, 0, format!("reading the inventory command: {e}"));
            return loaded;
        }
        Err(_) => {
            loaded.problem(label_path, 0, format!("the inventory command ran longer than {timeout:?}"));
            return loaded;
        }
    };
    if !status.success() {
        let why = String::from_utf8_lossy(&err);
        let last = why.lines().last().unwrap_or("").trim();
        loaded.problem(label_path, 0, format!("the inventory command failed ({status}): {last}"));
        return loaded;
    }
    if out.len() as u64 > MAX_OUTPUT {
        loaded.problem(label_path, 0, format!("the inventory command printed more than {MAX_OUTPUT} bytes"));
        return loaded;
    }
    parse(&out, label_path)
}

pub(crate) fn parse(json: &[u8], path: &Path) -> Loaded {
    let mut loaded = Loaded::default();
    let top: serde_json::Map<String, Value> = match serde_json::from_slice(json) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            loaded.problem(path, 1, "the inventory JSON is not an object of groups");
            return loaded;
        }
        Err(e) => {
            loaded.problem(path, e.line(), format!("inventory JSON: {e}"));
            return loaded;
        }
    };
    let mut groups = Groups::default();
    let host_vars = top.get("_meta").and_then(|m| m.get("hostvars")).and_then(Value::as_object);
    for (name, body) in &top {
        if name == "_meta" {
            continue;
        }
        let (hosts, vars, children) = match body {
            Value::Array(hosts) => (Some(hosts), None, None),
            Value::Object(g) => (
                g.get("hosts").and_then(Value::as_array),
                g.get("vars").and_then(Value::as_object),
                g.get("children").and_then(Value::as_array),
            ),
            _ => {
                loaded.problem(path, 0, format!("group {name:?} is neither a list of hosts nor an object"));
                continue;
            }
        };
        groups.group(name).vars.extend(vars.map(vars_of).unwrap_or_default());
        for child in children.into_iter().flatten().filter_map(Value::as_str) {
            groups.group(child);
            groups.group(name).children.push(child.to_owned());
        }
        for host in hosts.into_iter().flatten() {
            let Some(host) = host.as_str() else {
                loaded.problem(path, 0, format!("a host in group {name:?} is not a string"));
                continue;
            };
            let vars = host_vars.and_then(|h| h.get(host)).and_then(Value::as_object).map(vars_of).unwrap_or_default();
            groups.add_host(name, host, vars, path, 0, &mut loaded);
        }
    }
    loaded.hosts = groups.hosts(path, &mut loaded);
    loaded
}

fn vars_of(map: &serde_json::Map<String, Value>) -> Vars {
    map.iter()
        .filter_map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((k.clone(), v))
        })
        .collect()
}

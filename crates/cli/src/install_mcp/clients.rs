//! The AI clients tunnel knows, where each keeps its MCP servers on Linux and macOS, and the
//! shape of an entry in each.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::Server;

pub(crate) struct Client {
    pub(crate) id: &'static str,
    pub(crate) label: &'static str,
    pub(crate) config: fn(&Path) -> PathBuf,
    pub(crate) format: Format,
    /// The client's own command for this, used when it is on `PATH`.
    pub(crate) cli: Option<Cli>,
}

#[derive(Clone, Copy)]
pub(crate) enum Cli {
    Claude,
}

pub(crate) fn cli_program(cli: &Cli) -> &'static str {
    match cli {
        Cli::Claude => "claude",
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Format {
    /// JSON (comments allowed): the entry at `parents` + name.
    Json { parents: &'static [&'static str], shape: Shape },
    /// Codex: `[mcp_servers.NAME]` in TOML.
    CodexToml,
    /// YAML map entry under a top-level key (Goose's `extensions`).
    YamlKey(&'static str),
    /// YAML list item with `name:` under a top-level key (Continue's `mcpServers`).
    YamlNamed(&'static str),
}

#[derive(Clone, Copy)]
pub(crate) enum Shape {
    /// `{"command", "args", "env"}`
    Plain,
    /// `{"type": "stdio", "command", "args", "env"}`
    Typed,
}

impl Shape {
    pub(crate) fn entry(self, s: &Server) -> serde_json::Value {
        let mut v = match self {
            Shape::Plain => json!({ "command": s.command, "args": s.args }),
            Shape::Typed => json!({ "type": "stdio", "command": s.command, "args": s.args }),
        };
        if !s.env.is_empty() {
            v["env"] = s.env.iter().map(|(k, val)| (k.clone(), json!(val))).collect::<serde_json::Map<_, _>>().into();
        }
        v
    }
}

fn config_home(home: &Path) -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".config"))
}

/// Where apps keep settings: `~/Library/Application Support` on macOS, the XDG config dir elsewhere.
fn app_support(home: &Path) -> PathBuf {
    if cfg!(target_os = "macos") {
        home.join("Library/Application Support")
    } else {
        config_home(home)
    }
}

pub(crate) const CLIENTS: &[Client] = &[
    Client {
        id: "claude-desktop",
        label: "Claude Desktop",
        config: |h| app_support(h).join("Claude/claude_desktop_config.json"),
        format: Format::Json { parents: &["mcpServers"], shape: Shape::Plain },
        cli: None,
    },
    Client {
        id: "claude-code",
        label: "Claude Code",
        config: |h| h.join(".claude.json"),
        format: Format::Json { parents: &["mcpServers"], shape: Shape::Typed },
        cli: Some(Cli::Claude),
    },
    Client {
        id: "cursor",
        label: "Cursor",
        config: |h| h.join(".cursor/mcp.json"),
        format: Format::Json { parents: &["mcpServers"], shape: Shape::Plain },
        cli: None,
    },
    Client {
        id: "vscode",
        label: "VS Code",
        config: |h| app_support(h).join("Code/User/mcp.json"),
        format: Format::Json { parents: &["servers"], shape: Shape::Typed },
        cli: None,
    },
    Client {
        id: "windsurf",
        label: "Windsurf",
        config: |h| h.join(".codeium/windsurf/mcp_config.json"),
        format: Format::Json { parents: &["mcpServers"], shape: Shape::Plain },
        cli: None,
    },
    Client {
        id: "zed",
        label: "Zed",
        config: |h| config_home(h).join("zed/settings.json"),
        format: Format::Json { parents: &["context_servers"], shape: Shape::Plain },
        cli: None,
    },
    Client {
        id: "codex",
        label: "Codex",
        config: |h| std::env::var_os("CODEX_HOME").map_or_else(|| h.join(".codex"), PathBuf::from).join("config.toml"),
        format: Format::CodexToml,
        cli: None,
    },
    Client {
        id: "gemini",
        label: "Gemini CLI",
        config: |h| h.join(".gemini/settings.json"),
        format: Format::Json { parents: &["mcpServers"], shape: Shape::Plain },
        cli: None,
    },
    Client {
        id: "cline",
        label: "Cline",
        config: |h| {
            app_support(h).join("Code/User/globalStorage/saoudrizwan.claude-dev/settings/cline_mcp_settings.json")
        },
        format: Format::Json { parents: &["mcpServers"], shape: Shape::Plain },
        cli: None,
    },
    Client {
        id: "continue",
        label: "Continue",
        config: |h| h.join(".continue/config.yaml"),
        format: Format::YamlNamed("mcpServers"),
        cli: None,
    },
    Client {
        id: "goose",
        label: "Goose",
        config: |h| config_home(h).join("goose/config.yaml"),
        format: Format::YamlKey("extensions"),
        cli: None,
    },
];

/// A YAML scalar, quoted (JSON strings are valid YAML).
fn y(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn yaml_list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|a| y(a)).collect::<Vec<_>>().join(", "))
}

fn yaml_map(pairs: &[(String, String)]) -> String {
    format!("{{{}}}", pairs.iter().map(|(k, v)| format!("{}: {}", y(k), y(v))).collect::<Vec<_>>().join(", "))
}

pub(crate) fn goose_body(s: &Server) -> Vec<String> {
    vec![
        format!("name: {}", y(&s.name)),
        format!("cmd: {}", y(&s.command)),
        format!("args: {}", yaml_list(&s.args)),
        "enabled: true".into(),
        "type: stdio".into(),
        "timeout: 300".into(),
        format!("envs: {}", yaml_map(&s.env)),
    ]
}

pub(crate) fn continue_body(s: &Server) -> Vec<String> {
    let mut body = vec![format!("command: {}", y(&s.command)), format!("args: {}", yaml_list(&s.args))];
    if !s.env.is_empty() {
        body.push(format!("env: {}", yaml_map(&s.env)));
    }
    body
}

fn codex_doc(text: &str) -> Result<toml_edit::DocumentMut, String> {
    text.parse().map_err(|e: toml_edit::TomlError| e.to_string())
}

pub(crate) fn codex_set(text: &str, s: &Server) -> Result<String, String> {
    let mut doc = codex_doc(text)?;
    let servers = doc.entry("mcp_servers").or_insert_with(|| {
        let mut t = toml_edit::Table::new();
        t.set_implicit(true);
        toml_edit::Item::Table(t)
    });
    let servers = servers.as_table_mut().ok_or("mcp_servers is not a table")?;
    let mut entry = toml_edit::Table::new();
    entry["command"] = toml_edit::value(s.command.as_str());
    entry["args"] = toml_edit::value(s.args.iter().map(String::as_str).collect::<toml_edit::Array>());
    if !s.env.is_empty() {
        let mut env = toml_edit::InlineTable::new();
        for (k, v) in &s.env {
            env.insert(k, v.as_str().into());
        }
        entry["env"] = toml_edit::value(env);
    }
    match servers.get_mut(&s.name).and_then(toml_edit::Item::as_table_mut) {
        // Keys of ours replaced, anything else the user put there kept.
        Some(existing) => {
            for (k, v) in entry.iter() {
                existing[k] = v.clone();
            }
            if s.env.is_empty() {
                existing.remove("env");
            }
        }
        None => {
            servers.insert(&s.name, toml_edit::Item::Table(entry));
        }
    }
    Ok(doc.to_string())
}

pub(crate) fn codex_remove(text: &str, name: &str) -> Result<Option<String>, String> {
    let mut doc = codex_doc(text)?;
    let Some(servers) = doc.get_mut("mcp_servers").and_then(toml_edit::Item::as_table_mut) else { return Ok(None) };
    if servers.remove(name).is_none() {
        return Ok(None);
    }
    Ok(Some(doc.to_string()))
}

pub(crate) fn codex_has(text: &str, name: &str) -> Result<bool, String> {
    let doc = codex_doc(text)?;
    Ok(doc.get("mcp_servers").and_then(|s| s.get(name)).is_some())
}

/// `claude mcp add|remove` for Claude Code, at user scope.
pub(crate) fn run_cli(cli: Cli, s: &Server, uninstall: bool) -> anyhow::Result<()> {
    let Cli::Claude = cli;
    let mut cmd = std::process::Command::new("claude");
    if uninstall {
        cmd.args(["mcp", "remove", "--scope", "user", &s.name]);
    } else {
        cmd.args(["mcp", "add", "--scope", "user"]);
        for (k, v) in &s.env {
            cmd.args(["-e", &format!("{k}={v}")]);
        }
        cmd.arg(&s.name).arg("--").arg(&s.command).args(&s.args);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        anyhow::bail!("`claude mcp` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

//! systemd units. Every directive below is one a unit can carry at no cost to what the
//! program does; what each costs the node is spelled out in the README ("Deploy").

use crate::{Hardening, Scope, ServiceSpec};

/// The unit file for `spec`.
pub fn unit(spec: &ServiceSpec) -> String {
    let mut out = String::new();
    let mut line = |l: &str| {
        out.push_str(l);
        out.push('\n');
    };
    line("[Unit]");
    line(&format!("Description={}", spec.description));
    line("Documentation=https://example.invalid/tunnel#deploy");
    line("After=network-online.target");
    line("Wants=network-online.target");
    // Never give up restarting (the default stops after five starts in ten seconds).
    line("StartLimitIntervalSec=0");
    line("");
    line("[Service]");
    line("Type=simple");
    line(&format!("ExecStart={}", exec_line(spec)));
    line("Environment=TUNNEL_SERVICE=systemd");
    if spec.hardening == Hardening::Relay {
        // `systemctl reload tunnel-relay` loads a renewed certificate; connections stay.
        line("ExecReload=/bin/kill -HUP $MAINPID");
    }
    line("Restart=always");
    line("RestartSec=2");
    if spec.scope == Scope::System && spec.hardening == Hardening::Node {
        // /var/lib/tunnel and /run/tunnel, made by systemd with these modes.
        line("StateDirectory=tunnel");
        line("StateDirectoryMode=0700");
        line("RuntimeDirectory=tunnel");
        line("RuntimeDirectoryMode=0700");
        line("RuntimeDirectoryPreserve=no");
    }
    for directive in hardening(spec) {
        line(directive);
    }
    line("");
    line("[Install]");
    line(match spec.scope {
        Scope::System => "WantedBy=multi-user.target",
        Scope::User => "WantedBy=default.target",
    });
    out
}

/// Seccomp-based directives work in user units too; those that need a mount namespace or
/// capabilities only in system units.
fn hardening(spec: &ServiceSpec) -> Vec<&'static str> {
    let mut d = vec!["NoNewPrivileges=yes", "LockPersonality=yes", "RestrictSUIDSGID=yes", "RestrictRealtime=yes"];
    match (spec.hardening, spec.scope) {
        (Hardening::Node, Scope::System) => {
            d.extend(["ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectControlGroups=yes"])
        }
        (Hardening::Relay, Scope::System) => d.extend([
            "ProtectSystem=strict",
            "ProtectHome=read-only",
            "PrivateTmp=yes",
            "PrivateDevices=yes",
            "ProtectKernelTunables=yes",
            "ProtectKernelModules=yes",
            "ProtectKernelLogs=yes",
            "ProtectControlGroups=yes",
            "ProtectClock=yes",
            "ProtectHostname=yes",
            "RestrictNamespaces=yes",
            "MemoryDenyWriteExecute=yes",
            "SystemCallArchitectures=native",
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
            // Binding ports below 1024 is all the privilege a relay needs.
            "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
            "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        ]),
        (_, Scope::User) => {}
    }
    d
}

/// `ExecStart=`: each word quoted when it needs to be, `%` and `$` escaped so systemd takes
/// them literally.
fn exec_line(spec: &ServiceSpec) -> String {
    std::iter::once(spec.program.display().to_string())
        .chain(spec.args.iter().cloned())
        .map(|w| quote(&w))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(word: &str) -> String {
    let escaped = word.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%").replace('$', "$$");
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c)) {
        escaped
    } else {
        format!("\"{escaped}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_words_are_quoted_and_escaped() {
        assert_eq!(quote("/usr/local/bin/tunnel"), "/usr/local/bin/tunnel");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("100%"), "\"100%%\"");
        assert_eq!(quote("$HOME"), "\"$$HOME\"");
        assert_eq!(quote(""), "\"\"");
    }
}

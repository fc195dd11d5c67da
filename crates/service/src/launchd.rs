//! launchd property lists: a LaunchDaemon (system) or LaunchAgent (user) that starts at
//! load and is restarted whenever it exits.

use crate::ServiceSpec;

/// The plist for `spec`.
pub fn plist(spec: &ServiceSpec) -> String {
    let mut out = String::from(concat!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
        "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n",
        "<plist version=\"1.0\">\n<dict>\n"
    ));
    let key = |out: &mut String, k: &str| out.push_str(&format!("  <key>{}</key>\n", xml(k)));
    key(&mut out, "Label");
    out.push_str(&format!("  <string>{}</string>\n", xml(&spec.label())));
    key(&mut out, "ProgramArguments");
    out.push_str("  <array>\n");
    for word in std::iter::once(spec.program.display().to_string()).chain(spec.args.iter().cloned()) {
        out.push_str(&format!("    <string>{}</string>\n", xml(&word)));
    }
    out.push_str("  </array>\n");
    key(&mut out, "EnvironmentVariables");
    out.push_str("  <dict>\n    <key>TUNNEL_SERVICE</key>\n    <string>launchd</string>\n  </dict>\n");
    key(&mut out, "RunAtLoad");
    out.push_str("  <true/>\n");
    key(&mut out, "KeepAlive");
    out.push_str("  <true/>\n");
    // launchd restarts a crashing job at most every ten seconds by default; say so explicitly.
    key(&mut out, "ThrottleInterval");
    out.push_str("  <integer>10</integer>\n");
    if let Some(log) = &spec.log_file {
        for k in ["StandardOutPath", "StandardErrorPath"] {
            key(&mut out, k);
            out.push_str(&format!("  <string>{}</string>\n", xml(&log.display().to_string())));
        }
    }
    out.push_str("</dict>\n</plist>\n");
    out
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

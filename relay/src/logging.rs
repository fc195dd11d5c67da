//! Log set-up shared by `tunnel-relay` and `tunnel` (which embeds the relay): human lines on
//! stderr, colored only on a terminal (journald and log files get no ANSI escapes), or one JSON
//! object per line with `TUNNEL_LOG_FORMAT=json`. `TUNNEL_LOG` filters, e.g. `debug`.

use std::io::IsTerminal;

pub fn init(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TUNNEL_LOG").unwrap_or_else(|_| default_level.into());
    let json = std::env::var("TUNNEL_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!json && std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

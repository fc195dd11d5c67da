//! What a forward is, and its OpenSSH-style spellings: `[BIND:]PORT:HOST:HOSTPORT` for `-L`
//! and `-R`, `[BIND:]PORT` for `-D`. IPv6 addresses go in brackets (`[::1]:8080:[fd00::5]:80`).

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

/// The listen address when none is given: this machine only.
const DEFAULT_BIND: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardKind {
    /// `-L`: listen here.
    Local,
    /// `-R`: listen on the peer.
    Remote,
    /// `-D`: a SOCKS5 proxy here.
    Socks,
}

impl std::fmt::Display for ForwardKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Local => "local",
            Self::Remote => "remote",
            Self::Socks => "socks",
        })
    }
}

/// A forward as asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForwardSpec {
    /// A peer, or `ssh:HOST`.
    pub via: String,
    pub kind: ForwardKind,
    pub bind: IpAddr,
    /// 0 lets the system pick; the forward's info shows the port it got.
    pub port: u16,
    /// `HOST:PORT` for `-L` and `-R`; `None` for SOCKS.
    pub to: Option<(String, u16)>,
    /// Allows a listen address other than loopback.
    pub public: bool,
    /// SOCKS5 username/password (RFC 1929) the proxy requires; `None`: no authentication.
    pub socks_auth: Option<SocksAuth>,
}

/// SOCKS5 credentials. Never printed: `Debug` shows the user only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocksAuth {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for SocksAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocksAuth").field("user", &self.user).field("password", &"<hidden>").finish()
    }
}

/// Splits at `:` outside brackets; bracketed parts come back without their brackets.
fn fields(text: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let (field, after) = match rest.strip_prefix('[') {
            Some(inner) => {
                let end = inner.find(']').ok_or("an opening `[` has no `]`")?;
                let after = &inner[end + 1..];
                if !after.is_empty() && !after.starts_with(':') {
                    return Err(format!("unexpected {after:?} after `]`"));
                }
                (&inner[..end], after)
            }
            None => match rest.find(':') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            },
        };
        out.push(field);
        match after.strip_prefix(':') {
            Some(next) => rest = next,
            None => return Ok(out),
        }
    }
}

fn port(text: &str, what: &str, zero_ok: bool) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) if !zero_ok => Err(format!("{what} 0 is not a port")),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("{what} {text:?} is not a port number (0-65535)")),
    }
}

fn bind(text: &str) -> Result<IpAddr, String> {
    match text {
        "localhost" => Ok(DEFAULT_BIND),
        "*" | "" => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        ip => ip.parse().map_err(|_| format!("listen address {ip:?} is not an IP address, `localhost` or `*`")),
    }
}

fn host(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 253 || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("destination host {text:?} is not a host name or address"));
    }
    Ok(text.to_owned())
}

/// Parses `-L`/`-R`'s `[BIND:]PORT:HOST:HOSTPORT` into (bind, port, (host, hostport)).
fn parse_forward(text: &str) -> Result<(IpAddr, u16, (String, u16)), String> {
    let bad = |why: String| format!("forward {text:?}: {why}; want [BIND:]PORT:HOST:HOSTPORT");
    let f = fields(text).map_err(bad)?;
    let (b, p, h, hp) = match f.as_slice() {
        [p, h, hp] => (DEFAULT_BIND, *p, *h, *hp),
        [b, p, h, hp] => (bind(b).map_err(bad)?, *p, *h, *hp),
        _ => return Err(bad(format!("{} fields", f.len()))),
    };
    Ok((
        b,
        port(p, "listen port", true).map_err(bad)?,
        (host(h).map_err(bad)?, port(hp, "destination port", false).map_err(bad)?),
    ))
}

/// Parses `-D`'s `[BIND:]PORT`.
fn parse_dynamic(text: &str) -> Result<(IpAddr, u16), String> {
    let bad = |why: String| format!("SOCKS forward {text:?}: {why}; want [BIND:]PORT");
    let f = fields(text).map_err(bad)?;
    match f.as_slice() {
        [p] => Ok((DEFAULT_BIND, port(p, "listen port", true).map_err(bad)?)),
        [b, p] => Ok((bind(b).map_err(bad)?, port(p, "listen port", true).map_err(bad)?)),
        _ => Err(bad(format!("{} fields", f.len()))),
    }
}

impl ForwardSpec {
    /// A forward from its OpenSSH spelling: `[BIND:]PORT:HOST:HOSTPORT` for `Local` and
    /// `Remote`, `[BIND:]PORT` for `Socks`. See [`ForwardSpec::validate`] for the rest.
    pub fn parse(
        via: &str,
        kind: ForwardKind,
        text: &str,
        public: bool,
        socks_auth: Option<SocksAuth>,
    ) -> Result<Self, String> {
        let (bind, port, to) = match kind {
            ForwardKind::Socks => {
                let (bind, port) = parse_dynamic(text)?;
                (bind, port, None)
            }
            ForwardKind::Local | ForwardKind::Remote => {
                let (bind, port, to) = parse_forward(text)?;
                (bind, port, Some(to))
            }
        };
        Ok(Self { via: via.to_owned(), kind, bind, port, to, public, socks_auth })
    }

    /// The checks that need no network: ports, and `--public` for a wide listen address.
    pub fn validate(&self) -> Result<(), String> {
        if self.kind == ForwardKind::Socks && self.to.is_some() {
            return Err("a SOCKS forward takes no destination: each client names its own".into());
        }
        if self.kind != ForwardKind::Socks && self.to.is_none() {
            return Err(format!("a {} forward needs a destination HOST:PORT", self.kind));
        }
        if !self.bind.is_loopback() && !self.public {
            return Err(format!(
                "listening on {} reaches beyond this machine; pass --public to mean it",
                self.listen_addr()
            ));
        }
        if let Some(auth) = &self.socks_auth {
            if self.kind != ForwardKind::Socks {
                return Err("SOCKS credentials are for -D forwards".into());
            }
            if auth.user.is_empty() || auth.user.len() > 255 || auth.password.is_empty() || auth.password.len() > 255 {
                return Err("a SOCKS5 username and password are each 1 to 255 bytes (RFC 1929)".into());
            }
        }
        Ok(())
    }

    pub(crate) fn listen_addr(&self) -> String {
        crate::policy::host_port(&self.bind.to_string(), self.port)
    }

    pub(crate) fn to_text(&self) -> Option<String> {
        self.to.as_ref().map(|(h, p)| crate::policy::host_port(h, *p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssh_spellings() {
        let lo = DEFAULT_BIND;
        assert_eq!(parse_forward("8080:db:5432").unwrap(), (lo, 8080, ("db".into(), 5432)));
        assert_eq!(
            parse_forward("0.0.0.0:8080:10.0.0.5:80").unwrap(),
            ("0.0.0.0".parse().unwrap(), 8080, ("10.0.0.5".into(), 80))
        );
        assert_eq!(
            parse_forward("[::1]:0:[fd00::5]:443").unwrap(),
            ("::1".parse().unwrap(), 0, ("fd00::5".into(), 443))
        );
        assert_eq!(parse_forward("localhost:1:h:2").unwrap(), (lo, 1, ("h".into(), 2)));
        assert_eq!(parse_dynamic("1080").unwrap(), (lo, 1080));
        assert_eq!(parse_dynamic("*:1080").unwrap(), ("0.0.0.0".parse().unwrap(), 1080));
    }

    #[test]
    fn malformed_specs_say_what_is_wrong() {
        for (text, why) in [
            ("8080", "1 fields"),
            ("8080:db", "2 fields"),
            ("80800:db:1", "listen port"),
            ("8080:db:0", "destination port 0"),
            ("8080:db:http", "\"http\" is not a port"),
            ("web:8080:db:1", "not an IP address"),
            ("[::1:8080:db:1", "no `]`"),
            ("8080:[db]x:1", "after `]`"),
            ("8080::1", "destination host"),
            ("1:2:3:4:5", "5 fields"),
        ] {
            let err = parse_forward(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
            assert!(err.contains("[BIND:]PORT:HOST:HOSTPORT"), "{err}");
        }
        assert!(parse_dynamic("a:b:c").unwrap_err().contains("3 fields"));
        assert!(parse_dynamic("99999").unwrap_err().contains("listen port"));
    }

    #[test]
    fn wide_listen_addresses_need_public() {
        let spec = ForwardSpec {
            via: "web".into(),
            kind: ForwardKind::Local,
            bind: "0.0.0.0".parse().unwrap(),
            port: 8080,
            to: Some(("db".into(), 1)),
            public: false,
            socks_auth: None,
        };
        assert!(spec.validate().unwrap_err().contains("--public"));
        assert_eq!(ForwardSpec { public: true, ..spec.clone() }.validate(), Ok(()));
        let ssh_remote = ForwardSpec { kind: ForwardKind::Remote, via: "ssh:db".into(), public: true, ..spec };
        assert!(ssh_remote.validate().is_ok(), "an SSH host listens for -R too (tcpip-forward)");
        let auth = SocksAuth { user: "u".into(), password: "secret-pw".into() };
        assert!(!format!("{auth:?}").contains("secret-pw"));
    }
}

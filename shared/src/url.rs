//! A strict parser for upstream base URLs: `http(s)://host[:port][/path]`.
//!
//! Only what an upstream needs is accepted: no user info, no query, no
//! fragment. IPv6 literals go in brackets.

use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub tls: bool,
    /// Host name or IP literal, without brackets.
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash (`/v1`, or empty).
    pub path_prefix: String,
}

impl BaseUrl {
    pub fn parse(s: &str) -> Result<BaseUrl, String> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("`{s}` must start with http:// or https://"));
        };
        if rest.contains(['?', '#']) {
            return Err(format!("`{s}` must not have a query or fragment"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(format!("`{s}` must not carry user info; use api_key"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']').ok_or_else(|| format!("`{s}`: unclosed `[` in host"))?;
            let host = &v6[..end];
            let after = &v6[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(format!("`{s}`: junk after IPv6 host")),
            };
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("`{s}`: `{host}` is not an IPv6 address"));
            }
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("`{s}` has no host"));
        }
        if !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b)) {
            return Err(format!("`{s}`: host `{host}` has characters a host name cannot have"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| format!("`{s}`: port `{p}` is not a number from 1 to 65535"))?,
            None if tls => 443,
            None => 80,
        };
        if port == 0 {
            return Err(format!("`{s}`: port 0 is not a valid upstream port"));
        }
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!("`{s}`: the path has spaces or control characters"));
        }
        Ok(BaseUrl { tls, host: host.to_string(), port, path_prefix: path.trim_end_matches('/').to_string() })
    }

    /// The IP address, when the host is a literal (no DNS needed).
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The `Host` header value: the port is left out when it is the scheme's default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let default_port = if self.tls { 443 } else { 80 };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let u = BaseUrl::parse("https://api.openai.com/v1").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port, u.path_prefix.as_str()), (true, "api.openai.com", 443, "/v1"));
        assert_eq!(u.host_header(), "api.openai.com");
        let u = BaseUrl::parse("http://127.0.0.1:9000/v1/").unwrap();
        assert_eq!((u.tls, u.port, u.path_prefix.as_str()), (false, 9000, "/v1"));
        assert_eq!(u.host_header(), "127.0.0.1:9000");
        assert!(u.ip().is_some());
        let u = BaseUrl::parse("http://[::1]:8080").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path_prefix.as_str()), ("::1", 8080, ""));
        assert_eq!(u.host_header(), "[::1]:8080");
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in [
            "ftp://x",
            "http://",
            "http://user:pw@host",
            "http://host:99999",
            "http://host:0",
            "http://host/v1?x=1",
            "http://ho st/",
            "http://[::1",
            "http://host/a b",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}

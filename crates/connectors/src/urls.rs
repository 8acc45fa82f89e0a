//! URLs as every connector handles them: the SSRF guard (at configuration time in
//! [`UrlPolicy::check`], at connection time in [`PublicOnlyResolver`] and
//! [`UrlPolicy::check_request`]), how a URL is shown in a message (never its user, password,
//! query or fragment: [`shown`]), and how a request path is appended to a configured base
//! ([`join_path`], [`join_segments`]).
//!
//! It must not resolve names itself at configuration time: a name's addresses change, so
//! names are checked where the connection is made.

use crate::ConnectorError;
use crate::settings::looks_like_secret;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

/// Whether plain-HTTP and private-network URLs are allowed (SSRF guard).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    pub allow_private_networks: bool,
}

impl UrlPolicy {
    /// Parses and checks a base URL from an integration's settings. `what` names the setting
    /// in the error. No error repeats the URL's user, password or query (see [`shown`]).
    pub fn check(&self, raw: &str, what: &str) -> Result<Url, ConnectorError> {
        let url = Url::parse(raw.trim()).map_err(|e| {
            // The parser's messages never quote the input; the input may hold a password.
            ConnectorError::fatal(format!(
                "{what} is not a valid URL ({e}); expected https://host[:port][/path]"
            ))
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConnectorError::fatal(format!(
                "{what} `{}` must not carry a user name or password; put secrets in credentials",
                shown(&url)
            )));
        }
        if let Some(name) = url
            .query_pairs()
            .map(|(name, _)| name)
            .find(|name| looks_like_secret(name))
        {
            return Err(ConnectorError::fatal(format!(
                "{what} `{}` carries the query parameter `{name}`, which looks like a secret; settings are stored in clear and shown to admins. Move it to credentials",
                shown(&url)
            )));
        }
        self.check_request(&url)
            .map_err(|reason| ConnectorError::fatal(format!("{what} {reason}")))?;
        Ok(url)
    }

    /// The connection-time check of a URL about to be requested (a configured one, or one an
    /// ERP handed back, such as a next-page link): scheme and literal host. Names are
    /// checked by [`PublicOnlyResolver`], but reqwest never asks a resolver about a literal
    /// IP, so literal addresses are refused here. The reason starts with the shown URL.
    pub fn check_request(&self, url: &Url) -> Result<(), String> {
        let display = shown(url);
        match url.scheme() {
            "https" => {}
            "http" if self.allow_private_networks => {}
            "http" => {
                return Err(format!(
                    "`{display}` uses plain http://; use https:// (plain HTTP is allowed only when [http] allow_private_networks is set, for sandboxes)"
                ));
            }
            other => {
                return Err(format!(
                    "`{display}` has scheme `{other}`; expected https://"
                ));
            }
        }
        let Some(host) = url.host() else {
            return Err(format!("`{display}` has no host"));
        };
        if !self.allow_private_networks && is_private_host(&host) {
            return Err(format!(
                "`{display}` points at a loopback or private address, which is refused (SSRF guard); set [http] allow_private_networks for sandboxes"
            ));
        }
        Ok(())
    }
}

/// A URL as error messages and logs may show it: `scheme://host[:port]/path`, without the
/// user, password, query and fragment, which may hold secrets.
pub fn shown(url: &Url) -> String {
    match url.host_str() {
        Some(host) => {
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{host}{port}{}", url.scheme(), url.path())
        }
        // `mailto:user:pw@host`: everything after the scheme may be secret.
        None => format!("{}:…", url.scheme()),
    }
}

/// Appends query parameters (percent-encoded) to a request URL.
pub fn append_query(url: &mut Url, query: &[(&str, String)]) {
    if query.is_empty() {
        return;
    }
    let mut pairs = url.query_pairs_mut();
    for (k, v) in query {
        pairs.append_pair(k, v);
    }
}

/// `base` with the `/`-separated segments of `path` appended, whether `base` ends with a
/// slash or not (`https://api.xero.com` + `/connections` is `https://api.xero.com/connections`,
/// never `//connections`). Each segment is percent-encoded as a path segment needs.
pub fn join_path(base: &Url, path: &str) -> Url {
    join_segments(base, path.split('/').filter(|s| !s.is_empty()))
}

/// `base` with `segments` appended, each one segment even if it holds a `/` (encoded as
/// `%2F`). An empty last segment leaves a trailing slash (a service root).
pub fn join_segments<'a>(base: &Url, segments: impl IntoIterator<Item = &'a str>) -> Url {
    let mut url = base.clone();
    // Only URLs that cannot be a base (`mailto:`) have no segments; the policy admits none.
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// A host a request must not reach unless private networks are allowed.
fn is_private_host(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(name) => is_local_name(name),
        Host::Ipv4(v4) => is_private_v4(*v4),
        Host::Ipv6(v6) => is_private_v6(*v6),
    }
}

/// `localhost` and its subdomains (RFC 6761), with or without the trailing dot of a fully
/// qualified name (`localhost.`).
fn is_local_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

pub(crate) fn is_private_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => is_private_v6(v6),
    }
}

/// Every IPv4 address that is not a public unicast one: "this network", private, loopback,
/// carrier-grade NAT, link-local, IETF protocol assignments, documentation, benchmarking,
/// the 6to4 relay anycast, multicast, reserved and broadcast.
fn is_private_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    a == 0
        || a == 10
        || a == 127
        || (a == 100 && (b & 0xc0) == 64)
        || (a == 169 && b == 254)
        || (a == 172 && (b & 0xf0) == 16)
        || (a == 192 && b == 168)
        || (a == 192 && b == 0 && (c == 0 || c == 2))
        || (a == 192 && b == 88 && c == 99)
        || (a == 198 && (b & 0xfe) == 18)
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224
}

/// Non-public IPv6 addresses, and IPv6 addresses that reach an IPv4 one which is not public:
/// IPv4-compatible (`::a.b.c.d`, deprecated), IPv4-mapped (`::ffff:a.b.c.d`) and translated
/// (`::ffff:0:a.b.c.d`), NAT64 (`64:ff9b::/96`, and the local-use `64:ff9b:1::/48`), 6to4
/// (`2002:AABB:CCDD::/48`) and Teredo (`2001:0::/32`, client address inverted in the last
/// 32 bits).
fn is_private_v6(v6: Ipv6Addr) -> bool {
    let s = v6.segments();
    let v4_at = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    let low_v4 = v4_at(s[6], s[7]);
    match s {
        // ::/96 holds :: and ::1 and the deprecated IPv4-compatible addresses: none is a
        // public destination.
        [0, 0, 0, 0, 0, 0, _, _] => true,
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] => is_private_v4(low_v4),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => is_private_v4(low_v4),
        [0x64, 0xff9b, 1, ..] => true,
        [0x2002, hi, lo, ..] => is_private_v4(v4_at(hi, lo)),
        [0x2001, 0, ..] => is_private_v4(Ipv4Addr::from(!u32::from(low_v4))),
        // Documentation.
        [0x2001, 0xdb8, ..] => true,
        // Discard-only.
        [0x100, 0, 0, 0, ..] => true,
        [first, ..] => {
            (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || (first & 0xffc0) == 0xfec0 // site local (deprecated)
                || (first & 0xff00) == 0xff00 // multicast
        }
    }
}

/// Resolves host names and keeps only public addresses, so a name that points inside our
/// network (a typo, DNS rebinding) is refused at connection time, not only literal IPs at
/// configuration time.
#[derive(Debug, Clone, Copy)]
pub struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<std::net::SocketAddr> = resolved
                .into_iter()
                .filter(|a| !is_private_ip(a.ip()))
                .collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} resolves only to loopback or private addresses, which are refused (SSRF guard; set [http] allow_private_networks for sandboxes)"
                )
                .into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: UrlPolicy = UrlPolicy {
        allow_private_networks: false,
    };

    #[test]
    fn every_non_public_address_form_is_refused_at_configuration_and_request_time() {
        for bad in [
            "https://127.0.0.1:8080",
            "https://127.1/",
            "https://0x7f000001/",
            "https://2130706433/",
            "https://127.0.0.1./",
            "https://0.0.0.0/",
            "https://10.1.2.3",
            "https://172.16.0.1/",
            "https://192.168.0.1",
            "https://100.64.0.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://224.0.0.1/",
            "https://255.255.255.255/",
            "https://localhost",
            "https://LocalHost/",
            "https://localhost./",
            "https://localhost../",
            "https://foo.localhost/",
            "https://foo.localhost./",
            "https://[::]/",
            "https://[::1]/x",
            // IPv4-compatible.
            "https://[::127.0.0.1]/",
            "https://[::10.0.0.1]/",
            "https://[::8.8.8.8]/",
            // IPv4-mapped and translated.
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:169.254.169.254]/",
            "https://[::ffff:0:10.0.0.1]/",
            // NAT64, well-known and local-use prefixes.
            "https://[64:ff9b::7f00:1]/",
            "https://[64:ff9b::192.168.1.1]/",
            "https://[64:ff9b:1::8.8.8.8]/",
            // 6to4.
            "https://[2002:7f00:1::]/",
            "https://[2002:a00:1::1]/",
            "https://[2002:a9fe:a9fe::]/",
            // Teredo whose client is 127.0.0.1 (inverted: 80ff:fffe).
            "https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
            "https://[fd00::1]/",
            "https://[fe80::1]/",
            "https://[fec0::1]/",
            "https://[ff02::1]/",
            "https://[2001:db8::1]/",
        ] {
            let err = STRICT
                .check(bad, "api_url")
                .expect_err(&format!("{bad} passed the configuration check"));
            assert!(err.to_string().contains("SSRF guard"), "{bad}: {err}");
            let parsed = Url::parse(bad).unwrap();
            assert!(
                STRICT.check_request(&parsed).is_err(),
                "{bad} passed the request check"
            );
        }
        for good in [
            "https://api.example.com",
            "https://8.8.8.8/",
            "https://[2606:4700::1111]/",
            "https://[::ffff:8.8.8.8]/",
            "https://[64:ff9b::808:808]/",
            "https://[2002:808:808::]/",
            "https://localhost.example.com/",
            "https://mylocalhost/",
        ] {
            assert!(STRICT.check(good, "api_url").is_ok(), "{good} was refused");
        }
        let lax = UrlPolicy {
            allow_private_networks: true,
        };
        assert!(
            lax.check("http://127.0.0.1:8080/custom_api", "api_url")
                .is_ok()
        );
        assert!(lax.check("https://[::127.0.0.1]/", "api_url").is_ok());
    }

    #[test]
    fn no_url_error_shows_the_user_the_password_or_the_query() {
        for bad in [
            "https://alice:hunter2pw@example.com/x",
            "http://alice:hunter2pw@example.com/x",
            "ftp://alice:hunter2pw@example.com/x",
            "gopher://alice:hunter2pw@example.com/x",
            "https://alice:hunter2pw@example.com:99999/x",
            "https://alice:hunter2pw@example.com:port/x",
            "https://alice:hunter2pw@[::1/x",
            "mailto:alice:hunter2pw@example.com",
            "http://example.com/x?api_key=sk_live_42",
            "https://example.com/x?api_key=sk_live_42",
            "https://example.com/x?ApiKey=sk_live_42",
            "https://example.com/x?v=1&access-token=sk_live_42",
            "https://example.com/x?X-Amz-Signature=sk_live_42",
            "https://example.com/x?sig=sk_live_42",
            "https://127.0.0.1/x?page=sk_live_42",
            "ftp://example.com/x?page=sk_live_42",
        ] {
            let err = STRICT.check(bad, "settings.api_url").unwrap_err();
            let message = err.to_string();
            assert_eq!(err.class(), "fatal", "{bad}");
            assert!(message.starts_with("settings.api_url "), "{bad}: {message}");
            for secret in ["alice", "hunter2pw", "sk_live_42"] {
                assert!(!message.contains(secret), "{bad}: {message}");
            }
        }
        // A query that holds nothing secret is kept, and shown nowhere.
        let url = STRICT
            .check("https://example.com/v1?company=7", "api_url")
            .unwrap();
        assert_eq!(url.query(), Some("company=7"));
        assert_eq!(shown(&url), "https://example.com/v1");
        let with_port = Url::parse("https://u:p@example.com:8443/a/b?k=v#frag").unwrap();
        assert_eq!(shown(&with_port), "https://example.com:8443/a/b");
    }

    #[test]
    fn paths_join_a_base_with_or_without_a_path_or_a_trailing_slash() {
        for (base, path, joined) in [
            (
                "https://api.xero.com",
                "/connections",
                "https://api.xero.com/connections",
            ),
            (
                "https://api.xero.com/",
                "/api.xro/2.0/Contacts",
                "https://api.xero.com/api.xro/2.0/Contacts",
            ),
            (
                "https://h.example/xero",
                "/api.xro/2.0/Contacts",
                "https://h.example/xero/api.xro/2.0/Contacts",
            ),
            (
                "https://h.example/xero/",
                "api.xro/2.0/Contacts",
                "https://h.example/xero/api.xro/2.0/Contacts",
            ),
            (
                "https://h.example/a?company=7",
                "/b",
                "https://h.example/a/b?company=7",
            ),
        ] {
            let base = Url::parse(base).unwrap();
            assert_eq!(join_path(&base, path).as_str(), joined);
        }
        let base = Url::parse("https://h.example/sap/").unwrap();
        assert_eq!(
            join_segments(&base, ["b1s", "v1", "Items('A/1 ?')"]).as_str(),
            "https://h.example/sap/b1s/v1/Items('A%2F1%20%3F')"
        );
        assert_eq!(
            join_segments(&base, ["b1s", "v1", ""]).as_str(),
            "https://h.example/sap/b1s/v1/"
        );
    }
}

//! Authentication of REST calls: Token-Based Authentication (OAuth 1.0a, RFC 5849, with
//! HMAC-SHA256), the signature recomputed from the request as the client addressed it, and
//! bearer tokens issued by the M2M token endpoint ([`super::jwt`]).

use super::errors::NsError;
use super::{AccountState, NetSuiteAccountConfig};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;

/// How far a TBA timestamp may be from the server's clock, and how long nonces are kept.
const TIMESTAMP_WINDOW_SECS: i64 = 300;

/// What a REST request presents to be authenticated.
pub(crate) struct Presented<'a> {
    pub authorization: Option<&'a str>,
    pub method: &'a str,
    /// `http://host:port/netsuite/{acct}/services/…`, without the query.
    pub base_uri: &'a str,
    pub query: Option<&'a str>,
}

/// Why a TBA header was refused (all answer `401 INVALID_LOGIN`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TbaRefusal {
    Malformed(String),
    Realm,
    SignatureMethod,
    UnknownToken,
    StaleTimestamp,
    Signature,
    ReplayedNonce,
}

/// Authenticates a REST request by TBA or bearer token, counting what it presented.
pub(crate) fn authenticate(
    state: &mut AccountState,
    presented: &Presented<'_>,
    now: DateTime<Utc>,
) -> Result<(), NsError> {
    let header = presented.authorization.unwrap_or("").trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let outcome = if scheme.eq_ignore_ascii_case("OAuth") {
        state.counters.tba_requests += 1;
        let result = verify_tba(
            rest,
            presented,
            &state.config,
            &mut state.nonces,
            now.timestamp(),
        );
        if result == Err(TbaRefusal::Signature) {
            state.counters.rejected_signatures += 1;
        }
        result.map_err(|why| tracing::info!(?why, "NetSuite TBA refused"))
    } else if scheme.eq_ignore_ascii_case("Bearer") {
        state.counters.bearer_requests += 1;
        match state.tokens.get(rest.trim()) {
            Some(expires) if *expires > now => Ok(()),
            _ => {
                tracing::info!("NetSuite bearer token unknown or expired");
                Err(())
            }
        }
    } else {
        Err(())
    };
    outcome.map_err(|()| {
        state.counters.rejected_auth += 1;
        NsError::invalid_login()
    })
}

/// Verifies the parameters of an `OAuth` header (after the scheme) against the request.
pub(crate) fn verify_tba(
    params: &str,
    presented: &Presented<'_>,
    config: &NetSuiteAccountConfig,
    nonces: &mut HashMap<(String, String), i64>,
    now: i64,
) -> Result<(), TbaRefusal> {
    let header = parse_header(params).map_err(TbaRefusal::Malformed)?;
    let get = |name: &str| {
        header
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| TbaRefusal::Malformed(format!("{name} is missing")))
    };
    // NetSuite wants the account id as it writes it: `1234567_SB1`, not `1234567-sb1`.
    if get("realm")? != config.account_id {
        return Err(TbaRefusal::Realm);
    }
    if get("oauth_signature_method")? != "HMAC-SHA256" {
        return Err(TbaRefusal::SignatureMethod);
    }
    if header
        .iter()
        .any(|(n, v)| n == "oauth_version" && v != "1.0")
    {
        return Err(TbaRefusal::Malformed("oauth_version must be 1.0".into()));
    }
    let consumer_key = get("oauth_consumer_key")?;
    let token_id = get("oauth_token")?;
    let token = config
        .tba
        .iter()
        .find(|t| t.consumer_key == consumer_key && t.token_id == token_id)
        .ok_or(TbaRefusal::UnknownToken)?;
    let timestamp: i64 = get("oauth_timestamp")?
        .parse()
        .map_err(|_| TbaRefusal::Malformed("oauth_timestamp is not a number".into()))?;
    if (now - timestamp).abs() > TIMESTAMP_WINDOW_SECS {
        return Err(TbaRefusal::StaleTimestamp);
    }
    let nonce = get("oauth_nonce")?;
    let signature = get("oauth_signature")?;
    let mut signed: Vec<(String, String)> = header
        .iter()
        .filter(|(n, _)| n.starts_with("oauth_") && n != "oauth_signature")
        .cloned()
        .collect();
    signed.extend(query_params(presented.query));
    let base = base_string(presented.method, presented.base_uri, &signed);
    if !signature_matches(
        &base,
        &token.consumer_secret,
        &token.token_secret,
        signature,
    ) {
        tracing::debug!(%base, "NetSuite TBA signature mismatch; the base string expected");
        return Err(TbaRefusal::Signature);
    }
    nonces.retain(|_, at| (now - *at).abs() <= 2 * TIMESTAMP_WINDOW_SECS);
    let key = (token_id.to_owned(), nonce.to_owned());
    if nonces.contains_key(&key) {
        return Err(TbaRefusal::ReplayedNonce);
    }
    nonces.insert(key, timestamp);
    Ok(())
}

/// The `name="value"` pairs of an `OAuth` header, values percent-decoded. Commas separate
/// pairs; whitespace around them is optional. A parameter given twice is refused.
pub(crate) fn parse_header(params: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for part in params.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not name=\"value\""))?;
        let name = name.trim();
        let value = value
            .trim()
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| format!("the value of {name} is not quoted"))?;
        let value = percent_decode(value).ok_or_else(|| format!("{name} is badly encoded"))?;
        if out.iter().any(|(n, _)| n == name) {
            return Err(format!("{name} is given twice"));
        }
        out.push((name.to_owned(), value));
    }
    Ok(out)
}

/// Query parameters, decoded as `application/x-www-form-urlencoded` (RFC 5849 §3.4.1.3.1).
pub(crate) fn query_params(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(n, v)| (n.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// RFC 3986 percent-encoding as OAuth wants it: unreserved characters kept, every other byte
/// `%XX` in upper case.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The base string URI (RFC 5849 §3.4.1.2): scheme and host in lower case, the port only
/// when it is not the scheme's default, the path as sent.
pub(crate) fn base_uri(scheme: &str, host: &str, path: &str) -> String {
    let scheme = scheme.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    let host = match (scheme.as_str(), host.rsplit_once(':')) {
        ("http", Some((name, "80"))) | ("https", Some((name, "443"))) => name.to_owned(),
        _ => host,
    };
    format!("{scheme}://{host}{path}")
}

/// The signature base string (RFC 5849 §3.4.1.1) from decoded parameters.
pub(crate) fn base_string(method: &str, base_uri: &str, params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(n, v)| (percent_encode(n), percent_encode(v)))
        .collect();
    encoded.sort();
    let normalized = encoded
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        percent_encode(base_uri),
        percent_encode(&normalized)
    )
}

fn mac(consumer_secret: &str, token_secret: &str) -> Option<Hmac<Sha256>> {
    let key = format!(
        "{}&{}",
        percent_encode(consumer_secret),
        percent_encode(token_secret)
    );
    Hmac::<Sha256>::new_from_slice(key.as_bytes()).ok()
}

/// base64(HMAC-SHA256(`enc(consumer secret)&enc(token secret)`, base string)); what a client
/// sends, for the unit tests.
#[cfg(test)]
pub(crate) fn sign(base: &str, consumer_secret: &str, token_secret: &str) -> String {
    mac(consumer_secret, token_secret)
        .map(|mut mac| {
            mac.update(base.as_bytes());
            STANDARD.encode(mac.finalize().into_bytes())
        })
        .unwrap_or_default()
}

/// Compares in constant time.
fn signature_matches(base: &str, consumer_secret: &str, token_secret: &str, given: &str) -> bool {
    let (Some(mut mac), Ok(given)) = (mac(consumer_secret, token_secret), STANDARD.decode(given))
    else {
        return false;
    };
    mac.update(base.as_bytes());
    mac.verify_slice(&given).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// RFC 5849 §3.4.1.1: the request, its parameters (query, header and form body, the
    /// latter two decoded) and the published base string.
    #[test]
    fn the_rfc_5849_example_base_string_is_reproduced() {
        let header = parse_header(
            r#"realm="Example",
  oauth_consumer_key="9djdj82h48djs9d2",
  oauth_token="kkk9d7dh3k39sjv7",
  oauth_signature_method="HMAC-SHA1",
  oauth_timestamp="137131201",
  oauth_nonce="7d8f3e4a",
  oauth_signature="bYT5CMsGcbgUdFHObYMEfcx6bsw%3D""#,
        )
        .unwrap();
        assert_eq!(header[6].1, "bYT5CMsGcbgUdFHObYMEfcx6bsw=");
        let mut params: Vec<(String, String)> = header
            .into_iter()
            .filter(|(n, _)| n != "realm" && n != "oauth_signature")
            .collect();
        params.extend(query_params(Some("b5=%3D%253D&a3=a&c%40=&a2=r%20b")));
        params.extend(query_params(Some("c2&a3=2+q")));
        let uri = base_uri("http", "EXAMPLE.COM:80", "/request");
        assert_eq!(uri, "http://example.com/request");
        assert_eq!(
            base_string("POST", &uri, &params),
            "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q\
             %26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_\
             key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_m\
             ethod%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk\
             9d7dh3k39sjv7"
        );
    }

    #[test]
    fn ports_are_kept_unless_default() {
        assert_eq!(
            base_uri("http", "127.0.0.1:8080", "/a"),
            "http://127.0.0.1:8080/a"
        );
        assert_eq!(
            base_uri("https", "Host.Example:443", "/a"),
            "https://host.example/a"
        );
        assert_eq!(percent_encode("a b+~*"), "a%20b%2B~%2A");
    }

    #[test]
    fn a_signature_verifies_only_over_its_own_base_string() {
        let base = base_string("GET", "http://h/x", &pairs(&[("a", "1")]));
        let signature = sign(&base, "cs&", "ts");
        assert!(signature_matches(&base, "cs&", "ts", &signature));
        assert!(!signature_matches(&base, "cs&", "other", &signature));
        assert!(!signature_matches(&(base + "x"), "cs&", "ts", &signature));
        assert!(!signature_matches("b", "cs", "ts", "not base64!"));
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert!(parse_header(r#"a="1", a="2""#).is_err());
        assert!(parse_header(r"a=1").is_err());
        assert!(parse_header(r#"a="%zz""#).is_err());
        assert_eq!(
            parse_header(r#"a="1",b="x%20y""#).unwrap(),
            pairs(&[("a", "1"), ("b", "x y")])
        );
    }
}

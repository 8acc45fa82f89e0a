//! Token-Based Authentication: OAuth 1.0a (RFC 5849) signatures with HMAC-SHA256, the only
//! method NetSuite accepts since 2023.1, in the `Authorization` header with the account id as
//! `realm`. Pure: the caller gives the timestamp and the nonce.

use base64::Engine;
use hmac::{Mac, digest::KeyInit};
use url::Url;

/// A TBA token: the integration record's consumer key and secret, and the access token's
/// id and secret.
#[derive(Clone)]
pub struct TbaCredentials {
    pub consumer_key: String,
    pub consumer_secret: String,
    pub token_id: String,
    pub token_secret: String,
}

impl std::fmt::Debug for TbaCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TbaCredentials")
            .field("consumer_key", &self.consumer_key)
            .field("token_id", &self.token_id)
            .finish_non_exhaustive()
    }
}

/// RFC 3986 §2.1 percent-encoding as RFC 5849 §3.6 requires: only the unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`) stay, every other byte is `%XX` in upper case.
pub fn percent_encode(text: &str) -> String {
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

/// The base string URI (RFC 5849 §3.4.1.2): scheme and host in lower case, the port only
/// when it is not the scheme's default, the path; no query, no fragment.
fn base_uri(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{}://{host}{port}{}",
        url.scheme().to_ascii_lowercase(),
        url.path()
    )
}

/// The signature base string (RFC 5849 §3.4.1): the method, the base URI, and every query
/// parameter of `url`, every `extra` parameter (a form body's) and every protocol
/// parameter, normalized (§3.4.1.3.2: encoded, sorted by name then value). `oauth` must not
/// hold `realm` or `oauth_signature`.
pub fn base_string(
    method: &str,
    url: &Url,
    oauth: &[(String, String)],
    extra: &[(String, String)],
) -> String {
    let mut params: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (percent_encode(&k), percent_encode(&v)))
        .chain(
            oauth
                .iter()
                .chain(extra)
                .map(|(k, v)| (percent_encode(k), percent_encode(v))),
        )
        .collect();
    params.sort();
    let normalized = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        percent_encode(&base_uri(url)),
        percent_encode(&normalized)
    )
}

/// `base64(HMAC(key, text))` with the MAC `M` (HMAC-SHA256 for NetSuite); `None` only for a
/// MAC that refuses the key's length, which HMAC never does.
pub fn hmac_base64<M: Mac + KeyInit>(key: &str, text: &str) -> Option<String> {
    let mut mac = <M as KeyInit>::new_from_slice(key.as_bytes()).ok()?;
    mac.update(text.as_bytes());
    Some(base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// The signing key (RFC 5849 §3.4.2): both secrets encoded, joined by `&`.
pub fn signing_key(consumer_secret: &str, token_secret: &str) -> String {
    format!(
        "{}&{}",
        percent_encode(consumer_secret),
        percent_encode(token_secret)
    )
}

/// The `Authorization` header of one request: `OAuth realm="…", oauth_…="…"`.
pub fn authorization(
    credentials: &TbaCredentials,
    realm: &str,
    method: &str,
    url: &Url,
    timestamp: i64,
    nonce: &str,
) -> Option<String> {
    let oauth: Vec<(String, String)> = [
        ("oauth_consumer_key", credentials.consumer_key.as_str()),
        ("oauth_nonce", nonce),
        ("oauth_signature_method", "HMAC-SHA256"),
        ("oauth_timestamp", &timestamp.to_string()),
        ("oauth_token", credentials.token_id.as_str()),
        ("oauth_version", "1.0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let base = base_string(method, url, &oauth, &[]);
    let signature = hmac_base64::<hmac::Hmac<sha2::Sha256>>(
        &signing_key(&credentials.consumer_secret, &credentials.token_secret),
        &base,
    )?;
    let mut parts = vec![format!("realm=\"{}\"", percent_encode(realm))];
    parts.extend(
        oauth
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", percent_encode(v))),
    );
    parts.push(format!(
        "oauth_signature=\"{}\"",
        percent_encode(&signature)
    ));
    Some(format!("OAuth {}", parts.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// RFC 5849 §3.4.1.1: the published base string of its example request.
    #[test]
    fn the_base_string_of_rfc_5849s_example_is_reproduced() {
        let url = Url::parse("http://example.com/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b").unwrap();
        let oauth = pairs(&[
            ("oauth_consumer_key", "9djdj82h48djs9d2"),
            ("oauth_token", "kkk9d7dh3k39sjv7"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "137131201"),
            ("oauth_nonce", "7d8f3e4a"),
        ]);
        let body = pairs(&[("c2", ""), ("a3", "2 q")]);
        assert_eq!(
            base_string("POST", &url, &oauth, &body),
            "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q%26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk9d7dh3k39sjv7"
        );
    }

    /// Twitter's published OAuth 1.0a example ("Creating a signature"): its base string
    /// and its HMAC-SHA1 signature, through the same code that signs with HMAC-SHA256.
    #[test]
    fn twitters_published_signature_is_reproduced() {
        let url =
            Url::parse("https://api.twitter.com/1.1/statuses/update.json?include_entities=true")
                .unwrap();
        let oauth = pairs(&[
            ("oauth_consumer_key", "xvz1evFS4wEEPTGEFPHBog"),
            ("oauth_nonce", "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "1318622958"),
            (
                "oauth_token",
                "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb",
            ),
            ("oauth_version", "1.0"),
        ]);
        let body = pairs(&[(
            "status",
            "Hello Ladies + Gentlemen, a signed OAuth request!",
        )]);
        let base = base_string("POST", &url, &oauth, &body);
        assert_eq!(
            base,
            "POST&https%3A%2F%2Fapi.twitter.com%2F1.1%2Fstatuses%2Fupdate.json&include_entities%3Dtrue%26oauth_consumer_key%3Dxvz1evFS4wEEPTGEFPHBog%26oauth_nonce%3DkYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D1318622958%26oauth_token%3D370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb%26oauth_version%3D1.0%26status%3DHello%2520Ladies%2520%252B%2520Gentlemen%252C%2520a%2520signed%2520OAuth%2520request%2521"
        );
        let key = signing_key(
            "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
            "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE",
        );
        assert_eq!(
            hmac_base64::<hmac::Hmac<sha1::Sha1>>(&key, &base).unwrap(),
            "hCtSmYh+iHYCEqBWrE7C7hYmtUk="
        );
    }

    /// RFC 4231 test case 2: the HMAC-SHA256 the TBA signature is made with.
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        use base64::Engine;
        let mac = hmac_base64::<hmac::Hmac<sha2::Sha256>>("Jefe", "what do ya want for nothing?")
            .unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(mac)
            .unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_header_carries_the_realm_and_an_hmac_sha256_signature() {
        let creds = TbaCredentials {
            consumer_key: "ck".into(),
            consumer_secret: "cs-SECRET".into(),
            token_id: "tk".into(),
            token_secret: "ts-SECRET".into(),
        };
        let url = Url::parse("https://1234567-sb1.suitetalk.api.netsuite.com/services/rest/record/v1/customer?limit=5").unwrap();
        let header =
            authorization(&creds, "1234567_SB1", "GET", &url, 1_700_000_000, "n0nce1").unwrap();
        assert!(
            header.starts_with("OAuth realm=\"1234567_SB1\", oauth_consumer_key=\"ck\""),
            "{header}"
        );
        assert!(
            header.contains("oauth_signature_method=\"HMAC-SHA256\""),
            "{header}"
        );
        // The signature is the one computed from the documented base string.
        let oauth = pairs(&[
            ("oauth_consumer_key", "ck"),
            ("oauth_nonce", "n0nce1"),
            ("oauth_signature_method", "HMAC-SHA256"),
            ("oauth_timestamp", "1700000000"),
            ("oauth_token", "tk"),
            ("oauth_version", "1.0"),
        ]);
        let expected = hmac_base64::<hmac::Hmac<sha2::Sha256>>(
            "cs-SECRET&ts-SECRET",
            &base_string("GET", &url, &oauth, &[]),
        )
        .unwrap();
        assert!(
            header.ends_with(&format!(
                "oauth_signature=\"{}\"",
                percent_encode(&expected)
            )),
            "{header}"
        );
        assert!(!format!("{creds:?}").contains("SECRET"), "secrets in Debug");
    }
}

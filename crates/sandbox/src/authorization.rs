//! The authorization-code grant with PKCE (RFC 6749 §4.1, RFC 7636 `S256`) as the Xero and
//! QuickBooks simulators share it: reading an authorization request, refusing it the way
//! RFC 6749 §4.1.2.1 says (an error page when the client or its redirect URI cannot be
//! trusted, a redirect back with `error` and `state` otherwise), the codes waiting to be
//! exchanged, and their redemption at the token endpoint.
//!
//! A simulator has no user, so consent is given at once unless the app is set to deny it.
//! What a code covers (Xero's tenants, a QuickBooks realm), which scopes exist, and the shape
//! of every token answer belong to the vendor modules: nothing here knows a vendor.
//!
//! Stricter than the RFC on one point: PKCE is required, with `S256` named explicitly
//! (`plain`, and a challenge without a method, which means `plain`, are refused), because
//! Passerelle's connectors always send it and a connector that stops must be caught.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use sha2::Digest as _;
use std::collections::HashMap;
use url::Url;
use uuid::Uuid;

/// The only `code_challenge_method` accepted.
const S256: &str = "S256";

/// Parameters the client or its redirect URI depend on: repeated, they cannot be trusted
/// enough to redirect.
const TRUSTED: [&str; 2] = ["client_id", "redirect_uri"];

/// An authorization request's query parameters, in order, repeats kept (RFC 6749 §3.1 forbids
/// them, so they are refused rather than resolved).
pub(crate) struct AuthorizeQuery {
    pairs: Vec<(String, String)>,
}

impl AuthorizeQuery {
    pub(crate) fn parse(raw: Option<&str>) -> Self {
        let pairs = raw
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        Self { pairs }
    }

    /// The parameter's value; `Err` when it is repeated. An empty value counts as missing,
    /// as authorization servers treat `scope=`.
    fn once(&self, name: &str) -> Result<Option<&str>, ()> {
        let mut values = self
            .pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(());
        }
        Ok(first.filter(|v| !v.is_empty()))
    }

    /// The client asking (`unauthorized_client`'s page when missing or repeated: there is no
    /// client to redirect to).
    pub(crate) fn client_id(&self) -> Result<&str, ErrorPage> {
        match self.once("client_id") {
            Ok(Some(id)) => Ok(id),
            Ok(None) => Err(ErrorPage::new("invalid_request", "client_id is missing")),
            Err(()) => Err(ErrorPage::new("invalid_request", "client_id is repeated")),
        }
    }

    /// Where to answer: present, once, absolute, without a fragment (RFC 6749 §3.1.2), and
    /// exactly one of the app's registered URIs. Anything else is an error page, never a
    /// redirect, so a forged request cannot send a code elsewhere.
    pub(crate) fn redirect(
        &self,
        client_id: &str,
        registered: &[String],
    ) -> Result<Redirect, ErrorPage> {
        let invalid = |why: &str| ErrorPage::new("invalid_request", why);
        let sent = match self.once("redirect_uri") {
            Ok(Some(uri)) => uri,
            Ok(None) => return Err(invalid("redirect_uri is missing")),
            Err(()) => return Err(invalid("redirect_uri is repeated")),
        };
        let to = absolute_uri(sent).map_err(|why| invalid(&why))?;
        if !registered.iter().any(|r| r == sent) {
            return Err(ErrorPage::new(
                "unauthorized_client",
                "redirect_uri is not one of the app's registered redirect URIs",
            ));
        }
        // A repeated state cannot be echoed; the request is then refused without one.
        let state = self.once("state").ok().flatten().map(str::to_owned);
        Ok(Redirect {
            client_id: client_id.to_owned(),
            to,
            sent: sent.to_owned(),
            state,
        })
    }

    /// `response_type=code`, every parameter once, and an `S256` challenge: the challenge,
    /// or the refusal to redirect with.
    pub(crate) fn code_challenge(&self) -> Result<String, Refusal> {
        match self.once("response_type") {
            Ok(Some("code")) => {}
            Ok(Some(other)) => {
                return Err(Refusal::new(
                    "unsupported_response_type",
                    format!("response_type {other:?} is not supported; use code"),
                ));
            }
            Ok(None) => return Err(Refusal::invalid_request("response_type is missing")),
            Err(()) => return Err(Refusal::invalid_request("response_type is repeated")),
        }
        let mut names: Vec<&str> = self.pairs.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        // client_id and redirect_uri were checked before a redirect was trusted.
        if let Some(pair) = names
            .windows(2)
            .find(|w| w[0] == w[1] && !TRUSTED.contains(&w[0]))
        {
            return Err(Refusal::invalid_request(format!("{} is repeated", pair[0])));
        }
        let method = self.once("code_challenge_method").ok().flatten();
        let challenge = self.once("code_challenge").ok().flatten();
        match (method, challenge) {
            (Some(S256), Some(challenge)) if is_s256_challenge(challenge) => {
                Ok(challenge.to_owned())
            }
            (Some(S256), Some(_)) => Err(Refusal::invalid_request(
                "code_challenge must be BASE64URL(SHA256(code_verifier)): 43 characters",
            )),
            (Some(S256), None) => Err(Refusal::invalid_request("code_challenge is missing")),
            (Some(other), _) => Err(Refusal::invalid_request(format!(
                "code_challenge_method {other:?} is not supported; use S256"
            ))),
            (None, Some(_)) => Err(Refusal::invalid_request(
                "code_challenge_method is missing (plain is not supported; use S256)",
            )),
            (None, None) => Err(Refusal::invalid_request(
                "code_challenge and code_challenge_method=S256 are required (PKCE)",
            )),
        }
    }

    /// The requested scopes, space-separated; `None` when missing (or repeated, which
    /// [`Self::code_challenge`] has refused already).
    pub(crate) fn scopes(&self) -> Option<Vec<&str>> {
        let scope = self.once("scope").ok().flatten()?;
        Some(scope.split(' ').filter(|s| !s.is_empty()).collect())
    }

    /// Whether `state` was sent (some vendors require it).
    pub(crate) fn has_state(&self) -> bool {
        self.once("state").ok().flatten().is_some()
    }
}

/// Why an app's registered redirect URI, or a requested one, is unusable.
pub(crate) fn absolute_uri(uri: &str) -> Result<Url, String> {
    let url =
        Url::parse(uri).map_err(|_| format!("redirect_uri {uri:?} is not an absolute URI"))?;
    if url.cannot_be_a_base() {
        return Err(format!("redirect_uri {uri:?} is not a hierarchical URI"));
    }
    if url.fragment().is_some() {
        return Err(format!("redirect_uri {uri:?} must not have a fragment"));
    }
    Ok(url)
}

/// The answer when the request cannot be trusted to redirect: a 400 page naming the error.
#[derive(Debug)]
pub(crate) struct ErrorPage {
    error: &'static str,
    description: String,
}

impl ErrorPage {
    pub(crate) fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            error,
            description: description.into(),
        }
    }
}

impl IntoResponse for ErrorPage {
    fn into_response(self) -> Response {
        // What a browser would show; tests read the error code out of it.
        let body = format!(
            "<!DOCTYPE html>\n<html><head><title>Error: {error}</title></head>\
             <body><h1>{error}</h1><p>{description}</p></body></html>\n",
            error = self.error,
            description = escape_html(&self.description),
        );
        (
            StatusCode::BAD_REQUEST,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response()
    }
}

fn escape_html(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// An error to send back to the client's redirect URI (RFC 6749 §4.1.2.1).
#[derive(Debug)]
pub(crate) struct Refusal {
    pub error: &'static str,
    /// `error_description`; `None` sends none (a user's refusal needs no explaining).
    pub description: Option<String>,
}

impl Refusal {
    pub(crate) fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            error,
            description: Some(description.into()),
        }
    }

    pub(crate) fn invalid_request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", description)
    }

    /// The user said no (here: the app is configured to deny consent).
    pub(crate) fn access_denied() -> Self {
        Self {
            error: "access_denied",
            description: None,
        }
    }
}

/// The trusted client and redirect URI, and the `state` to echo.
#[derive(Debug)]
pub(crate) struct Redirect {
    client_id: String,
    to: Url,
    /// The redirect URI exactly as sent: the token request must repeat it byte for byte.
    sent: String,
    state: Option<String>,
}

impl Redirect {
    /// `302` to the redirect URI with `error`, `error_description` and `state` added to its
    /// query (an existing query is kept, RFC 6749 §3.1.2).
    pub(crate) fn refuse(&self, refusal: &Refusal) -> Response {
        let mut params = vec![("error", refusal.error)];
        if let Some(description) = &refusal.description {
            params.push(("error_description", description));
        }
        self.found(&params)
    }

    /// `302` to the redirect URI with the vendor's parameters (`code` first) and `state`.
    pub(crate) fn grant(&self, params: &[(&str, &str)]) -> Response {
        self.found(params)
    }

    fn found(&self, params: &[(&str, &str)]) -> Response {
        let mut to = self.to.clone();
        {
            let mut query = to.query_pairs_mut();
            for (name, value) in params {
                query.append_pair(name, value);
            }
            if let Some(state) = &self.state {
                query.append_pair("state", state);
            }
        }
        let Ok(location) = HeaderValue::from_str(to.as_str()) else {
            return ErrorPage::new("server_error", "the redirect URI cannot be sent")
                .into_response();
        };
        (
            StatusCode::FOUND,
            [
                (header::LOCATION, location),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response()
    }
}

/// BASE64URL-no-pad(SHA256(verifier)), RFC 7636 §4.2.
pub(crate) fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// 43 BASE64URL characters: a SHA-256 digest's encoding.
fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
fn is_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// A code waiting to be exchanged, and everything it is bound to.
#[derive(Debug)]
struct PendingCode<G> {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    expires_at: DateTime<Utc>,
    /// What the consent covers, for the vendor to turn into tokens.
    grant: G,
}

/// Why a code exchange is refused; the token endpoint's `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExchangeError {
    /// A required parameter is missing (`code`, `redirect_uri`).
    InvalidRequest,
    /// Unknown, expired, used, another client's, another redirect URI's, or a verifier that
    /// does not hash to the challenge.
    InvalidGrant,
}

impl ExchangeError {
    pub(crate) fn error(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidGrant => "invalid_grant",
        }
    }
}

/// A `grant_type=authorization_code` request's parameters, the client already authenticated.
#[derive(Debug)]
pub(crate) struct CodeExchange<'a> {
    pub client_id: &'a str,
    pub code: Option<&'a str>,
    pub redirect_uri: Option<&'a str>,
    pub code_verifier: Option<&'a str>,
}

/// The codes issued and not yet exchanged.
#[derive(Debug)]
pub(crate) struct CodeStore<G> {
    pending: HashMap<String, PendingCode<G>>,
}

impl<G> Default for CodeStore<G> {
    fn default() -> Self {
        Self {
            pending: HashMap::new(),
        }
    }
}

impl<G> CodeStore<G> {
    /// A new single-use code (`prefix` and 64 random hex digits) valid for `ttl`, bound to
    /// the client, the exact redirect URI, the challenge and `grant`.
    pub(crate) fn issue(
        &mut self,
        prefix: &str,
        redirect: &Redirect,
        challenge: String,
        grant: G,
        ttl: TimeDelta,
        now: DateTime<Utc>,
    ) -> String {
        self.pending.retain(|_, code| now < code.expires_at);
        let code = format!(
            "{prefix}{}{}",
            Uuid::new_v4().simple(),
            Uuid::new_v4().simple()
        );
        self.pending.insert(
            code.clone(),
            PendingCode {
                client_id: redirect.client_id.clone(),
                redirect_uri: redirect.sent.clone(),
                challenge,
                expires_at: now + ttl,
                grant,
            },
        );
        code
    }

    /// Redeems a code. A code found is spent whatever follows, as IdentityServer (Xero's
    /// identity provider) does: a wrong verifier or redirect URI burns it, so a stolen code
    /// gives a guesser one try, and the client starts a new authorization.
    pub(crate) fn redeem(
        &mut self,
        exchange: &CodeExchange<'_>,
        now: DateTime<Utc>,
    ) -> Result<G, ExchangeError> {
        let code = exchange.code.ok_or(ExchangeError::InvalidRequest)?;
        let pending = self
            .pending
            .remove(code)
            .ok_or(ExchangeError::InvalidGrant)?;
        if now >= pending.expires_at || pending.client_id != exchange.client_id {
            return Err(ExchangeError::InvalidGrant);
        }
        let redirect_uri = exchange.redirect_uri.ok_or(ExchangeError::InvalidRequest)?;
        if redirect_uri != pending.redirect_uri {
            return Err(ExchangeError::InvalidGrant);
        }
        match exchange.code_verifier {
            Some(verifier) if is_verifier(verifier) && s256(verifier) == pending.challenge => {
                Ok(pending.grant)
            }
            _ => Err(ExchangeError::InvalidGrant),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    const CALLBACK: &str = "https://app.example/callback";

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn query(text: &str) -> AuthorizeQuery {
        AuthorizeQuery::parse(Some(text))
    }

    fn redirect() -> Redirect {
        query(&format!("redirect_uri={CALLBACK}&state=s"))
            .redirect("app", &[CALLBACK.to_owned()])
            .unwrap()
    }

    fn exchange<'a>(code: &'a str, verifier: &'a str) -> CodeExchange<'a> {
        CodeExchange {
            client_id: "app",
            code: Some(code),
            redirect_uri: Some(CALLBACK),
            code_verifier: Some(verifier),
        }
    }

    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        assert_eq!(s256(VERIFIER), CHALLENGE);
        assert!(is_s256_challenge(CHALLENGE));
        assert!(is_verifier(VERIFIER));
        assert!(!is_verifier("too-short"));
        assert!(!is_verifier(&"a+".repeat(30)));
    }

    #[test]
    fn a_code_is_spent_by_its_first_exchange_even_a_failed_one() {
        let mut store = CodeStore::default();
        let minute = TimeDelta::minutes(1);
        let code = store.issue("", &redirect(), CHALLENGE.into(), 7, minute, at(0));
        assert_eq!(code.len(), 64);
        assert_eq!(store.redeem(&exchange(&code, VERIFIER), at(1)), Ok(7));
        assert_eq!(
            store.redeem(&exchange(&code, VERIFIER), at(2)),
            Err(ExchangeError::InvalidGrant)
        );

        let code = store.issue("", &redirect(), CHALLENGE.into(), 8, minute, at(0));
        let wrong = "x".repeat(43);
        assert_eq!(
            store.redeem(&exchange(&code, &wrong), at(1)),
            Err(ExchangeError::InvalidGrant)
        );
        assert_eq!(
            store.redeem(&exchange(&code, VERIFIER), at(1)),
            Err(ExchangeError::InvalidGrant)
        );
    }

    #[test]
    fn a_code_is_bound_to_its_client_redirect_uri_and_lifetime() {
        let mut store = CodeStore::default();
        let minute = TimeDelta::minutes(1);
        let issue = |store: &mut CodeStore<u8>| {
            store.issue("", &redirect(), CHALLENGE.into(), 0, minute, at(0))
        };
        let code = issue(&mut store);
        let other_client = CodeExchange {
            client_id: "other",
            ..exchange(&code, VERIFIER)
        };
        assert_eq!(
            store.redeem(&other_client, at(1)),
            Err(ExchangeError::InvalidGrant)
        );
        let code = issue(&mut store);
        let trailing_slash = CodeExchange {
            redirect_uri: Some("https://app.example/callback/"),
            ..exchange(&code, VERIFIER)
        };
        assert_eq!(
            store.redeem(&trailing_slash, at(1)),
            Err(ExchangeError::InvalidGrant)
        );
        let code = issue(&mut store);
        let no_uri = CodeExchange {
            redirect_uri: None,
            ..exchange(&code, VERIFIER)
        };
        assert_eq!(
            store.redeem(&no_uri, at(1)),
            Err(ExchangeError::InvalidRequest)
        );
        let code = issue(&mut store);
        assert_eq!(
            store.redeem(&exchange(&code, VERIFIER), at(60)),
            Err(ExchangeError::InvalidGrant)
        );
    }

    #[test]
    fn only_registered_absolute_redirect_uris_are_trusted() {
        let registered = [CALLBACK.to_owned()];
        let page = |q: &str| query(q).redirect("app", &registered).unwrap_err().error;
        assert_eq!(page("state=s"), "invalid_request");
        assert_eq!(page("redirect_uri=/callback"), "invalid_request");
        assert_eq!(
            page("redirect_uri=https://app.example/callback#x"),
            "invalid_request"
        );
        assert_eq!(
            page(&format!("redirect_uri={CALLBACK}&redirect_uri={CALLBACK}")),
            "invalid_request"
        );
        assert_eq!(
            page("redirect_uri=https://evil.example/callback"),
            "unauthorized_client"
        );
        assert!(
            query(&format!("redirect_uri={CALLBACK}"))
                .redirect("app", &registered)
                .is_ok()
        );
    }

    #[test]
    fn pkce_must_be_s256_and_parameters_must_not_repeat() {
        let refusal = |q: &str| query(q).code_challenge().unwrap_err();
        let pkce = format!("code_challenge={CHALLENGE}&code_challenge_method=S256");
        assert_eq!(
            query(&format!("response_type=code&{pkce}"))
                .code_challenge()
                .unwrap(),
            CHALLENGE
        );
        assert_eq!(
            refusal(&format!("response_type=token&{pkce}")).error,
            "unsupported_response_type"
        );
        assert_eq!(refusal(&pkce).error, "invalid_request");
        let cases = [
            "response_type=code&code_challenge_method=S256".to_owned(),
            format!("response_type=code&code_challenge={CHALLENGE}"),
            format!("response_type=code&code_challenge={CHALLENGE}&code_challenge_method=plain"),
            "response_type=code&code_challenge=short&code_challenge_method=S256".to_owned(),
            "response_type=code".to_owned(),
            format!("response_type=code&{pkce}&scope=a&scope=b"),
        ];
        for case in cases {
            assert_eq!(refusal(&case).error, "invalid_request", "{case}");
        }
    }
}

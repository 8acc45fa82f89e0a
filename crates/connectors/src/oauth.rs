//! OAuth2 access tokens, reused until a minute before they expire and renewed under a mutex
//! (concurrent requests of one run ask for one token, not one each).
//!
//! - [`OAuthTokens`]: for ERPs that rotate refresh tokens (Xero, QuickBooks); the new token
//!   set is stored through the [`CredentialStore`] *before* the new access token is used, so a
//!   crash can never lose the only valid refresh token.
//! - [`ClientCredentials`]: the client-credentials grant with the client's id and secret in
//!   the form (Entra ID for Dynamics 365); nothing to store, a new token is simply asked for.

use crate::http::{HttpCall, HttpRuntime};
use crate::{ConnectorError, CredentialStore};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use passerelle_core::vault::Credentials;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::Mutex;
use url::Url;

/// The values of `credentials` that are secrets, for the [`crate::http::Redactor`].
pub(crate) fn secrets(credentials: &Credentials) -> Vec<String> {
    ["client_secret", "refresh_token", "access_token"]
        .into_iter()
        .filter_map(|name| credentials.get_str(name).map(str::to_owned))
        .collect()
}

/// The `Authorization: Bearer` header for `token`, marked sensitive; `vendor` issued it.
pub(crate) fn bearer(token: &str, vendor: &str) -> Result<HeaderValue, ConnectorError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        ConnectorError::transient(format!(
            "{vendor} returned an access token that cannot be sent"
        ))
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// HTTP Basic client authentication (RFC 6749 §2.3.1), marked sensitive.
pub(crate) fn basic_auth(
    client_id: &str,
    client_secret: &str,
    vendor: &str,
) -> Result<HeaderValue, ConnectorError> {
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{client_secret}"));
    let mut value =
        HeaderValue::from_str(&format!("Basic {basic}")).map_err(|_| ConnectorError::Auth {
            message: format!(
                "{vendor} client_id or client_secret contains characters that cannot be sent"
            ),
        })?;
    value.set_sensitive(true);
    Ok(value)
}

/// How a client authenticates at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic base64(client_id:client_secret)` (Xero, Intuit).
    Basic,
    /// `client_id` and `client_secret` in the form (Sage).
    Post,
}

/// The client's credentials as a token request carries them: a header or form fields,
/// marked sensitive either way.
#[derive(Clone)]
pub(crate) struct TokenClient {
    headers: Vec<(reqwest::header::HeaderName, HeaderValue)>,
    form: Vec<(String, String)>,
}

impl TokenClient {
    pub(crate) fn new(
        how: ClientAuth,
        client_id: &str,
        client_secret: &str,
        vendor: &str,
    ) -> Result<Self, ConnectorError> {
        Ok(match how {
            ClientAuth::Basic => Self {
                headers: vec![(AUTHORIZATION, basic_auth(client_id, client_secret, vendor)?)],
                form: Vec::new(),
            },
            ClientAuth::Post => Self {
                headers: Vec::new(),
                form: vec![
                    ("client_id".to_owned(), client_id.to_owned()),
                    ("client_secret".to_owned(), client_secret.to_owned()),
                ],
            },
        })
    }

    /// A token request of `form` at `url`, authenticated as the client.
    pub(crate) fn call(
        &self,
        url: Url,
        mut form: Vec<(String, String)>,
        idempotent: bool,
    ) -> HttpCall {
        form.extend(self.form.iter().cloned());
        HttpCall {
            method: Method::POST,
            url,
            headers: self.headers.clone(),
            body: None,
            raw: None,
            form: Some(form),
            idempotent,
            conflict_means_in_flight: false,
        }
    }
}

/// Who issues the tokens, for messages.
#[derive(Debug, Clone, Copy)]
pub struct Issuer {
    /// "Xero", "Intuit".
    pub vendor: &'static str,
    /// "the Xero app", "the QuickBooks app".
    pub app: &'static str,
    /// Used when the answer has no `expires_in`.
    pub default_lifetime_secs: i64,
    /// Whether credentials without a refresh token use the `client_credentials` grant.
    pub client_credentials: bool,
    /// How the client authenticates at the token endpoint.
    pub client_auth: ClientAuth,
}

#[derive(Debug)]
struct TokenState {
    credentials: Credentials,
    token: CachedToken,
}

/// An access token and when it expires.
#[derive(Debug, Default)]
struct CachedToken {
    access_token: Option<String>,
    expires_at: Option<DateTime<Utc>>,
}

impl CachedToken {
    /// The token while it has more than a minute left.
    fn fresh(&self) -> Option<String> {
        match (&self.access_token, self.expires_at) {
            (Some(token), Some(expires_at))
                if expires_at > Utc::now() + chrono::Duration::seconds(60) =>
            {
                Some(token.clone())
            }
            _ => None,
        }
    }
}

/// What a token endpoint answered.
pub(crate) struct TokenAnswer {
    pub(crate) access_token: String,
    pub(crate) expires_at: DateTime<Utc>,
    pub(crate) refresh_token: Option<String>,
}

/// Posts a token request (`call`); a refusal is an `Auth` error whose message `refused`
/// builds from the endpoint's. `vendor` issues the tokens; an answer without `expires_in`
/// lives `default_lifetime_secs`.
pub(crate) async fn request_token(
    http: &HttpRuntime,
    call: &HttpCall,
    vendor: &str,
    default_lifetime_secs: i64,
    refused: impl FnOnce(&str) -> String,
) -> Result<TokenAnswer, ConnectorError> {
    let reply = match http.send(call).await {
        Ok(r) => r,
        Err(ConnectorError::Rejected { message, .. } | ConnectorError::Auth { message }) => {
            return Err(ConnectorError::Auth {
                message: refused(&message),
            });
        }
        Err(e) => return Err(e),
    };
    let body = reply.json("POST token")?;
    let access_token = body
        .get("access_token")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ConnectorError::transient(format!("the {vendor} token answer has no access_token"))
        })?
        .to_owned();
    // A number, or (Entra ID's v1 endpoint) a number in a string.
    let lifetime = body
        .get("expires_in")
        .and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(default_lifetime_secs);
    Ok(TokenAnswer {
        access_token,
        expires_at: Utc::now() + chrono::Duration::seconds(lifetime),
        refresh_token: body
            .get("refresh_token")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

pub struct OAuthTokens {
    issuer: Issuer,
    token_url: Url,
    /// The client's id and secret as the issuer takes them, marked sensitive.
    client_auth: TokenClient,
    state: Mutex<TokenState>,
    store: Option<Arc<dyn CredentialStore>>,
}

impl std::fmt::Debug for OAuthTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthTokens")
            .field("issuer", &self.issuer.vendor)
            .finish_non_exhaustive()
    }
}

impl OAuthTokens {
    /// Reads `client_id`, `client_secret` and any stored `access_token` /
    /// `access_token_expires_at` from the credentials.
    pub fn new(
        issuer: Issuer,
        token_url: Url,
        credentials: Credentials,
        store: Option<Arc<dyn CredentialStore>>,
    ) -> Result<Self, ConnectorError> {
        let client_id = crate::required_credential(&credentials, "client_id", issuer.vendor)?;
        let client_secret =
            crate::required_credential(&credentials, "client_secret", issuer.vendor)?;
        if !issuer.client_credentials
            && credentials
                .get_str("refresh_token")
                .is_none_or(str::is_empty)
        {
            return Err(ConnectorError::Auth {
                message: format!("{} credentials need `refresh_token`", issuer.vendor),
            });
        }
        let client_auth = TokenClient::new(
            issuer.client_auth,
            &client_id,
            &client_secret,
            issuer.vendor,
        )?;
        let access_token = credentials.get_str("access_token").map(str::to_owned);
        let expires_at = credentials
            .get_str("access_token_expires_at")
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        Ok(Self {
            issuer,
            token_url,
            client_auth,
            state: Mutex::new(TokenState {
                credentials,
                token: CachedToken {
                    access_token,
                    expires_at,
                },
            }),
            store,
        })
    }

    /// Sends the call `build` makes around a bearer token, through `runtime` (tokens are
    /// refreshed through `token_runtime`). A 401 means the token was revoked or expired
    /// early: it is refreshed once and the call repeated; a second 401 is `refused`. Errors
    /// come back redacted.
    pub async fn send_authorised(
        &self,
        token_runtime: &HttpRuntime,
        runtime: &HttpRuntime,
        vendor: &str,
        refused: &str,
        build: impl Fn(HeaderValue) -> HttpCall,
    ) -> Result<crate::http::HttpReply, ConnectorError> {
        let mut force = false;
        loop {
            let token = self.access_token(token_runtime, force).await?;
            let call = build(bearer(&token, vendor)?);
            match runtime.send(&call).await {
                Err(ConnectorError::Auth { .. }) if !force => force = true,
                Err(ConnectorError::Auth { .. }) => {
                    return Err(ConnectorError::Auth {
                        message: refused.to_owned(),
                    });
                }
                other => return other.map_err(|e| runtime.redactor().error(e)),
            }
        }
    }

    /// A valid access token; refreshes (storing a rotated token first) when it is about to
    /// expire or when `force` (the ERP answered 401).
    pub async fn access_token(
        &self,
        http: &HttpRuntime,
        force: bool,
    ) -> Result<String, ConnectorError> {
        let mut state = self.state.lock().await;
        if !force && let Some(token) = state.token.fresh() {
            return Ok(token);
        }
        let refresh_token = state
            .credentials
            .get_str("refresh_token")
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        let form = match &refresh_token {
            Some(rt) => vec![
                ("grant_type".to_owned(), "refresh_token".to_owned()),
                ("refresh_token".to_owned(), rt.clone()),
            ],
            None => vec![("grant_type".to_owned(), "client_credentials".to_owned())],
        };
        // A refresh whose answer is lost may be repeated: at Xero the replaced refresh token
        // still works for a grace period; at Sage (single use) the repeat is refused and the
        // integration must be connected again, which no retry policy can avoid.
        let call = self.client_auth.call(self.token_url.clone(), form, true);
        let Issuer { vendor, app, .. } = self.issuer;
        let answer = request_token(http, &call, vendor, self.issuer.default_lifetime_secs, |m| {
            format!(
                "{vendor} refused the token refresh ({m}); the refresh token was revoked, expired or used elsewhere, or the client credentials are wrong: reconnect {app} and store new credentials"
            )
        })
        .await?;
        let next = self
            .persist(&state.credentials, refresh_token, &answer)
            .await?;
        state.credentials = next;
        state.token = CachedToken {
            access_token: Some(answer.access_token.clone()),
            expires_at: Some(answer.expires_at),
        };
        Ok(answer.access_token)
    }

    /// The credentials with the new token set, stored before use: the old refresh token dies
    /// after its grace period, so the new one must be safe in the database before anything
    /// else happens.
    async fn persist(
        &self,
        current: &Credentials,
        refresh_token: Option<String>,
        answer: &TokenAnswer,
    ) -> Result<Credentials, ConnectorError> {
        let mut next = current.clone();
        if let Some(rotated) = &answer.refresh_token {
            next.insert("refresh_token", Value::String(rotated.clone()));
        }
        next.insert("access_token", Value::String(answer.access_token.clone()));
        next.insert(
            "access_token_expires_at",
            Value::String(answer.expires_at.to_rfc3339()),
        );
        let rotated =
            refresh_token.is_some() && next.get_str("refresh_token") != refresh_token.as_deref();
        match &self.store {
            Some(store) => store.save(&next).await?,
            None if rotated => {
                return Err(ConnectorError::fatal(format!(
                    "{} rotated the refresh token but there is nowhere to store it here; run the sync through a worker",
                    self.issuer.vendor
                )));
            }
            None => {}
        }
        Ok(next)
    }
}

/// The OAuth2 client-credentials grant (RFC 6749 §4.4) with the client's id and secret in the
/// form (`client_secret_post`) and an optional `scope`: no refresh token, nothing to store; a
/// token is asked for again when it nears expiry, or on demand after a `401`.
pub struct ClientCredentials {
    /// Who issues the tokens ("Entra ID"), for messages.
    vendor: &'static str,
    /// What to check when the issuer refuses the credentials.
    refused_hint: &'static str,
    token_url: Url,
    /// The form of a token request: holds the secret.
    form: GrantForm,
    /// Used when the answer has no `expires_in`.
    default_lifetime_secs: i64,
    token: Mutex<CachedToken>,
}

/// Makes the form of one token request (a client assertion signed for it).
pub type FormMinter = Box<dyn Fn() -> Result<Vec<(String, String)>, ConnectorError> + Send + Sync>;

/// The form of a client-credentials request.
enum GrantForm {
    /// `grant_type`, `client_id`, `client_secret` and `scope`, the same every time.
    Fixed(Vec<(String, String)>),
    /// Made anew for each request (RFC 7523 §2.2: a JWT client assertion with its own
    /// expiry), so no assertion outlives the request it authenticates.
    Minted(FormMinter),
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("vendor", &self.vendor)
            .finish_non_exhaustive()
    }
}

/// Who issues client-credentials tokens and what to say when they are refused.
#[derive(Debug, Clone, Copy)]
pub struct ClientCredentialsIssuer {
    pub vendor: &'static str,
    pub refused_hint: &'static str,
    pub default_lifetime_secs: i64,
}

impl ClientCredentials {
    pub fn new(
        issuer: ClientCredentialsIssuer,
        token_url: Url,
        client_id: String,
        client_secret: String,
        scope: Option<String>,
    ) -> Self {
        let mut form = vec![
            ("grant_type".to_owned(), "client_credentials".to_owned()),
            ("client_id".to_owned(), client_id),
            ("client_secret".to_owned(), client_secret),
        ];
        form.extend(scope.map(|scope| ("scope".to_owned(), scope)));
        Self::from_form(issuer, token_url, GrantForm::Fixed(form))
    }

    /// The client authenticates with a JWT assertion (`client_assertion_type`
    /// `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`) that `mint` signs for each
    /// request, with the rest of the form.
    pub fn with_assertion(
        issuer: ClientCredentialsIssuer,
        token_url: Url,
        mint: FormMinter,
    ) -> Self {
        Self::from_form(issuer, token_url, GrantForm::Minted(mint))
    }

    fn from_form(issuer: ClientCredentialsIssuer, token_url: Url, form: GrantForm) -> Self {
        Self {
            vendor: issuer.vendor,
            refused_hint: issuer.refused_hint,
            token_url,
            form,
            default_lifetime_secs: issuer.default_lifetime_secs,
            token: Mutex::new(CachedToken::default()),
        }
    }

    /// A valid access token, asking for a new one when it nears expiry or when `renew`.
    pub async fn access_token(
        &self,
        http: &HttpRuntime,
        renew: bool,
    ) -> Result<String, ConnectorError> {
        let mut token = self.token.lock().await;
        if !renew && let Some(access) = token.fresh() {
            return Ok(access);
        }
        let call = HttpCall {
            method: Method::POST,
            url: self.token_url.clone(),
            headers: Vec::new(),
            body: None,
            raw: None,
            form: Some(match &self.form {
                GrantForm::Fixed(form) => form.clone(),
                GrantForm::Minted(mint) => mint()?,
            }),
            // Asking for a token twice is harmless.
            idempotent: true,
            conflict_means_in_flight: false,
        };
        let (vendor, hint) = (self.vendor, self.refused_hint);
        let answer = request_token(http, &call, vendor, self.default_lifetime_secs, |m| {
            format!("{vendor} refused the client credentials ({m}); {hint}")
        })
        .await?;
        *token = CachedToken {
            access_token: Some(answer.access_token.clone()),
            expires_at: Some(answer.expires_at),
        };
        Ok(answer.access_token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{HttpOptions, Redactor};
    use serde_json::json;
    use std::sync::Mutex as StdMutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const SECRET: &str = "CLIENT_SECRET_5f3a";

    /// What the server saw of one request.
    #[derive(Debug, Clone)]
    struct Seen {
        path: String,
        authorization: Option<String>,
        body: String,
    }

    /// How the server answers a request, given how many reached its path before it.
    type Answer = Arc<dyn Fn(&Seen, usize) -> (u16, Value) + Send + Sync>;

    /// A loopback HTTP/1.1 server answering each request with `answer`; keeps every request,
    /// in arrival order.
    async fn serve(
        answer: impl Fn(&Seen, usize) -> (u16, Value) + Send + Sync + 'static,
    ) -> (Url, Arc<StdMutex<Vec<Seen>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let answer: Answer = Arc::new(answer);
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(connection(socket, answer.clone(), log.clone()));
            }
        });
        (base, seen)
    }

    /// Serves the requests of one (kept-alive) connection.
    async fn connection(mut socket: TcpStream, answer: Answer, log: Arc<StdMutex<Vec<Seen>>>) {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let head_end = loop {
                if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
            let header = |name: &str| {
                head.split("\r\n").skip(1).find_map(|line| {
                    let (n, v) = line.split_once(':')?;
                    n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                })
            };
            let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
            while buffer.len() < head_end + length {
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                }
            }
            let request = Seen {
                path: head.split(' ').nth(1).unwrap().to_owned(),
                authorization: header("authorization"),
                body: String::from_utf8_lossy(&buffer[head_end..head_end + length]).into_owned(),
            };
            buffer.drain(..head_end + length);
            let before = {
                let mut log = log.lock().unwrap();
                let before = log.iter().filter(|r| r.path == request.path).count();
                log.push(request.clone());
                before
            };
            let (status, body) = answer(&request, before);
            let body = body.to_string();
            let reply = format!(
                "HTTP/1.1 {status} Answer\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if socket.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    /// The requests that reached `path`.
    fn to(seen: &StdMutex<Vec<Seen>>, path: &str) -> Vec<Seen> {
        let seen = seen.lock().unwrap();
        seen.iter().filter(|r| r.path == path).cloned().collect()
    }

    /// A runtime that never retries on its own (each request counted is the code's), and
    /// knows the secret, as the connectors' runtimes do.
    fn runtime(client: &'static str) -> HttpRuntime {
        let options = HttpOptions {
            max_retries: 0,
            client,
            ..HttpOptions::default()
        };
        HttpRuntime::new(
            &crate::test_context(),
            options,
            Redactor::new([SECRET.to_owned()]),
        )
        .unwrap()
    }

    /// A token answer: `t1`, `t2`, … in order, living `expires_in` seconds.
    fn token(n: usize, expires_in: i64) -> (u16, Value) {
        (
            200,
            json!({"access_token": format!("t{}", n + 1), "expires_in": expires_in}),
        )
    }

    fn entra(token_url: Url) -> ClientCredentials {
        ClientCredentials::new(
            ClientCredentialsIssuer {
                vendor: "Entra ID",
                refused_hint: "check client_id and client_secret",
                default_lifetime_secs: 3599,
            },
            token_url,
            "app-1".to_owned(),
            SECRET.to_owned(),
            Some("https://org.crm.dynamics.com/.default".to_owned()),
        )
    }

    #[tokio::test]
    async fn a_client_credentials_token_is_asked_for_once_and_reused_until_renewed() {
        let (base, seen) = serve(|_, n| token(n, 3600)).await;
        let http = runtime("oauth-tests-cc-cached");
        let tokens = entra(base.join("/token").unwrap());
        assert_eq!(tokens.access_token(&http, false).await.unwrap(), "t1");
        assert_eq!(tokens.access_token(&http, false).await.unwrap(), "t1");
        let asked = to(&seen, "/token");
        assert_eq!(asked.len(), 1, "{asked:?}");
        let form = &asked[0].body;
        for field in [
            "grant_type=client_credentials",
            "client_id=app-1",
            &format!("client_secret={SECRET}"),
            "scope=https%3A%2F%2Forg.crm.dynamics.com%2F.default",
        ] {
            assert!(form.contains(field), "{field} not in {form}");
        }
        // After a 401 the caller renews: a new token, asked for once more.
        assert_eq!(tokens.access_token(&http, true).await.unwrap(), "t2");
        assert_eq!(tokens.access_token(&http, false).await.unwrap(), "t2");
        assert_eq!(to(&seen, "/token").len(), 2);
    }

    #[tokio::test]
    async fn a_client_credentials_token_within_a_minute_of_expiry_is_asked_for_again() {
        let (base, seen) = serve(|_, n| token(n, 30)).await;
        let http = runtime("oauth-tests-cc-expiring");
        let tokens = entra(base.join("/token").unwrap());
        assert_eq!(tokens.access_token(&http, false).await.unwrap(), "t1");
        assert_eq!(tokens.access_token(&http, false).await.unwrap(), "t2");
        assert_eq!(to(&seen, "/token").len(), 2);
    }

    #[tokio::test]
    async fn refused_client_credentials_are_an_auth_error_naming_the_vendor_without_the_secret() {
        for status in [400, 401] {
            // The endpoint quotes the secret back, as a careless one might, in the part of
            // its answer that goes into the message.
            let (base, seen) = serve(move |_, _| {
                let error = format!("invalid_client: the secret {SECRET} is wrong");
                (status, json!({ "error": error }))
            })
            .await;
            let http = runtime("oauth-tests-cc-refused");
            let err = entra(base.join("/token").unwrap())
                .access_token(&http, false)
                .await
                .unwrap_err();
            let ConnectorError::Auth { message } = &err else {
                panic!("HTTP {status}: not an auth error: {err:?}");
            };
            assert!(
                message.starts_with("Entra ID refused the client credentials"),
                "HTTP {status}: {message}"
            );
            assert!(
                message.contains("invalid_client") && message.contains("check client_id"),
                "{message}"
            );
            assert!(!message.contains(SECRET), "HTTP {status}: {message}");
            assert_eq!(to(&seen, "/token").len(), 1, "HTTP {status}: asked again");
        }
    }

    fn intuit(token_url: Url) -> OAuthTokens {
        let credentials = Credentials::from_value(json!({
            "client_id": "app-2",
            "client_secret": SECRET,
            "refresh_token": "RT-1",
        }))
        .unwrap();
        let issuer = Issuer {
            vendor: "Intuit",
            app: "the QuickBooks app",
            default_lifetime_secs: 3600,
            client_credentials: false,
            client_auth: ClientAuth::Basic,
        };
        OAuthTokens::new(issuer, token_url, credentials, None).unwrap()
    }

    /// `GET /api` through `send_authorised`, as the connectors call it.
    async fn call_api(
        tokens: &OAuthTokens,
        http: &HttpRuntime,
        base: &Url,
    ) -> Result<u16, ConnectorError> {
        let url = base.join("/api").unwrap();
        tokens
            .send_authorised(http, http, "Intuit", "REFUSED_AFTER_REFRESH", |bearer| {
                crate::json_call(
                    Method::GET,
                    url.clone(),
                    vec![(AUTHORIZATION, bearer)],
                    None,
                    true,
                )
            })
            .await
            .map(|reply| reply.status)
    }

    #[tokio::test]
    async fn a_401_on_the_call_refreshes_the_token_once_and_repeats_the_call_once() {
        let (base, seen) = serve(|request, n| match request.path.as_str() {
            "/token" => token(n, 3600),
            _ if n == 0 => (401, json!({"fault": "token expired"})),
            _ => (200, json!({"ok": true})),
        })
        .await;
        let http = runtime("oauth-tests-refresh-once");
        let tokens = intuit(base.join("/token").unwrap());
        assert_eq!(call_api(&tokens, &http, &base).await.unwrap(), 200);
        let refreshes = to(&seen, "/token");
        assert_eq!(refreshes.len(), 2, "{refreshes:?}");
        assert!(
            refreshes
                .iter()
                .all(|r| r.body.contains("grant_type=refresh_token")
                    && r.body.contains("refresh_token=RT-1")),
            "{refreshes:?}"
        );
        let calls: Vec<_> = to(&seen, "/api")
            .into_iter()
            .map(|r| r.authorization)
            .collect();
        assert_eq!(
            calls,
            [Some("Bearer t1".to_owned()), Some("Bearer t2".to_owned())]
        );
        // The refreshed token is kept: the next call asks for none.
        assert_eq!(call_api(&tokens, &http, &base).await.unwrap(), 200);
        assert_eq!(to(&seen, "/token").len(), 2);
    }

    #[tokio::test]
    async fn a_second_401_is_an_auth_error_not_another_refresh() {
        let (base, seen) = serve(|request, n| match request.path.as_str() {
            "/token" => token(n, 3600),
            _ => (401, json!({"fault": "AuthenticationFailed"})),
        })
        .await;
        let http = runtime("oauth-tests-refresh-refused");
        let tokens = intuit(base.join("/token").unwrap());
        let err = call_api(&tokens, &http, &base).await.unwrap_err();
        assert!(
            matches!(&err, ConnectorError::Auth { message } if message == "REFUSED_AFTER_REFRESH"),
            "the caller's refusal message: {err:?}"
        );
        assert!(!err.to_string().contains(SECRET), "{err}");
        assert_eq!(
            to(&seen, "/token").len(),
            2,
            "one refresh after the first 401"
        );
        assert_eq!(to(&seen, "/api").len(), 2, "the call is repeated once");
    }
}

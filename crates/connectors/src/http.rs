//! The HTTP runtime every HTTP connector shares: one client per connector with connect and
//! request timeouts, error classification, short in-call retries (backon: exponential with
//! jitter, honouring `Retry-After` in both its forms), an embargo after a 429 so no request of
//! this connector is sent before the ERP said it may be, a URL guard against SSRF, and
//! redaction of secrets from everything that may be logged.
//!
//! Waits longer than `max_inline_wait` are not slept here: the call returns `RateLimited` and
//! the worker hands the job back to the queue, so a worker is never held by one slow ERP.

use crate::ConnectorError;
use crate::breaker::Breaker;
use crate::rate::{RateGate, RateKey, RateLimits};
pub use crate::redact::Redactor;
use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use url::Url;

pub use crate::urls::{PublicOnlyResolver, UrlPolicy};

/// Tunables of one runtime.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// In-call retries of a transient failure (after the first try).
    pub max_retries: usize,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// A `Retry-After` up to this long is waited in place; longer goes back to the queue.
    pub max_inline_wait: Duration,
    /// Our own cap on requests per second to this ERP account (None: only the ERP's 429s).
    pub requests_per_second: Option<u32>,
    /// How long the ERP says to stay away after a 429 that carries no `Retry-After` (its
    /// documented advice, e.g. Intuit's 60 s). Read as if the ERP had sent it: no in-call
    /// retry sooner, the account embargoed (fleet-wide through the rate gate) for as long,
    /// and past `max_inline_wait` the job goes back to the queue.
    pub rate_limited_wait: Duration,
    /// Which process-wide client to use: one per connector type, shared by every integration
    /// and job of that type, so connections and TLS sessions are reused across jobs.
    pub client: &'static str,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_retries: 3,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_inline_wait: Duration::from_secs(5),
            requests_per_second: None,
            // ERPs that advise nothing (and usually send `Retry-After`): a short pause.
            rate_limited_wait: DEFAULT_RATE_LIMITED_WAIT,
            client: "default",
        }
    }
}

/// The wait after a 429 without `Retry-After` for an ERP that documents none.
pub const DEFAULT_RATE_LIMITED_WAIT: Duration = Duration::from_secs(1);

/// One request. Bodies are JSON, form-encoded, or `raw` (a `$batch`).
#[derive(Debug, Clone)]
pub struct HttpCall {
    pub method: reqwest::Method,
    pub url: Url,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<serde_json::Value>,
    /// A body that is not JSON, sent as is with its content type (an OData `$batch`).
    pub raw: Option<RawBody>,
    /// An `application/x-www-form-urlencoded` body instead (OAuth2 token requests).
    pub form: Option<Vec<(String, String)>>,
    /// Safe to send again after a failure whose outcome we do not know (GET, PUT, or a POST
    /// carrying an idempotency key).
    pub idempotent: bool,
    /// A `409 Conflict` means "a request with this idempotency key is still in flight": wait
    /// and repeat, never treat it as a refusal (the first request may yet create the record).
    pub conflict_means_in_flight: bool,
}

/// A non-JSON request body and its `Content-Type`.
#[derive(Debug, Clone)]
pub struct RawBody {
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// A response that arrived, with any status.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The body as JSON, or a transient error saying what came instead (HTML from a proxy,
    /// a truncated body).
    pub fn json(&self, what: &str) -> Result<serde_json::Value, ConnectorError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ConnectorError::transient(format!(
                "{what}: HTTP {} with a body that is not JSON ({e}): {}",
                self.status,
                snippet(&self.body)
            ))
        })
    }
}

/// A short, printable excerpt of a body for error messages.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 200 {
        format!("{}…", flat.chars().take(200).collect::<String>())
    } else {
        flat
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - now;
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// The process-wide client for `(connector type, private networks allowed, connect timeout)`.
/// Request timeouts are set per request, so they may differ between integrations.
fn shared_client(
    name: &'static str,
    allow_private_networks: bool,
    connect_timeout: Duration,
) -> Result<reqwest::Client, ConnectorError> {
    type Key = (&'static str, bool, Duration);
    static CLIENTS: std::sync::OnceLock<Mutex<std::collections::HashMap<Key, reqwest::Client>>> =
        std::sync::OnceLock::new();
    let clients = CLIENTS.get_or_init(Default::default);
    let mut clients = clients.lock().unwrap_or_else(|e| e.into_inner());
    let key = (name, allow_private_networks, connect_timeout);
    if let Some(client) = clients.get(&key) {
        return Ok(client.clone());
    }
    let mut builder = reqwest::Client::builder();
    if !allow_private_networks {
        builder = builder.dns_resolver(PublicOnlyResolver);
    }
    let client = builder
        .connect_timeout(connect_timeout)
        .user_agent(concat!("passerelle/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(64)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ConnectorError::fatal(format!("cannot build the HTTP client: {e}")))?;
    clients.insert(key, client.clone());
    Ok(client)
}

/// The shared part of a runtime: clones of a runtime share the embargo and the pacing.
#[derive(Debug, Default)]
struct Gate {
    /// No request before this instant (set from a 429's Retry-After).
    embargo: Option<Instant>,
    /// Earliest instant the next request may start, when pacing to requests_per_second.
    next_slot: Option<Instant>,
}

/// The accounts a request counts against, each with its limits.
type FleetKeys = Vec<(RateKey, RateLimits)>;

#[derive(Debug, Clone)]
pub struct HttpRuntime {
    client: reqwest::Client,
    options: HttpOptions,
    gate: Arc<Mutex<Gate>>,
    redactor: Redactor,
    /// The fleet-wide gate with the accounts (and their limits) every request counts against;
    /// the first is the connector's own account, which a 429 blocks.
    fleet: Option<(Arc<dyn RateGate>, FleetKeys)>,
    /// Checked against every request's URL: reqwest never asks the resolver about a literal
    /// IP, and a URL an ERP hands back (a next-page link) was not checked at configuration.
    url_policy: UrlPolicy,
    /// Shared by clones, like the gate: one ERP account's run of failures.
    breaker: Arc<Breaker>,
}

impl HttpRuntime {
    /// A runtime for one connector. The context's URL policy decides whether host names may
    /// resolve to private addresses (see [`PublicOnlyResolver`]), so no connector can forget it.
    pub fn new(
        context: &crate::ConnectorContext,
        options: HttpOptions,
        redactor: Redactor,
    ) -> Result<Self, ConnectorError> {
        let client = shared_client(
            options.client,
            context.url_policy.allow_private_networks,
            options.connect_timeout,
        )?;
        Ok(Self {
            client,
            breaker: Arc::new(Breaker::new(context.breaker)),
            options,
            gate: Arc::new(Mutex::new(Gate::default())),
            redactor,
            fleet: None,
            url_policy: context.url_policy,
        })
    }

    /// Paces every request through the fleet-wide gate for `key` under `limits` (instead of
    /// this process's own pacing).
    pub fn with_fleet_gate(
        mut self,
        gate: Arc<dyn RateGate>,
        key: RateKey,
        limits: RateLimits,
    ) -> Self {
        self.fleet = Some((gate, vec![(key, limits)]));
        self
    }

    /// Every request also counts against `key` under `limits` (an app-wide allowance, or a
    /// separate one for batch calls), admitted atomically with the connector's own account.
    /// Only after [`HttpRuntime::with_fleet_gate`]; without a fleet gate it does nothing.
    pub fn also_limited_by(mut self, key: RateKey, limits: RateLimits) -> Self {
        if let Some((_, keys)) = &mut self.fleet {
            keys.push((key, limits));
        }
        self
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    pub fn options(&self) -> &HttpOptions {
        &self.options
    }

    /// Sends with in-call retries. Returns the reply for any 2xx; every other outcome is a
    /// classified, redacted error.
    pub async fn send(&self, call: &HttpCall) -> Result<HttpReply, ConnectorError> {
        self.url_policy.check_request(&call.url).map_err(|reason| {
            ConnectorError::fatal(format!("refusing to send {} {reason}", call.method))
        })?;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.options.min_backoff)
            .with_max_delay(self.options.max_backoff)
            .with_max_times(self.options.max_retries)
            .with_jitter();
        let max_inline = self.options.max_inline_wait;
        let idempotent = call.idempotent;
        let result = (|| self.send_once(call))
            .retry(backoff)
            .when(|e: &ConnectorError| match e {
                // An open circuit is not waited out in place: the job goes back to the queue.
                ConnectorError::Transient { .. } if self.breaker.is_open() => false,
                ConnectorError::Transient { retry_after, .. } => {
                    idempotent && retry_after.is_none_or(|d| d <= max_inline)
                }
                ConnectorError::RateLimited { retry_after } => *retry_after <= max_inline,
                _ => false,
            })
            // Never retry sooner than the ERP asked.
            .adjust(
                |e: &ConnectorError, backoff| match (e.retry_after(), backoff) {
                    (Some(wait), Some(b)) => Some(b.max(wait)),
                    (_, b) => b,
                },
            )
            .await;
        result.map_err(|e| self.redactor.error(e))
    }

    /// The account this runtime's requests go to, for messages.
    fn account(&self) -> &str {
        match &self.fleet {
            Some((_, keys)) => keys
                .first()
                .map_or(self.options.client, |(k, _)| &k.account),
            None => self.options.client,
        }
    }

    async fn send_once(&self, call: &HttpCall) -> Result<HttpReply, ConnectorError> {
        self.breaker.check(self.account())?;
        let permits = loop {
            if let Some(sleep) = self.wait_for_gate()? {
                sleep.await;
            }
            let permits = match &self.fleet {
                Some((gate, keys)) => gate.admit(keys, self.options.max_inline_wait).await?,
                None => Vec::new(),
            };
            // While this call waited for its slot or permit, another one may have been told
            // to wait (429, 503 with Retry-After): that applies to this call too.
            if !self.embargoed() {
                break permits;
            }
            if let Some((gate, _)) = &self.fleet {
                gate.release(&permits).await;
            }
        };
        let (result, erp_failed) = self.exchange(call).await;
        if let Some(cool_off) = self.breaker.record(erp_failed)
            && let Some((gate, keys)) = &self.fleet
            && let Some((key, _)) = keys.first()
        {
            tracing::warn!(account = %key.account, cool_off_secs = cool_off.as_secs(), "the ERP keeps failing; circuit open, the fleet stays away");
            gate.block(key, cool_off).await;
        }
        if let (Err(error), Some((gate, keys))) = (&result, &self.fleet)
            && let Some(wait) = error.retry_after()
            && matches!(error, ConnectorError::RateLimited { .. })
            && let Some((key, _)) = keys.first()
        {
            // Tell the whole fleet, not only this process, before the permits go back: the
            // next holder must see the block.
            gate.block(key, wait).await;
        }
        if let Some((gate, _)) = &self.fleet {
            gate.release(&permits).await;
        }
        result
    }

    /// Whether an ERP's "wait" is still running for this client.
    fn embargoed(&self) -> bool {
        let gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        gate.embargo.is_some_and(|until| until > Instant::now())
    }

    /// One request and its classified outcome, with whether the ERP itself failed (a 5xx,
    /// no answer, a broken body), which is what the circuit breaker counts.
    async fn exchange(&self, call: &HttpCall) -> (Result<HttpReply, ConnectorError>, bool) {
        match self.exchange_inner(call).await {
            Ok(reply) => (Ok(reply), false),
            Err((error, erp_failed)) => (Err(error), erp_failed),
        }
    }

    async fn exchange_inner(&self, call: &HttpCall) -> Result<HttpReply, (ConnectorError, bool)> {
        let mut request = self
            .client
            .request(call.method.clone(), call.url.clone())
            .timeout(self.options.request_timeout);
        for (name, value) in &call.headers {
            request = request.header(name, value);
        }
        request = request.header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = &call.body {
            request = request.json(body);
        } else if let Some(raw) = &call.raw {
            request = request
                .header(reqwest::header::CONTENT_TYPE, raw.content_type.as_str())
                .body(raw.bytes.clone());
        } else if let Some(form) = &call.form {
            let encoded = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form.iter())
                .finish();
            request = request
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(encoded);
        }
        let what = format!("{} {}", call.method, call.url.path());
        let response = request.send().await.map_err(|e| {
            let kind = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "could not connect"
            } else {
                "failed"
            };
            // reqwest's message quotes the whole URL, query and user included.
            let message = format!("{what} {kind}: {}", error_chain(&e.without_url()));
            (ConnectorError::transient(message), true)
        })?;
        let status = response.status().as_u16();
        let mut response = response;
        let headers = std::mem::take(response.headers_mut());
        let body = response
            .bytes()
            .await
            .map_err(|e| {
                let message = format!("{what}: reading the body failed: {e}");
                (ConnectorError::transient(message), true)
            })?
            .to_vec();
        let reply = HttpReply {
            status,
            headers,
            body,
        };
        match classify_with(
            &reply,
            &what,
            call.conflict_means_in_flight,
            self.options.rate_limited_wait,
        ) {
            None => Ok(reply),
            Some(error) => {
                if let Some(wait) = error.retry_after() {
                    self.embargo(wait);
                }
                Err((error, status >= 500))
            }
        }
    }

    /// Waits for the embargo and the pacing slot; refuses at once when the embargo is longer
    /// than we wait in place.
    fn wait_for_gate(&self) -> Result<Option<tokio::time::Sleep>, ConnectorError> {
        let now = Instant::now();
        let mut gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        let mut start = now;
        if let Some(until) = gate.embargo {
            if until > now {
                let remaining = until - now;
                if remaining > self.options.max_inline_wait {
                    return Err(ConnectorError::RateLimited {
                        retry_after: remaining,
                    });
                }
                start = until;
            } else {
                gate.embargo = None;
            }
        }
        if let Some(rps) = self
            .options
            .requests_per_second
            .filter(|r| *r > 0 && self.fleet.is_none())
        {
            let interval = Duration::from_secs_f64(1.0 / f64::from(rps));
            let slot = gate.next_slot.map_or(start, |s| s.max(start));
            gate.next_slot = Some(slot + interval);
            start = slot;
        }
        // No timer when the request may go now (the common case).
        Ok((start > now).then(|| tokio::time::sleep_until(tokio::time::Instant::from_std(start))))
    }

    fn embargo(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        gate.embargo = Some(gate.embargo.map_or(until, |e| e.max(until)));
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Classifies a reply; `None` for success. A 429 without `Retry-After` waits
/// [`DEFAULT_RATE_LIMITED_WAIT`].
pub fn classify(
    reply: &HttpReply,
    what: &str,
    conflict_means_in_flight: bool,
) -> Option<ConnectorError> {
    classify_with(
        reply,
        what,
        conflict_means_in_flight,
        DEFAULT_RATE_LIMITED_WAIT,
    )
}

/// [`classify`] with the ERP's advised wait for a 429 that carries no `Retry-After`.
pub fn classify_with(
    reply: &HttpReply,
    what: &str,
    conflict_means_in_flight: bool,
    rate_limited_wait: Duration,
) -> Option<ConnectorError> {
    let status = reply.status;
    if (200..300).contains(&status) {
        return None;
    }
    let retry_after = reply
        .headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
    let detail = problem_detail(&reply.body);
    let message = format!(
        "{what}: HTTP {status}{}",
        detail.map(|d| format!(": {d}")).unwrap_or_default()
    );
    Some(match status {
        429 => ConnectorError::RateLimited {
            retry_after: retry_after.unwrap_or(rate_limited_wait),
        },
        // An overloaded server that says when to come back (RFC 9110 §15.6.4): that is pacing,
        // like a 429, not a failure of the run (self-hosted ERPs such as SAP B1 answer so).
        503 if retry_after.is_some() => ConnectorError::RateLimited {
            retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
        },
        401 | 403 => ConnectorError::Auth {
            message: format!(
                "{message} (the credentials were refused; check them and test the integration)"
            ),
        },
        408 | 425 | 500..=599 => ConnectorError::Transient {
            message,
            retry_after,
        },
        409 if conflict_means_in_flight => ConnectorError::Transient {
            message,
            retry_after: Some(retry_after.unwrap_or(Duration::from_secs(1))),
        },
        // We never follow redirects (a cross-host redirect would carry our API key and body
        // to another host, past the URL guard): the configured URL must be the final one.
        300..=399 => ConnectorError::Fatal {
            message: format!(
                "{message}: the API redirected to {}; set the integration's URL to the final address",
                reply
                    .headers
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map_or_else(|| "another address".to_owned(), shown_location)
            ),
        },
        _ => ConnectorError::Rejected {
            message,
            status: Some(status),
        },
    })
}

/// A `Location` for a message: absolute as [`crate::urls::shown`] shows it, relative as its
/// path only (either may carry a token in its query).
fn shown_location(location: &str) -> String {
    match Url::parse(location) {
        Ok(url) => crate::urls::shown(&url),
        Err(_) => Url::parse("https://relative.invalid")
            .and_then(|base| base.join(location))
            .map_or_else(
                |_| "another address".to_owned(),
                |url| match url.host_str() {
                    Some("relative.invalid") => url.path().to_owned(),
                    _ => crate::urls::shown(&url),
                },
            ),
    }
}

/// The useful part of an error body: RFC 9457 `detail`/`title` plus field errors, or a snippet.
fn problem_detail(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Some(snippet(body));
    };
    let mut parts = Vec::new();
    for key in ["title", "detail", "message", "error"] {
        if let Some(s) = value.get(key).and_then(|v| v.as_str()) {
            parts.push(s.to_owned());
        }
    }
    if let Some(errors) = value.get("errors").and_then(|v| v.as_array()) {
        for e in errors.iter().take(5) {
            match (
                e.get("field").and_then(|f| f.as_str()),
                e.get("message").and_then(|m| m.as_str()),
            ) {
                (Some(f), Some(m)) => parts.push(format!("{f} {m}")),
                _ => parts.push(e.to_string()),
            }
        }
    }
    // Sage's errors: `[{"$severity", "$dataCode", "$message", "$source"}]`.
    if let Some(items) = value.as_array() {
        for e in items.iter().take(5) {
            let field = |k: &str| e.get(k).and_then(|v| v.as_str());
            if let Some(message) = field("$message") {
                let mut part = match field("$dataCode") {
                    Some(code) => format!("{code}: {message}"),
                    None => message.to_owned(),
                };
                if let Some(source) = field("$source").filter(|s| !s.is_empty()) {
                    part.push_str(&format!(" (at {source})"));
                }
                parts.push(part);
            }
        }
    }
    // NetSuite's REST errors: `o:errorDetails[{detail, o:errorCode, o:errorPath}]`.
    if let Some(details) = value.get("o:errorDetails").and_then(|v| v.as_array()) {
        for d in details.iter().take(5) {
            let field = |k: &str| d.get(k).and_then(|v| v.as_str());
            let mut part = field("detail").unwrap_or("(no detail)").to_owned();
            if let Some(code) = field("o:errorCode") {
                part = format!("{code}: {part}");
            }
            if let Some(path) = field("o:errorPath") {
                part.push_str(&format!(" (at {path})"));
            }
            parts.push(part);
        }
    }
    if parts.is_empty() {
        Some(snippet(body))
    } else {
        Some(parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn sage_error_arrays_are_named_in_the_message() {
        let body = br#"[{"$severity":"error","$dataCode":"RecordInvalid","$message":"Contact can't be blank","$source":"contact_id"}]"#;
        assert_eq!(
            problem_detail(body).unwrap(),
            "RecordInvalid: Contact can't be blank (at contact_id)"
        );
    }

    #[test]
    fn netsuite_error_details_are_named_in_the_message() {
        let body = br#"{"type":"https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.1","title":"Bad Request","status":400,"o:errorDetails":[{"detail":"Invalid value for the resource or sub-resource field 'entity'.","o:errorPath":"entity","o:errorCode":"INVALID_VALUE"}]}"#;
        assert_eq!(
            problem_detail(body).unwrap(),
            "Bad Request; INVALID_VALUE: Invalid value for the resource or sub-resource field 'entity'. (at entity)"
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = chrono::Utc
            .with_ymd_and_hms(2015, 10, 21, 7, 27, 0)
            .unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    fn reply(status: u16, body: &str) -> HttpReply {
        HttpReply {
            status,
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn statuses_are_classified() {
        assert!(classify(&reply(201, "{}"), "x", false).is_none());
        assert_eq!(
            classify(&reply(401, ""), "x", false).map(|e| e.class()),
            Some("auth")
        );
        assert_eq!(
            classify(&reply(429, ""), "x", false).map(|e| e.class()),
            Some("rate_limited")
        );
        assert_eq!(
            classify(&reply(503, "<html>Bad gateway</html>"), "x", false).map(|e| e.class()),
            Some("transient")
        );
        let mut busy = reply(503, "busy");
        busy.headers
            .insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(
            classify(&busy, "x", false).and_then(|e| e.retry_after()),
            Some(Duration::from_secs(2)),
            "a 503 with Retry-After paces like a 429"
        );
        assert_eq!(
            classify(&busy, "x", false).map(|e| e.class()),
            Some("rate_limited")
        );
        let rejected = classify(
            &reply(422, r#"{"title":"Validation failed","errors":[{"field":"items[0].sku","message":"is required"}]}"#),
            "POST /api/orders",
            false,
        )
        .unwrap();
        assert_eq!(rejected.class(), "rejected");
        assert!(
            rejected.to_string().contains("items[0].sku is required"),
            "{rejected}"
        );
    }

    #[test]
    fn the_url_guard_refuses_plain_http_and_private_hosts_unless_allowed() {
        let strict = UrlPolicy::default();
        assert!(strict.check("https://api.example.com", "api_url").is_ok());
        for bad in [
            "http://api.example.com",
            "https://127.0.0.1:8080",
            "https://10.1.2.3",
            "https://192.168.0.1",
            "https://localhost",
            "https://[::1]/x",
            "https://169.254.169.254/latest/meta-data",
            "https://[::ffff:169.254.169.254]/",
            "ftp://example.com",
            "https://user:pw@example.com",
            "not a url",
        ] {
            let err = strict.check(bad, "api_url").unwrap_err();
            assert_eq!(err.class(), "fatal", "{bad}");
            assert!(!err.to_string().contains("pw@"), "{err}");
        }
        let lax = UrlPolicy {
            allow_private_networks: true,
        };
        assert!(
            lax.check("http://127.0.0.1:8080/custom_api", "api_url")
                .is_ok()
        );
    }

    #[tokio::test]
    async fn names_that_resolve_to_private_addresses_are_refused_at_connect_time() {
        use reqwest::dns::Resolve as _;
        use std::str::FromStr as _;
        let refused = PublicOnlyResolver
            .resolve(reqwest::dns::Name::from_str("localhost").unwrap())
            .await;
        let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("resolves only to loopback or private addresses"),
            "{message}"
        );
        // And the strict client uses it (the runtime's own request check refuses `localhost`
        // by name before this point, so the client is asked directly).
        let client = shared_client("resolver-test", false, Duration::from_secs(2)).unwrap();
        let err = client
            .get("http://localhost:9/health")
            .send()
            .await
            .unwrap_err();
        assert!(error_chain(&err).contains("private addresses"), "{err}");
    }

    fn get(url: &str) -> HttpCall {
        HttpCall {
            method: reqwest::Method::GET,
            url: Url::parse(url).unwrap(),
            headers: vec![],
            body: None,
            raw: None,
            form: None,
            idempotent: true,
            conflict_means_in_flight: false,
        }
    }

    fn quick_runtime(allow_private_networks: bool) -> HttpRuntime {
        let context = crate::ConnectorContext {
            url_policy: UrlPolicy {
                allow_private_networks,
            },
            ..crate::ConnectorContext::default()
        };
        HttpRuntime::new(
            &context,
            HttpOptions {
                max_retries: 0,
                connect_timeout: Duration::from_millis(300),
                request_timeout: Duration::from_millis(300),
                client: "url-guard-tests",
                ..HttpOptions::default()
            },
            Redactor::default(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn literal_private_addresses_are_refused_before_connecting() {
        // reqwest does not ask the resolver about a literal IP: without the request-time
        // check, these would reach the listener.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let runtime = quick_runtime(false);
        for host in [
            "127.0.0.1",
            "127.1",
            "[::ffff:127.0.0.1]",
            "[::127.0.0.1]",
            "[64:ff9b::7f00:1]",
            "[2002:7f00:1::]",
            "localhost.",
        ] {
            let err = runtime
                .send(&get(&format!("https://{host}:{port}/x")))
                .await
                .unwrap_err();
            assert!(err.to_string().contains("SSRF guard"), "{host}: {err}");
            assert_eq!(err.class(), "fatal", "{host}");
        }
        assert!(
            matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a request reached 127.0.0.1"
        );
    }

    #[tokio::test]
    async fn transport_errors_and_redirects_do_not_show_the_query_or_the_user() {
        // Port 1 on loopback refuses the connection; reqwest's own message quotes the URL.
        let err = quick_runtime(true)
            .send(&get("http://127.0.0.1:1/x?page=QUERY_SECRET_1"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("GET /x"), "{err}");
        assert!(!err.to_string().contains("QUERY_SECRET_1"), "{err}");
        for location in [
            "https://u:PASSWORD_2@other.example/login?token=QUERY_SECRET_2",
            "/login?token=QUERY_SECRET_2",
            "//u:PASSWORD_2@other.example/login?token=QUERY_SECRET_2",
        ] {
            let mut moved = reply(302, "");
            moved.headers.insert(
                reqwest::header::LOCATION,
                HeaderValue::from_str(location).unwrap(),
            );
            let err = classify(&moved, "GET /x", false).unwrap();
            let message = err.to_string();
            assert!(message.contains("/login"), "{message}");
            assert!(
                !message.contains("QUERY_SECRET_2") && !message.contains("PASSWORD_2"),
                "{message}"
            );
        }
    }

    #[test]
    fn redaction_hides_secrets_in_text_json_and_errors() {
        let r = Redactor::new(["sk_live_123456".to_owned()]);
        assert_eq!(
            r.text("key sk_live_123456 refused"),
            "key <redacted> refused"
        );
        let v = r.json(&serde_json::json!({"echo": "sk_live_123456"}));
        assert_eq!(v["echo"], "<redacted>");
        // Nested, inside longer strings, in keys, and a numeric secret as a number.
        let v = r.json(&serde_json::json!({
            "a": [{"b": "Bearer sk_live_123456."}],
            "sk_live_123456": 1,
            "ok": "nothing here"
        }));
        assert_eq!(v["a"][0]["b"], "Bearer <redacted>.");
        assert_eq!(v["<redacted>"], 1);
        assert_eq!(v["ok"], "nothing here");
        assert!(!v.to_string().contains("sk_live"));
        let pin = Redactor::new(["98765432".to_owned()]);
        let v = pin.json_owned(serde_json::json!({"pin": 98765432, "n": 7}));
        assert_eq!(v, serde_json::json!({"pin": "<redacted>", "n": 7}));
        let e = r.error(ConnectorError::Auth {
            message: "bad sk_live_123456".into(),
        });
        assert_eq!(e.to_string(), "bad <redacted>");
    }
}

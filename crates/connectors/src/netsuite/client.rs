//! The transport: every request authorised (a TBA signature of its own, or the M2M bearer
//! token), sent once by the HTTP runtime, and repeated here when it failed in passing and
//! may be repeated, signed anew each time; a `401` with an M2M token renews the token once.

use super::{Auth, NetSuiteConnector, oauth1};
use crate::http::HttpReply;
use crate::{ConnectionTest, ConnectorError, elapsed_ms};
use backon::BackoffBuilder;
use rand::Rng;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue, LOCATION};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use url::Url;

/// Tries of one request, the first included.
const ATTEMPTS: usize = 4;

/// A fresh nonce: 32 alphanumerics (NetSuite wants 6 to 64).
fn nonce() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

impl NetSuiteConnector {
    /// The `Authorization` header of one request.
    async fn authorization(
        &self,
        method: &Method,
        url: &Url,
        renew: bool,
    ) -> Result<HeaderValue, ConnectorError> {
        let text = match &self.auth {
            Auth::Tba(credentials) => oauth1::authorization(
                credentials,
                &self.settings.account_id,
                method.as_str(),
                url,
                chrono::Utc::now().timestamp(),
                &nonce(),
            )
            .ok_or_else(|| ConnectorError::fatal("cannot sign the NetSuite request"))?,
            Auth::M2m(grant) => format!("Bearer {}", grant.access_token(&self.http, renew).await?),
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| {
            ConnectorError::config("the NetSuite credentials hold characters a header cannot carry")
        })?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// Sends `method url` with a JSON `body`; `repeatable` says whether it may be sent again
    /// after a lost answer. Transient failures and short waits are retried here.
    pub(super) async fn request(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
        extra: &[(HeaderName, HeaderValue)],
        repeatable: bool,
    ) -> Result<HttpReply, ConnectorError> {
        let options = self.http.options();
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(options.min_backoff)
            .with_max_delay(options.max_backoff)
            .with_jitter()
            .build();
        let mut renew = false;
        let mut renewed = false;
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let mut headers = vec![(
                AUTHORIZATION,
                self.authorization(&method, &url, renew).await?,
            )];
            renew = false;
            headers.extend(extra.iter().cloned());
            let call = crate::json_call(
                method.clone(),
                url.clone(),
                headers,
                body.clone(),
                repeatable,
            );
            let error = match self.http.send(&call).await {
                Ok(reply) => return Ok(reply),
                Err(e) => e,
            };
            let wait = match &error {
                ConnectorError::Auth { .. } if matches!(self.auth, Auth::M2m(_)) && !renewed => {
                    renew = true;
                    renewed = true;
                    Some(Duration::ZERO)
                }
                ConnectorError::Transient { retry_after, .. } if repeatable => {
                    let backoff = delays.next().unwrap_or(options.max_backoff);
                    Some(retry_after.map_or(backoff, |r| r.max(backoff)))
                }
                ConnectorError::RateLimited { retry_after }
                    if *retry_after <= options.max_inline_wait =>
                {
                    Some(*retry_after)
                }
                _ => None,
            };
            match wait {
                Some(wait) if wait <= options.max_inline_wait => {
                    last = Some(error);
                    tokio::time::sleep(wait).await;
                }
                _ => return Err(error),
            }
        }
        Err(last.unwrap_or_else(|| ConnectorError::transient("NetSuite: no attempt was made")))
    }

    /// A GET answered with JSON.
    pub(super) async fn get_json(&self, url: Url, what: &str) -> Result<Value, ConnectorError> {
        self.request(Method::GET, url, None, &[], true)
            .await?
            .json(what)
    }

    /// The internal id in a `204`'s `Location` (`…/record/v1/customer/647`), checked to name
    /// a record of `record_type`.
    pub(super) fn created_id(
        reply: &HttpReply,
        record_type: &str,
    ) -> Result<String, ConnectorError> {
        let location = reply
            .headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ConnectorError::transient(format!(
                    "NetSuite answered the {record_type} write without a Location header"
                ))
            })?;
        let mut segments = location.trim_end_matches('/').rsplit('/');
        let id = segments.next().unwrap_or_default();
        let kind = segments.next().unwrap_or_default();
        if !kind.eq_ignore_ascii_case(record_type)
            || id.is_empty()
            || !id.chars().all(|c| c.is_ascii_digit())
        {
            return Err(ConnectorError::transient(format!(
                "NetSuite's Location {location:?} does not name a {record_type} record"
            )));
        }
        Ok(id.to_owned())
    }

    /// Proves the credentials with the smallest SuiteQL query.
    pub(super) async fn connection_test(&self) -> Result<ConnectionTest, ConnectorError> {
        let start = Instant::now();
        let rows = self
            .suiteql("SELECT id FROM customer WHERE id < 0", 1)
            .await?;
        let how = match self.auth {
            Auth::Tba(_) => "Token-Based Authentication",
            Auth::M2m(_) => "OAuth 2.0 client credentials",
        };
        drop(rows);
        Ok(ConnectionTest {
            message: format!(
                "connected to NetSuite account {} over REST web services with {how}",
                self.settings.account_id
            ),
            response_time_ms: u64::from(elapsed_ms(start)),
        })
    }

    /// One SuiteQL page: its rows and whether more follow.
    pub(super) async fn suiteql(
        &self,
        query: &str,
        limit: usize,
    ) -> Result<(Vec<Value>, bool), ConnectorError> {
        let mut url = self.settings.rest(["query", "v1", "suiteql"]);
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string())
            .append_pair("offset", "0");
        let prefer = [(
            HeaderName::from_static("prefer"),
            HeaderValue::from_static("transient"),
        )];
        let body = self
            .request(Method::POST, url, Some(json!({"q": query})), &prefer, true)
            .await?
            .json("SuiteQL")?;
        let items = body
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| ConnectorError::transient("the SuiteQL answer has no items array"))?;
        let has_more = body
            .get("hasMore")
            .and_then(Value::as_bool)
            .ok_or_else(|| ConnectorError::transient("the SuiteQL answer has no hasMore"))?;
        Ok((items, has_more))
    }
}

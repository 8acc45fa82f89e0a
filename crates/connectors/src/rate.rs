//! Rate limits as connectors declare them, and the gate every request of an HTTP connector
//! passes through. The gate is implemented outside this crate (over Postgres, shared by the
//! fleet); connectors only say which account a request counts against and what its limits are.

use crate::ConnectorError;
use async_trait::async_trait;
use passerelle_core::IntegrationType;
use std::time::Duration;

/// The account a request counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateKey {
    pub connector: IntegrationType,
    /// Realm, tenant org, company database, environment URL; with a class suffix where an ERP
    /// limits some calls separately (e.g. QuickBooks batch requests).
    pub account: String,
}

/// A published or configured limit: `requests` per `per`, and optionally a daily quota and a
/// cap on requests in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub requests: u32,
    pub per: Duration,
    pub per_day: Option<u32>,
    pub concurrency: Option<u32>,
}

/// Published limits per ERP account (see `docs/connectors/`); an integration may override
/// them with `settings.rate_limit` (see [`RateLimits::from_settings`]).
pub mod published {
    use super::RateLimits;
    use std::time::Duration;

    /// Xero: 60 calls a minute, 5,000 a day, 5 at once, per tenant.
    pub const XERO: RateLimits = RateLimits {
        requests: 60,
        per: Duration::from_secs(60),
        per_day: Some(5_000),
        concurrency: Some(5),
    };
    /// Xero: 10,000 calls a minute per app, over all the tenants it is connected to.
    pub const XERO_APP: RateLimits = RateLimits {
        requests: 10_000,
        per: Duration::from_secs(60),
        per_day: None,
        concurrency: None,
    };
    /// QuickBooks Online: 500 a minute per realm (its 10 a second is implied by pacing) and
    /// 10 at once.
    pub const QUICKBOOKS: RateLimits = RateLimits {
        requests: 500,
        per: Duration::from_secs(60),
        per_day: None,
        concurrency: Some(10),
    };
    /// QuickBooks Online batch requests: 40 a minute per realm, counted separately.
    pub const QUICKBOOKS_BATCH: RateLimits = RateLimits {
        requests: 40,
        per: Duration::from_secs(60),
        per_day: None,
        concurrency: Some(10),
    };
    /// Dataverse (Dynamics 365): 6,000 requests per 5 minutes and 52 at once per user.
    pub const DATAVERSE: RateLimits = RateLimits {
        requests: 6_000,
        per: Duration::from_secs(300),
        per_day: None,
        concurrency: Some(52),
    };
}

impl RateLimits {
    /// Reads `settings.rate_limit` (`{"requests": n, "per_secs": s, "per_day": d,
    /// "concurrency": c}`, every key optional) over `default`. Unknown keys and zero values are
    /// refused with the key named.
    pub fn from_settings(
        settings: Option<&serde_json::Value>,
        default: RateLimits,
    ) -> Result<Self, ConnectorError> {
        Self::from_setting(
            "rate_limit",
            settings.and_then(|s| s.get("rate_limit")),
            default,
        )
    }

    /// Reads one such override, the value of `settings.{name}` (`rate_limit`,
    /// `batch_rate_limit`, `app_rate_limit`), over `default`; errors name `settings.{name}`.
    pub fn from_setting(
        name: &str,
        raw: Option<&serde_json::Value>,
        default: RateLimits,
    ) -> Result<Self, ConnectorError> {
        let Some(raw) = raw else {
            return Ok(default);
        };
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Override {
            requests: Option<u32>,
            per_secs: Option<u64>,
            per_day: Option<u32>,
            concurrency: Option<u32>,
        }
        let o: Override = serde_json::from_value(raw.clone())
            .map_err(|e| ConnectorError::fatal(format!("invalid settings.{name}: {e}")))?;
        let positive = |key: &str, v: Option<u64>| match v {
            Some(0) => Err(ConnectorError::fatal(format!(
                "settings.{name}.{key} must be at least 1"
            ))),
            _ => Ok(()),
        };
        positive("requests", o.requests.map(u64::from))?;
        positive("per_secs", o.per_secs)?;
        positive("per_day", o.per_day.map(u64::from))?;
        positive("concurrency", o.concurrency.map(u64::from))?;
        Ok(Self {
            requests: o.requests.unwrap_or(default.requests),
            per: o.per_secs.map_or(default.per, Duration::from_secs),
            per_day: o.per_day.or(default.per_day),
            concurrency: o.concurrency.or(default.concurrency),
        })
    }

    pub const fn per_second(requests: u32) -> Self {
        Self {
            requests,
            per: Duration::from_secs(1),
            per_day: None,
            concurrency: None,
        }
    }

    pub const fn per_minute(requests: u32) -> Self {
        Self {
            requests,
            per: Duration::from_secs(60),
            per_day: None,
            concurrency: None,
        }
    }

    /// Time between two request starts. Requests are spaced over the window plus 2% (at least
    /// 20 ms), so network jitter cannot squeeze one request too many into an ERP's window;
    /// that keeps throughput at about 98% of the limit.
    pub fn interval(&self) -> Duration {
        let margin = (self.per / 50).max(Duration::from_millis(20));
        (self.per + margin) / self.requests.max(1)
    }
}

/// A concurrency permit to give back once the response is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit(pub uuid::Uuid);

#[async_trait]
pub trait RateGate: Send + Sync + std::fmt::Debug {
    /// Returns when the request may start under every one of `limits` (having waited for
    /// its slot), with a permit per capped account, or `RateLimited { retry_after }` when
    /// that is more than `max_wait` away: the caller then hands its job back to the queue
    /// rather than holding a worker.
    async fn admit(
        &self,
        limits: &[(RateKey, RateLimits)],
        max_wait: Duration,
    ) -> Result<Vec<Permit>, ConnectorError>;

    /// Gives permits back.
    async fn release(&self, permits: &[Permit]);

    /// The ERP said 429: nobody may call this account for `for_`.
    async fn block(&self, key: &RateKey, for_: Duration);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{HttpCall, HttpOptions, HttpRuntime, Redactor};
    use serde_json::json;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A fleet gate in memory: refuses (or waits out) a blocked account, records each block.
    #[derive(Debug, Default)]
    struct RecordingGate {
        blocked: Mutex<HashMap<RateKey, Instant>>,
        blocks: Mutex<Vec<(RateKey, Duration)>>,
    }

    #[async_trait]
    impl RateGate for RecordingGate {
        async fn admit(
            &self,
            limits: &[(RateKey, RateLimits)],
            max_wait: Duration,
        ) -> Result<Vec<Permit>, ConnectorError> {
            let now = Instant::now();
            let wait = limits
                .iter()
                .filter_map(|(key, _)| self.blocked.lock().unwrap().get(key).copied())
                .map(|until| until.saturating_duration_since(now))
                .max()
                .unwrap_or_default();
            if wait > max_wait {
                return Err(ConnectorError::RateLimited { retry_after: wait });
            }
            tokio::time::sleep(wait).await;
            Ok(Vec::new())
        }

        async fn release(&self, _permits: &[Permit]) {}

        async fn block(&self, key: &RateKey, for_: Duration) {
            self.blocks.lock().unwrap().push((key.clone(), for_));
            self.blocked
                .lock()
                .unwrap()
                .insert(key.clone(), Instant::now() + for_);
        }
    }

    /// A server answering every request `429` without `Retry-After`; when each one arrived.
    async fn throttling_server() -> (url::Url, Arc<Mutex<Vec<Instant>>>) {
        answering_server(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\n\r\n").await
    }

    /// A server answering every request with `reply`; when each one arrived.
    async fn answering_server(reply: &'static [u8]) -> (url::Url, Arc<Mutex<Vec<Instant>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url =
            url::Url::parse(&format!("http://{}/v1/x", listener.local_addr().unwrap())).unwrap();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let seen = arrivals.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while let Ok(n) = socket.read(&mut chunk).await {
                        if n == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..n]);
                        // Bodiless GETs: one request per blank line.
                        while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            buffer.drain(..end + 4);
                            seen.lock().unwrap().push(Instant::now());
                            if socket.write_all(reply).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (url, arrivals)
    }

    fn runtime(gate: &Arc<RecordingGate>, options: HttpOptions) -> HttpRuntime {
        let context = crate::ConnectorContext {
            url_policy: crate::UrlPolicy {
                allow_private_networks: true,
            },
            ..crate::ConnectorContext::default()
        };
        HttpRuntime::new(&context, options, Redactor::default())
            .unwrap()
            .with_fleet_gate(gate.clone(), key(), RateLimits::per_second(100))
    }

    fn key() -> RateKey {
        RateKey {
            connector: IntegrationType::QuickBooks,
            account: "9130357766900456".into(),
        }
    }

    fn get(url: &url::Url) -> HttpCall {
        HttpCall {
            method: reqwest::Method::GET,
            url: url.clone(),
            headers: vec![],
            body: None,
            raw: None,
            form: None,
            idempotent: true,
            conflict_means_in_flight: false,
        }
    }

    #[tokio::test]
    async fn a_429_without_retry_after_embargoes_the_account_fleet_wide_for_the_declared_wait() {
        let (url, arrivals) = throttling_server().await;
        let gate = Arc::new(RecordingGate::default());
        let declared = HttpOptions {
            rate_limited_wait: Duration::from_secs(60),
            ..HttpOptions::default()
        };
        let first = runtime(&gate, declared.clone());
        let err = first.send(&get(&url)).await.unwrap_err();
        assert_eq!(
            err,
            ConnectorError::RateLimited {
                retry_after: Duration::from_secs(60)
            },
            "longer than max_inline_wait: handed back to the queue, not retried in place"
        );
        assert_eq!(arrivals.lock().unwrap().len(), 1, "no in-call retry");
        assert_eq!(
            gate.blocks.lock().unwrap().clone(),
            vec![(key(), Duration::from_secs(60))],
            "the embargo went to the fleet gate"
        );
        // Neither this runtime nor another worker's sends anything before the wait is over.
        let other = runtime(&gate, declared);
        for runtime in [&first, &other] {
            match runtime.send(&get(&url)).await {
                Err(ConnectorError::RateLimited { retry_after }) => {
                    assert!(retry_after > Duration::from_secs(59), "{retry_after:?}")
                }
                other => panic!("expected RateLimited, got {other:?}"),
            }
        }
        assert_eq!(arrivals.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_short_declared_wait_is_retried_in_place_no_sooner_than_it() {
        let (url, arrivals) = throttling_server().await;
        let gate = Arc::new(RecordingGate::default());
        let wait = Duration::from_millis(1500);
        let runtime = runtime(
            &gate,
            HttpOptions {
                rate_limited_wait: wait,
                max_retries: 1,
                ..HttpOptions::default()
            },
        );
        let err = runtime.send(&get(&url)).await.unwrap_err();
        assert_eq!(err, ConnectorError::RateLimited { retry_after: wait });
        let arrivals = arrivals.lock().unwrap().clone();
        assert_eq!(arrivals.len(), 2, "one in-call retry");
        assert!(
            arrivals[1] - arrivals[0] >= wait,
            "retried after {:?}",
            arrivals[1] - arrivals[0]
        );
        assert_eq!(gate.blocks.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn an_erp_outage_costs_a_handful_of_requests_not_every_record_with_its_retries() {
        let (url, arrivals) =
            answering_server(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                .await;
        let gate = Arc::new(RecordingGate::default());
        let options = HttpOptions {
            min_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            ..HttpOptions::default()
        };
        let defaults = crate::breaker::BreakerOptions::default();
        let trip_after = defaults.trip_after as usize;
        let cool_off = defaults.cool_off;
        let runtime = runtime(&gate, options);
        // A chunk of 300 records, each sent with up to 3 in-call retries: 1,200 requests
        // without the breaker.
        for record in 0..300 {
            let err = runtime.send(&get(&url)).await.unwrap_err();
            assert!(err.is_retryable(), "record {record}: {err}");
            if record > 1 {
                let wait = err.retry_after().unwrap();
                assert!(
                    wait > cool_off - Duration::from_secs(2) && wait <= cool_off,
                    "{wait:?}"
                );
            }
        }
        assert_eq!(arrivals.lock().unwrap().len(), trip_after);
        // The fleet stays away for the cool-off too.
        assert_eq!(gate.blocks.lock().unwrap().clone(), vec![(key(), cool_off)]);
    }

    #[tokio::test]
    async fn answers_between_failures_keep_the_breaker_closed() {
        let (url, arrivals) =
            answering_server(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").await;
        let gate = Arc::new(RecordingGate::default());
        let runtime = runtime(&gate, HttpOptions::default());
        for _ in 0..20 {
            let err = runtime.send(&get(&url)).await.unwrap_err();
            assert!(!err.is_retryable(), "{err}");
        }
        assert_eq!(
            arrivals.lock().unwrap().len(),
            20,
            "a refusal is an answer, not an outage"
        );
        assert!(gate.blocks.lock().unwrap().is_empty());
    }

    #[test]
    fn pacing_leaves_a_small_margin_under_the_limit() {
        assert_eq!(published::XERO.interval(), Duration::from_millis(1020));
        assert_eq!(
            RateLimits::per_second(50).interval(),
            Duration::from_micros(20_400)
        );
        let share = published::QUICKBOOKS.per.as_secs_f64()
            / (published::QUICKBOOKS.interval().as_secs_f64()
                * f64::from(published::QUICKBOOKS.requests));
        assert!(share > 0.97 && share < 1.0, "{share}");
    }

    #[test]
    fn a_named_override_names_its_own_setting_in_errors() {
        let bad = json!({"requests": 0});
        let e = RateLimits::from_setting("app_rate_limit", Some(&bad), published::XERO_APP)
            .unwrap_err()
            .to_string();
        assert!(e.contains("settings.app_rate_limit.requests"), "{e}");
        let typo = json!({"concurrenc": 2});
        let e = RateLimits::from_setting("batch_rate_limit", Some(&typo), published::XERO)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("settings.batch_rate_limit") && e.contains("concurrenc"),
            "{e}"
        );
        let l = RateLimits::from_setting("app_rate_limit", None, published::XERO_APP).unwrap();
        assert_eq!(l.requests, 10_000);
    }

    #[test]
    fn settings_override_the_published_limits_and_typos_are_named() {
        let s = json!({"rate_limit": {"requests": 30, "per_day": 1000}});
        let l = RateLimits::from_settings(Some(&s), published::XERO).unwrap();
        assert_eq!(
            (l.requests, l.per, l.per_day, l.concurrency),
            (30, Duration::from_secs(60), Some(1000), Some(5))
        );
        assert_eq!(
            RateLimits::from_settings(None, published::XERO).unwrap(),
            published::XERO
        );
        let err = RateLimits::from_settings(
            Some(&json!({"rate_limit": {"request": 3}})),
            published::XERO,
        )
        .unwrap_err();
        assert!(err.to_string().contains("request"), "{err}");
        let err = RateLimits::from_settings(
            Some(&json!({"rate_limit": {"concurrency": 0}})),
            published::XERO,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("concurrency must be at least 1"),
            "{err}"
        );
    }
}

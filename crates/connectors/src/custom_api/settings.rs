//! The settings of a custom API integration: the base URL, the endpoint of each entity, the
//! header carrying the key, and our own pacing.

use crate::{ConnectorContext, ConnectorError};
use passerelle_core::Entity;
use reqwest::header::HeaderName;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use url::Url;

/// `settings` of a custom API integration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    api_url: Option<String>,
    #[serde(default)]
    endpoints: BTreeMap<String, String>,
    auth_header: Option<String>,
    timeout_secs: Option<u64>,
    concurrency: Option<usize>,
    requests_per_second: Option<u32>,
    page_size: Option<u32>,
}

/// Parsed and checked settings.
#[derive(Debug, Clone)]
pub struct CustomApiSettings {
    pub api_url: Url,
    pub endpoints: BTreeMap<Entity, String>,
    pub auth_header: HeaderName,
    pub timeout: Duration,
    pub concurrency: usize,
    pub requests_per_second: Option<u32>,
    pub page_size: u32,
}

fn endpoint_key(entity: Entity) -> &'static str {
    match entity {
        Entity::Product => "products",
        Entity::Customer => "customers",
        Entity::Order => "orders",
        Entity::Invoice => "invoices",
        Entity::Inventory => "inventory",
    }
}

impl CustomApiSettings {
    pub fn parse(
        settings: Option<&Value>,
        context: &ConnectorContext,
    ) -> Result<Self, ConnectorError> {
        let raw: RawSettings =
            crate::settings::read(settings, "custom_api", "`api_url` is required")?;
        let api_url = raw.api_url.ok_or_else(|| {
            ConnectorError::fatal("custom_api settings need `api_url` (the API's base URL)")
        })?;
        let mut api_url = context.url_policy.check(&api_url, "settings.api_url")?;
        // Endpoints are appended to the base path; one spelling (no trailing slash) keeps one
        // fleet-wide rate key per API.
        let trimmed = api_url.path().trim_end_matches('/').to_owned();
        api_url.set_path(&trimmed);
        let endpoints = endpoints(&raw.endpoints)?;
        let auth_header_name = raw.auth_header.unwrap_or_else(|| "X-API-Key".into());
        let auth_header = HeaderName::from_bytes(auth_header_name.as_bytes()).map_err(|_| {
            ConnectorError::fatal(format!(
                "settings.auth_header `{auth_header_name}` is not a valid header name"
            ))
        })?;
        let concurrency = raw.concurrency.unwrap_or(8);
        if !(1..=64).contains(&concurrency) {
            return Err(ConnectorError::fatal(
                "settings.concurrency must be between 1 and 64",
            ));
        }
        let page_size = raw.page_size.unwrap_or(100);
        if !(1..=1000).contains(&page_size) {
            return Err(ConnectorError::fatal(
                "settings.page_size must be between 1 and 1000",
            ));
        }
        Ok(Self {
            api_url,
            endpoints,
            auth_header,
            timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(30).clamp(1, 300)),
            concurrency,
            requests_per_second: raw.requests_per_second.filter(|r| *r > 0),
            page_size,
        })
    }

    /// The endpoint of `entity` (every entity has one once parsed).
    pub(super) fn endpoint(&self, entity: Entity) -> &str {
        self.endpoints.get(&entity).map_or("", String::as_str)
    }

    /// The base URL with `path` (an endpoint, `/`-separated) and then `id` (one segment,
    /// whatever it holds) appended.
    pub(super) fn url(&self, path: &str, id: Option<&str>) -> Url {
        crate::urls::join_segments(&crate::urls::join_path(&self.api_url, path), id)
    }
}

/// Each entity's endpoint: the configured path, else `/api/{entity}`.
fn endpoints(raw: &BTreeMap<String, String>) -> Result<BTreeMap<Entity, String>, ConnectorError> {
    let mut endpoints = BTreeMap::new();
    for entity in Entity::ALL {
        let key = endpoint_key(*entity);
        let path = raw
            .get(key)
            .cloned()
            .unwrap_or_else(|| format!("/api/{key}"));
        if !path.starts_with('/') || path.contains("://") || path.contains("..") {
            return Err(ConnectorError::fatal(format!(
                "settings.endpoints.{key} must be a path starting with `/`, got `{path}`"
            )));
        }
        endpoints.insert(*entity, path);
    }
    for key in raw.keys() {
        if !Entity::ALL.iter().any(|e| endpoint_key(*e) == key) {
            return Err(ConnectorError::fatal(format!(
                "settings.endpoints.{key} is not an entity; expected products, customers, orders, invoices or inventory"
            )));
        }
    }
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::custom_api::tests::ctx;
    use serde_json::json;

    #[test]
    fn request_urls_join_the_base_with_or_without_a_path_or_a_trailing_slash() {
        for (api_url, orders, one) in [
            (
                "https://erp.example.com",
                "https://erp.example.com/api/orders",
                "https://erp.example.com/api/orders/A%2F1%20b",
            ),
            (
                "https://erp.example.com/",
                "https://erp.example.com/api/orders",
                "https://erp.example.com/api/orders/A%2F1%20b",
            ),
            (
                "https://erp.example.com/v1",
                "https://erp.example.com/v1/api/orders",
                "https://erp.example.com/v1/api/orders/A%2F1%20b",
            ),
            (
                "https://erp.example.com/v1/",
                "https://erp.example.com/v1/api/orders",
                "https://erp.example.com/v1/api/orders/A%2F1%20b",
            ),
        ] {
            let s = CustomApiSettings::parse(Some(&json!({ "api_url": api_url })), &ctx()).unwrap();
            let endpoint = &s.endpoints[&Entity::Order];
            assert_eq!(s.url(endpoint, None).as_str(), orders, "{api_url}");
            assert_eq!(s.url(endpoint, Some("A/1 b")).as_str(), one, "{api_url}");
            assert_eq!(
                s.url("/health", None).as_str(),
                orders.replace("/api/orders", "/health")
            );
        }
    }

    #[test]
    fn an_api_url_with_a_secret_in_its_query_is_refused_without_showing_it() {
        let err = CustomApiSettings::parse(
            Some(&json!({"api_url": "https://erp.example.com/v1?api_key=sk_live_777"})),
            &ctx(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("`api_key`"), "{err}");
        assert!(!err.to_string().contains("sk_live_777"), "{err}");
    }

    #[test]
    fn settings_default_the_seed_endpoints_and_refuse_secrets_and_typos() {
        let s = CustomApiSettings::parse(
            Some(&json!({"api_url": "https://erp.example.com/v1/"})),
            &ctx(),
        )
        .unwrap();
        assert_eq!(
            s.url("/api/orders", None).as_str(),
            "https://erp.example.com/v1/api/orders"
        );
        assert_eq!(s.auth_header.as_str(), "x-api-key");
        let err = CustomApiSettings::parse(
            Some(&json!({"api_url": "https://x.example", "api_key": "k"})),
            &ctx(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("Move it to credentials"), "{err}");
        let err = CustomApiSettings::parse(
            Some(&json!({"api_url": "https://x.example", "endpoint": {}})),
            &ctx(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("endpoint"), "{err}");
        let err = CustomApiSettings::parse(
            Some(&json!({"api_url": "https://x.example", "endpoints": {"order": "/o"}})),
            &ctx(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("endpoints.order"), "{err}");
        let err = CustomApiSettings::parse(Some(&json!({})), &ctx()).unwrap_err();
        assert!(err.to_string().contains("api_url"), "{err}");
    }
}

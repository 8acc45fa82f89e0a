//! The custom REST API connector (`custom_api`): the contract in
//! `docs/connectors/custom_api.md`, which the legacy app's "Custom API" section started.
//!
//! `settings` reads the integration's settings, `mapping` turns platform records into the
//! contract's payloads, `client` writes them and `import` reads the listings back.

mod client;
mod import;
mod mapping;
mod settings;

pub use import::parse_item;
pub use mapping::map_record;
pub use settings::CustomApiSettings;

use crate::http::{HttpOptions, HttpRuntime, Redactor};
use crate::rate::{RateKey, RateLimits};
use crate::{
    Capabilities, ConnectionTest, ConnectorContext, ConnectorError, ExportOp, ExportResult,
    Idempotency, elapsed_ms,
};
use passerelle_core::platform::PlatformRecord;
use passerelle_core::vault::Credentials;
use passerelle_core::{Entity, IntegrationType};
use reqwest::Method;
use reqwest::header::HeaderValue;
use serde_json::Value;
use std::time::Instant;

#[derive(Debug)]
pub struct CustomApiConnector {
    settings: CustomApiSettings,
    api_key: HeaderValue,
    http: HttpRuntime,
    capabilities: Capabilities,
}

impl CustomApiConnector {
    pub fn new(
        settings: Option<&Value>,
        credentials: Option<&Credentials>,
        context: &ConnectorContext,
    ) -> Result<Self, ConnectorError> {
        let settings = CustomApiSettings::parse(settings, context)?;
        let key = credentials
            .and_then(|c| c.get_str("api_key"))
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ConnectorError::Auth {
                message: "custom_api credentials need `api_key`; set them with `passerelle integrations update <id> --credentials '{\"api_key\": \"...\"}'`".into(),
            })?;
        let mut api_key = HeaderValue::from_str(key).map_err(|_| ConnectorError::Auth {
            message:
                "credentials.api_key contains characters that cannot be sent in an HTTP header"
                    .into(),
        })?;
        api_key.set_sensitive(true);
        let mut http = HttpRuntime::new(
            context,
            HttpOptions {
                request_timeout: settings.timeout,
                client: "custom_api",
                requests_per_second: settings.requests_per_second,
                ..HttpOptions::default()
            },
            Redactor::new([key.to_owned()]),
        )?;
        // Our own cap, shared by the fleet: every integration on this API base URL counts
        // against it.
        if let (Some(rps), Some(gate)) = (settings.requests_per_second, &context.rate_gate) {
            let key = RateKey {
                connector: IntegrationType::CustomApi,
                account: settings.api_url.as_str().to_owned(),
            };
            http = http.with_fleet_gate(gate.clone(), key, RateLimits::per_second(rps));
        }
        let capabilities = Capabilities {
            export: Entity::ALL.to_vec(),
            import: vec![Entity::Product, Entity::Customer, Entity::Inventory],
            export_batch_size: settings.concurrency * 25,
            idempotency: Idempotency::Key,
        };
        Ok(Self {
            settings,
            api_key,
            http,
            capabilities,
        })
    }
}

http_connector!(CustomApiConnector, IntegrationType::CustomApi);

impl CustomApiConnector {
    async fn connection_test(&self) -> Result<ConnectionTest, ConnectorError> {
        let start = Instant::now();
        let url = self.settings.url("/health", None);
        self.http
            .send(&self.call(Method::GET, url, None, None))
            .await
            .map_err(|e| self.http.redactor().error(e))?;
        Ok(ConnectionTest {
            message: format!(
                "{} answered /health",
                crate::urls::shown(&self.settings.api_url)
            ),
            response_time_ms: u64::from(elapsed_ms(start)),
        })
    }

    fn payload(&self, record: &PlatformRecord) -> Result<Value, ConnectorError> {
        map_record(record)
    }

    /// None: the custom API takes the customer's email and each line's SKU.
    fn refers_to(&self, _record: &PlatformRecord) -> Vec<crate::Reference> {
        Vec::new()
    }

    async fn export_ops(&self, entity: Entity, ops: Vec<ExportOp>) -> Vec<ExportResult> {
        // Sent concurrently, results in op order; the HTTP runtime paces and embargoes.
        crate::in_order_concurrently(
            ops.into_iter().map(|op| self.export_one(entity, op)),
            self.settings.concurrency,
        )
        .await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::ConnectorContext;

    pub(crate) fn ctx() -> ConnectorContext {
        crate::test_context()
    }
}

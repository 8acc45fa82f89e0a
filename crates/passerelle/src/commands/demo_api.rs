//! The demo's admin API: served in the demo's process on loopback, with a viewer token for
//! the demo tenant, so the summary's `curl` lines work (the demo runs each of them itself
//! before it prints them).

use crate::api::{self, ApiState, auth};
use anyhow::Context as _;
use passerelle_core::config::Settings;
use passerelle_core::vault::Vault;
use passerelle_core::{ApiRole, IntegrationId, TenantId};
use passerelle_store::{NewApiToken, Store};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub struct DemoApi {
    pub base: String,
    pub token: String,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl DemoApi {
    pub async fn start(
        settings: &Settings,
        store: &Store,
        vault: &Vault,
        tenant: TenantId,
        listen: &str,
    ) -> anyhow::Result<Self> {
        let generated = auth::generate();
        store
            .create_api_token(NewApiToken {
                tenant_id: tenant,
                name: "demo viewer".into(),
                role: ApiRole::Viewer,
                token_prefix: generated.shown_prefix,
                token_hash: generated.hash,
                expires_at: Some(store.now() + chrono::Duration::days(1)),
            })
            .await
            .context("cannot make the demo's API token")?;
        let broker = crate::app::broker(settings).await?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} for the demo's admin API"))?;
        let base = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(ApiState::new(
            store.clone(),
            vault.clone(),
            broker,
            settings.clone(),
        ));
        let shutdown = CancellationToken::new();
        let served = tokio::spawn(api::serve(listener, state, shutdown.clone()));
        Ok(Self {
            base,
            token: generated.secret,
            shutdown,
            served,
        })
    }

    /// The requests the summary suggests, as paths under the API.
    pub fn examples(integration: IntegrationId) -> [String; 4] {
        [
            "/api/v1/stats".to_owned(),
            format!("/api/v1/integrations/{integration}/runs?limit=2"),
            format!("/api/v1/integrations/{integration}/logs?status=success&limit=3"),
            format!("/api/v1/integrations/{integration}/logs/export?format=csv&entity_type=order"),
        ]
    }

    /// Calls each example with the viewer token; returns one line per call with the `curl`
    /// command that repeats it and what it answered.
    pub async fn try_examples(&self, integration: IntegrationId) -> anyhow::Result<Vec<String>> {
        let client = reqwest::Client::new();
        let mut lines = Vec::new();
        for path in Self::examples(integration) {
            let url = format!("{}{path}", self.base);
            let response = client
                .get(&url)
                .bearer_auth(&self.token)
                .send()
                .await
                .with_context(|| format!("the demo's admin API did not answer GET {path}"))?;
            let status = response.status();
            let body = response.bytes().await?;
            anyhow::ensure!(
                status.is_success(),
                "the demo's admin API answered GET {path} with {status}: {}",
                String::from_utf8_lossy(&body)
            );
            lines.push(format!(
                "  curl -H 'Authorization: Bearer {}' '{url}'\n      → {status}, {} bytes",
                self.token,
                body.len()
            ));
        }
        Ok(lines)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        if let Ok(Err(e)) = self.served.await {
            tracing::warn!(error = %e, "the demo's admin API stopped with an error");
        }
    }
}

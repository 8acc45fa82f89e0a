//! Wiring shared by the roles: connecting to Postgres and RabbitMQ, the vault, the connector
//! context, and the names a process goes by.

use anyhow::Context as _;
use passerelle_connectors::{ConnectorContext, UrlPolicy};
use passerelle_core::config::{Settings, redact_url};
use passerelle_core::vault::Vault;
use passerelle_queue::{Broker, ReconnectPolicy, Topology};
use passerelle_store::Store;
use secrecy::ExposeSecret;
use std::time::Duration;

pub fn topology(settings: &Settings) -> Topology {
    Topology {
        prefix: settings.amqp.prefix.clone(),
        delivery_limit: settings.amqp.delivery_limit,
        retry_delays: settings
            .amqp
            .retry_delays_secs
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect(),
    }
}

/// How a role rides out a broker outage (see `passerelle_queue::ReconnectPolicy`).
pub fn reconnect_policy(settings: &Settings) -> ReconnectPolicy {
    ReconnectPolicy {
        give_up_after: Some(settings.amqp.give_up_after_secs)
            .filter(|s| *s > 0)
            .map(Duration::from_secs),
        ..ReconnectPolicy::default()
    }
}

pub async fn broker(settings: &Settings) -> anyhow::Result<Broker> {
    let url = settings.amqp.url.expose_secret();
    Broker::connect_with(url, topology(settings), reconnect_policy(settings)).await.with_context(|| {
        format!(
            "cannot connect to RabbitMQ at {} or declare the queues under prefix `{}`; is it running?",
            redact_url(url),
            settings.amqp.prefix
        )
    })
}

/// The vault, or a clear refusal: roles that read credentials do not start without a key.
pub fn vault(settings: &Settings) -> anyhow::Result<Vault> {
    let ring = settings.vault.key_ring().context(
        "this role reads integration credentials and needs the vault key ring ([vault] in the configuration)",
    )?;
    Ok(Vault::new(ring))
}

pub fn connector_context(settings: &Settings) -> ConnectorContext {
    ConnectorContext {
        url_policy: UrlPolicy {
            allow_private_networks: settings.http.allow_private_networks,
        },
        rate_gate: None,
        credential_store: None,
        breaker: passerelle_connectors::breaker::BreakerOptions {
            trip_after: settings.http.breaker_trip_after,
            cool_off: Duration::from_secs(settings.http.breaker_cool_off_secs),
        },
    }
}

/// A name unique to this process, for lease ownership and consumer tags.
pub fn process_identity(role: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!(
        "{role}@{host}:{}:{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

pub async fn store(settings: &Settings) -> anyhow::Result<Store> {
    crate::commands::connect(settings).await
}

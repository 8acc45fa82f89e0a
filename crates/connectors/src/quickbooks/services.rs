//! The realm's "Services" item, which invoices are booked on when `invoice_item_id` is
//! unset: QuickBooks books nothing on a sales line without an item.

use super::QuickBooksConnector;
use super::client::quoted;
use super::mapping::SERVICES_ITEM;
use crate::{ConnectorError, short_hash};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashMap;

impl QuickBooksConnector {
    /// The id of the realm's "Services" item, which invoices are booked on when
    /// `invoice_item_id` is unset: looked up, or created on an income account, once per realm
    /// and process.
    pub(super) async fn services_item(&self) -> Result<String, ConnectorError> {
        type Cache = std::sync::Mutex<HashMap<String, String>>;
        static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        // The API's address too: two sandboxes may hold realms with the same id.
        let key = format!("{}|{}", self.settings.api_url, self.settings.realm_id);
        if let Some(id) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(id.clone());
        }
        let id = match self.find_services_item().await? {
            Some(id) => id,
            None => match self.create_services_item().await {
                Ok(id) => id,
                // Another worker may have created it meanwhile (6240 Duplicate Name).
                Err(e) => self.find_services_item().await?.ok_or(e)?,
            },
        };
        cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, id.clone());
        Ok(id)
    }

    async fn find_services_item(&self) -> Result<Option<String>, ConnectorError> {
        let found = self
            .query(
                "Item",
                format!("select * from Item where Name = {}", quoted(SERVICES_ITEM)),
            )
            .await?;
        Ok(found
            .iter()
            .filter(|i| i.get("Active").and_then(Value::as_bool) != Some(false))
            .find_map(|i| i.get("Id").and_then(Value::as_str))
            .map(str::to_owned))
    }

    /// Creates the "Services" item (a `Service` item needs an income account: the configured
    /// one, else the company's first income account).
    async fn create_services_item(&self) -> Result<String, ConnectorError> {
        let account = match &self.settings.income_account_id {
            Some(id) => id.clone(),
            None => self
                .query(
                    "Account",
                    "select * from Account where AccountType = 'Income' orderby Id".into(),
                )
                .await?
                .iter()
                .filter(|a| a.get("Active").and_then(Value::as_bool) != Some(false))
                .find_map(|a| a.get("Id").and_then(Value::as_str))
                .map(str::to_owned)
                .ok_or_else(|| {
                    ConnectorError::fatal(format!(
                        "QuickBooks company {} has no \"Services\" item to book invoices on and no income account to create it on: set settings.invoice_item_id (the item invoices are booked on) or settings.income_account_id",
                        self.settings.realm_id
                    ))
                })?,
        };
        let request_id = short_hash(&format!("services-item|{}", self.settings.realm_id));
        let reply = self
            .api(
                Method::POST,
                "/item",
                &[("requestid", request_id)],
                Some(json!({
                    "Name": SERVICES_ITEM,
                    "Type": "Service",
                    "IncomeAccountRef": { "value": account },
                })),
            )
            .await
            .map_err(|e| match e {
                ConnectorError::Rejected { message, .. } => ConnectorError::fatal(format!(
                    "QuickBooks refused to create the \"Services\" item invoices are booked on ({message}); set settings.invoice_item_id to an existing item"
                )),
                other => other,
            })?;
        reply
            .json("POST item")?
            .pointer("/Item/Id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ConnectorError::transient("QuickBooks answered an item without Id"))
    }
}

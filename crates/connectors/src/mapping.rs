//! Pieces every ERP mapping shares: pure, no I/O. Each ERP's own mapping lives in its folder.

use crate::ConnectorError;
use chrono::{DateTime, Utc};
use passerelle_core::platform::{OrderLine, OrderRecord};

/// At most `max` characters of `s` (ERP text columns have a length; a longer value is cut).
pub(crate) fn truncated(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The calendar day of `t` (UTC), `YYYY-MM-DD`.
pub(crate) fn date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// Why an order line (`index` from 0) cannot be sent: its product is gone.
fn line_without_product(order: &OrderRecord, index: usize) -> ConnectorError {
    ConnectorError::rejected(
        format!(
            "order {} line {} has no product (deleted?)",
            order.order_number,
            index + 1
        ),
        None,
    )
}

/// The SKU of an order line, or a rejection of the order naming the line.
pub(crate) fn line_sku(
    order: &OrderRecord,
    index: usize,
    line: &OrderLine,
) -> Result<String, ConnectorError> {
    line.sku
        .clone()
        .ok_or_else(|| line_without_product(order, index))
}

/// The product id of an order line, or a rejection of the order naming the line.
pub(crate) fn line_product(
    order: &OrderRecord,
    index: usize,
    line: &OrderLine,
) -> Result<i64, ConnectorError> {
    line.product_id
        .ok_or_else(|| line_without_product(order, index))
}

/// The customer a document (`what`: "order WH-7") is for, or a rejection of the document.
pub(crate) fn customer_of(customer_id: Option<i64>, what: &str) -> Result<i64, ConnectorError> {
    customer_id.ok_or_else(|| ConnectorError::rejected(format!("{what} has no customer"), None))
}

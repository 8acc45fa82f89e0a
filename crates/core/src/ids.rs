//! Identifiers that cross crate lines. An internal id names one platform row in mappings,
//! logs and intents; it is built and parsed only here, so a malformed one is refused once,
//! loudly, instead of silently updating no row.

use crate::domain::Entity;
use std::fmt;

/// The platform row a mapping, log or intent is about: a row id, or for stock the
/// `(product, warehouse)` pair, written `"{product_id}:{warehouse_code}"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InternalId {
    Row(i64),
    Stock { product_id: i64, warehouse: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{raw}` is not a valid internal id for {entity}: {reason}")]
pub struct InternalIdError {
    pub raw: String,
    pub entity: Entity,
    pub reason: &'static str,
}

impl InternalId {
    /// Parses the text form stored in mappings and logs for a row of `entity`.
    pub fn parse(entity: Entity, raw: &str) -> Result<Self, InternalIdError> {
        let fail = |reason| InternalIdError {
            raw: raw.to_owned(),
            entity,
            reason,
        };
        let row_id = |text: &str| match text.parse::<i64>() {
            Ok(id) if id > 0 && !text.starts_with('+') => Ok(id),
            _ => Err(fail("a row id is a positive integer")),
        };
        match entity {
            Entity::Inventory => {
                let (product, warehouse) = raw
                    .split_once(':')
                    .ok_or_else(|| fail("stock ids are `product_id:warehouse_code`"))?;
                if warehouse.is_empty() {
                    return Err(fail("the warehouse code is empty"));
                }
                Ok(InternalId::Stock {
                    product_id: row_id(product)?,
                    warehouse: warehouse.to_owned(),
                })
            }
            _ => Ok(InternalId::Row(row_id(raw)?)),
        }
    }

    /// The row id (the product's, for stock).
    pub fn row_id(&self) -> i64 {
        match self {
            InternalId::Row(id) => *id,
            InternalId::Stock { product_id, .. } => *product_id,
        }
    }
}

impl fmt::Display for InternalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InternalId::Row(id) => write!(f, "{id}"),
            InternalId::Stock {
                product_id,
                warehouse,
            } => write!(f, "{product_id}:{warehouse}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ids_round_trip_through_their_text_form() {
        for (entity, id) in [
            (Entity::Order, InternalId::Row(42)),
            (
                Entity::Inventory,
                InternalId::Stock {
                    product_id: 7,
                    warehouse: "WH:A".into(),
                },
            ),
        ] {
            assert_eq!(InternalId::parse(entity, &id.to_string()), Ok(id));
        }
    }

    #[test]
    fn malformed_internal_ids_are_refused_with_the_reason() {
        for (entity, raw) in [
            (Entity::Product, "abc"),
            (Entity::Product, "-1"),
            (Entity::Product, "0"),
            (Entity::Product, "+5"),
            (Entity::Product, "3:MAIN"),
            (Entity::Inventory, "12"),
            (Entity::Inventory, "x:MAIN"),
            (Entity::Inventory, "12:"),
            (Entity::Inventory, "-3:MAIN"),
        ] {
            let err = InternalId::parse(entity, raw).unwrap_err();
            assert!(err.to_string().contains(raw), "{err}");
        }
    }
}

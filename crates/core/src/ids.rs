//! Identifiers that cross crate lines. An internal id names one platform row in mappings,
//! logs and intents; it is built and parsed only here, so a malformed one is refused once,
//! loudly, instead of silently updating no row.
//!
//! [`IntegrationId`], [`TenantId`] and [`RunId`] keep an integration's id from being passed
//! where a tenant's is expected. They are transparent on every wire: a bare number (or UUID)
//! in JSON, a `bigint` (or `uuid`) in Postgres, so job messages, CLI output and the schema
//! are the same as with plain integers.

use crate::domain::Entity;
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// Text that is not an id of the kind expected (a CLI argument, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{raw}` is not a valid {what}: {reason}")]
pub struct IdParseError {
    pub raw: String,
    pub what: &'static str,
    pub reason: &'static str,
}

macro_rules! row_id {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize,
        )]
        #[serde(transparent)]
        #[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = i64))]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        /// A positive integer, as Postgres' identity columns hand them out.
        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(raw: &str) -> Result<Self, Self::Err> {
                match raw.trim().parse::<i64>() {
                    Ok(id) if id > 0 => Ok($name(id)),
                    _ => Err(IdParseError {
                        raw: raw.to_owned(),
                        what: $what,
                        reason: "expected a positive integer",
                    }),
                }
            }
        }
    };
}

row_id!(
    /// An `integrations` row.
    IntegrationId,
    "integration id"
);
row_id!(
    /// A `platform.tenants` row: the customer of the B2B platform an integration belongs to.
    TenantId,
    "tenant id"
);
row_id!(
    /// An `api_tokens` row (the token's public handle; the secret is never stored).
    ApiTokenId,
    "token id"
);

/// A `sync_runs` row: one run of one integration, named before it is enqueued.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, format = Uuid))]
pub struct RunId(pub Uuid);

impl RunId {
    /// A fresh, time-ordered id (UUIDv7), so runs sort by creation in indexes.
    pub fn generate() -> Self {
        RunId(Uuid::now_v7())
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RunId {
    type Err = IdParseError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(raw.trim())
            .map(RunId)
            .map_err(|_| IdParseError {
                raw: raw.to_owned(),
                what: "run id",
                reason: "expected a UUID",
            })
    }
}

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
    fn ids_parse_from_their_text_form_and_refuse_the_rest() {
        assert_eq!("42".parse::<IntegrationId>(), Ok(IntegrationId(42)));
        assert_eq!(TenantId(7).to_string(), "7");
        for raw in ["0", "-3", "x", ""] {
            let err = raw.parse::<TenantId>().unwrap_err();
            assert!(err.to_string().contains("tenant id"), "{err}");
        }
        let run = RunId::generate();
        assert_eq!(run.to_string().parse::<RunId>(), Ok(run));
        assert!("12".parse::<RunId>().is_err());
    }

    #[test]
    fn ids_are_bare_numbers_and_uuids_in_json() {
        assert_eq!(serde_json::to_string(&IntegrationId(3)).unwrap(), "3");
        let run = RunId(Uuid::nil());
        assert_eq!(
            serde_json::to_string(&run).unwrap(),
            "\"00000000-0000-0000-0000-000000000000\""
        );
        assert_eq!(serde_json::from_str::<TenantId>("9").unwrap(), TenantId(9));
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

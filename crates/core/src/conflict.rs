//! Which side wins when a record changed both on the platform and at the ERP since it was
//! last synced (a bidirectional integration's conflict), per entity.

use crate::Entity;
use serde::{Deserialize, Serialize};

/// The side whose version is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Winner {
    Platform,
    Erp,
}

impl Winner {
    pub const fn as_str(self) -> &'static str {
        match self {
            Winner::Platform => "platform",
            Winner::Erp => "erp",
        }
    }
}

impl std::str::FromStr for Winner {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "platform" => Ok(Winner::Platform),
            "erp" => Ok(Winner::Erp),
            other => Err(format!("`{other}` is not a side; expected platform or erp")),
        }
    }
}

/// The integration's choices; an entity left out keeps its default
/// ([`ConflictPolicy::default_winner`]). Stored as given (`integrations.conflict_policy`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConflictPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub products: Option<Winner>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customers: Option<Winner>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orders: Option<Winner>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoices: Option<Winner>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Winner>,
}

impl ConflictPolicy {
    /// The platform for what is made on it (orders, invoices, buyers' accounts); the ERP for
    /// the catalogue and the stock it counts.
    pub const fn default_winner(entity: Entity) -> Winner {
        match entity {
            Entity::Product | Entity::Inventory => Winner::Erp,
            Entity::Customer | Entity::Order | Entity::Invoice => Winner::Platform,
        }
    }

    /// The entity's key in the policy object (`products`, `inventory`).
    pub const fn key(entity: Entity) -> &'static str {
        match entity {
            Entity::Product => "products",
            Entity::Customer => "customers",
            Entity::Order => "orders",
            Entity::Invoice => "invoices",
            Entity::Inventory => "inventory",
        }
    }

    fn slot(&self, entity: Entity) -> Option<Winner> {
        match entity {
            Entity::Product => self.products,
            Entity::Customer => self.customers,
            Entity::Order => self.orders,
            Entity::Invoice => self.invoices,
            Entity::Inventory => self.inventory,
        }
    }

    /// Who wins for `entity`, chosen or by default.
    pub fn winner(&self, entity: Entity) -> Winner {
        self.slot(entity)
            .unwrap_or_else(|| Self::default_winner(entity))
    }

    /// Whether `entity`'s winner was chosen (rather than the default).
    pub fn is_chosen(&self, entity: Entity) -> bool {
        self.slot(entity).is_some()
    }

    /// `products=erp,customers=platform` (the CLI's form).
    pub fn parse_pairs(text: &str) -> Result<Self, String> {
        let mut map = serde_json::Map::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (entity, side) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not entity=side (e.g. products=erp)"))?;
            let side: Winner = side.parse()?;
            map.insert(entity.trim().to_owned(), serde_json::json!(side));
        }
        Self::from_value(serde_json::Value::Object(map))
    }

    /// The policy from its JSON object, with an error naming what is wrong.
    pub fn from_value(value: serde_json::Value) -> Result<Self, String> {
        serde_json::from_value(value).map_err(|e| {
            format!("{e}; entities are products, customers, orders, invoices and inventory, sides platform and erp")
        })
    }

    /// Every entity's winner, chosen or default, for display.
    pub fn effective(&self) -> Vec<(Entity, Winner)> {
        Entity::ALL.iter().map(|e| (*e, self.winner(*e))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_choices_and_typos() {
        let none = ConflictPolicy::default();
        assert_eq!(none.winner(Entity::Order), Winner::Platform);
        assert_eq!(none.winner(Entity::Inventory), Winner::Erp);
        assert_eq!(none.winner(Entity::Product), Winner::Erp);
        let chosen = ConflictPolicy::parse_pairs("products=platform, inventory=erp").unwrap();
        assert_eq!(chosen.winner(Entity::Product), Winner::Platform);
        assert!(chosen.is_chosen(Entity::Inventory) && !chosen.is_chosen(Entity::Customer));
        assert_eq!(
            serde_json::to_value(&chosen).unwrap(),
            serde_json::json!({"products": "platform", "inventory": "erp"})
        );
        assert!(
            ConflictPolicy::parse_pairs("product=erp")
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(
            ConflictPolicy::parse_pairs("products=both")
                .unwrap_err()
                .contains("platform or erp")
        );
        assert!(
            ConflictPolicy::parse_pairs("products")
                .unwrap_err()
                .contains("entity=side")
        );
    }
}

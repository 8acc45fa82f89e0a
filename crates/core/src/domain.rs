//! Domain enums. Each mirrors a Postgres enum type created by the migrations (same name, same
//! labels), parses from and prints as its label, and serialises as that label in JSON.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A label that is not one of an enum's values. Names the enum and lists what is accepted, so a
/// CLI or API user can correct the input without reading the source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {what}; expected one of: {expected}")]
pub struct UnknownLabel {
    pub what: &'static str,
    pub value: String,
    pub expected: String,
}

macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $pg:literal, $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $label:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "sqlx", derive(sqlx::Type))]
        #[cfg_attr(feature = "sqlx", sqlx(type_name = $pg))]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum $name {
            $(
                $(#[$vmeta])*
                #[serde(rename = $label)]
                #[cfg_attr(feature = "sqlx", sqlx(rename = $label))]
                $variant,
            )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The label used in Postgres, JSON and on the command line.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownLabel;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($label => Ok($name::$variant),)+
                    other => Err(UnknownLabel {
                        what: $what,
                        value: other.to_owned(),
                        expected: [$($label),+].join(", "),
                    }),
                }
            }
        }
    };
}

label_enum! {
    /// The eight ERP or accounting systems an integration can talk to (legacy app: `integrations.type`).
    IntegrationType, "integration_type", "integration type" {
        SapB1 => "sap_b1",
        Dynamics365 => "dynamics_365",
        Sage => "sage",
        QuickBooks => "quickbooks",
        Odoo => "odoo",
        Xero => "xero",
        NetSuite => "netsuite",
        CustomApi => "custom_api",
    }
}

impl IntegrationType {
    /// The human name shown in listings (the legacy app's `getTypeName`).
    pub const fn display_name(self) -> &'static str {
        match self {
            IntegrationType::SapB1 => "SAP Business One",
            IntegrationType::Dynamics365 => "Microsoft Dynamics 365",
            IntegrationType::Sage => "Sage Accounting",
            IntegrationType::QuickBooks => "QuickBooks Online",
            IntegrationType::Odoo => "Odoo",
            IntegrationType::Xero => "Xero",
            IntegrationType::NetSuite => "Oracle NetSuite",
            IntegrationType::CustomApi => "Custom REST API",
        }
    }
}

label_enum! {
    /// Lifecycle of an integration (legacy app: `integrations.status`, default `inactive`).
    IntegrationStatus, "integration_status", "integration status" {
        Active => "active",
        Inactive => "inactive",
        Error => "error",
        Testing => "testing",
    }
}

label_enum! {
    /// Which way records flow (legacy app: `integrations.sync_direction`, default `export`).
    SyncDirection, "sync_direction", "sync direction" {
        Export => "export",
        Import => "import",
        Bidirectional => "bidirectional",
    }
}

impl SyncDirection {
    pub const fn exports(self) -> bool {
        matches!(self, SyncDirection::Export | SyncDirection::Bidirectional)
    }

    pub const fn imports(self) -> bool {
        matches!(self, SyncDirection::Import | SyncDirection::Bidirectional)
    }
}

label_enum! {
    /// How often the scheduler runs an integration (legacy app: `integrations.sync_frequency`).
    SyncFrequency, "sync_frequency", "sync frequency" {
        Manual => "manual",
        Hourly => "hourly",
        Daily => "daily",
        Weekly => "weekly",
    }
}

label_enum! {
    /// What a log row is about (legacy app: `integration_logs.entity_type`).
    LogEntityType, "log_entity_type", "log entity type" {
        Product => "product",
        Order => "order",
        Customer => "customer",
        Invoice => "invoice",
        Inventory => "inventory",
        Other => "other",
    }
}

label_enum! {
    /// What a mapping row is about (legacy app: `integration_mappings.entity_type`).
    MappingEntityType, "mapping_entity_type", "mapping entity type" {
        Product => "product",
        Order => "order",
        Customer => "customer",
        Invoice => "invoice",
        Category => "category",
        Inventory => "inventory",
        Other => "other",
    }
}

label_enum! {
    /// The operation a log row records (legacy app: `integration_logs.action`).
    LogAction, "log_action", "log action" {
        Create => "create",
        Update => "update",
        Delete => "delete",
        Sync => "sync",
        Conflict => "conflict",
    }
}

label_enum! {
    /// Direction of one logged operation (legacy app: `integration_logs.direction`).
    LogDirection, "log_direction", "log direction" {
        Export => "export",
        Import => "import",
    }
}

label_enum! {
    /// Outcome of one logged operation (legacy app: `integration_logs.status`).
    LogStatus, "log_status", "log status" {
        Success => "success",
        Failed => "failed",
        Pending => "pending",
        Partial => "partial",
    }
}

label_enum! {
    /// Who asked for a run.
    RunTrigger, "run_trigger", "run trigger" {
        Manual => "manual",
        Scheduled => "scheduled",
    }
}

label_enum! {
    /// Where a sync run stands. `running` always carries a lease that expires.
    RunStatus, "run_status", "run status" {
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        Partial => "partial",
        Failed => "failed",
        Cancelled => "cancelled",
    }
}

impl RunStatus {
    /// A terminal run never changes status again.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Partial | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

label_enum! {
    /// Where a completion webhook's delivery stands.
    WebhookStatus, "webhook_status", "webhook status" {
        Pending => "pending",
        Delivered => "delivered",
        Failed => "failed",
    }
}

label_enum! {
    /// What an admin API token may do: a viewer reads, an admin also writes.
    ApiRole, "api_role", "token role" {
        Admin => "admin",
        Viewer => "viewer",
    }
}

label_enum! {
    /// The five kinds of record an integration can sync; each has a `sync_<entity>` switch on
    /// the integration.
    Entity, "sync_entity", "entity" {
        Product => "product",
        Customer => "customer",
        Order => "order",
        Invoice => "invoice",
        Inventory => "inventory",
    }
}

impl Entity {
    /// The log entity type a record of this kind is logged under.
    pub const fn log_entity(self) -> LogEntityType {
        match self {
            Entity::Product => LogEntityType::Product,
            Entity::Customer => LogEntityType::Customer,
            Entity::Order => LogEntityType::Order,
            Entity::Invoice => LogEntityType::Invoice,
            Entity::Inventory => LogEntityType::Inventory,
        }
    }

    /// The mapping entity type that identifies a record of this kind at the ERP.
    pub const fn mapping_entity(self) -> MappingEntityType {
        match self {
            Entity::Product => MappingEntityType::Product,
            Entity::Inventory => MappingEntityType::Inventory,
            Entity::Customer => MappingEntityType::Customer,
            Entity::Order => MappingEntityType::Order,
            Entity::Invoice => MappingEntityType::Invoice,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_through_from_str_and_serde() {
        for t in IntegrationType::ALL {
            assert_eq!(t.as_str().parse::<IntegrationType>(), Ok(*t));
            let json = serde_json::to_string(t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        assert_eq!(
            "dynamics_365".parse::<IntegrationType>(),
            Ok(IntegrationType::Dynamics365)
        );
    }

    #[test]
    fn unknown_label_names_the_enum_and_the_choices() {
        let err = "sap".parse::<IntegrationType>().unwrap_err().to_string();
        assert!(
            err.contains("`sap` is not a valid integration type"),
            "{err}"
        );
        assert!(err.contains("sap_b1, dynamics_365"), "{err}");
    }
}

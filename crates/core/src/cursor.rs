//! Where a sync step stands, saved with every chunk in `sync_cursors` and read back through
//! the store's typed functions (`Store::export_cursor`, `Store::import_cursor`), which refuse
//! a cursor they cannot read instead of silently restarting the pass.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Position after the last exported row, in `(updated_at, id[, warehouse])` order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowPosition {
    pub updated_at: DateTime<Utc>,
    pub id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouse: Option<String>,
}

/// Where an export pass stands.
///
/// A pass reads rows changed since `since` in `(updated_at, id)` order, saving `after` with
/// every chunk. When it completes, the next pass starts at this pass's start minus an overlap,
/// so a row written by a transaction that committed after we read past its timestamp is read
/// again (and skipped if unchanged, by content hash).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportCursor {
    pub since: Option<DateTime<Utc>>,
    pub pass_started_at: Option<DateTime<Utc>>,
    pub after: Option<RowPosition>,
}

/// Re-read window before the previous export pass's start.
pub const EXPORT_OVERLAP: chrono::Duration = chrono::Duration::minutes(5);

/// Where an incremental import stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportCursor {
    /// Changes at or after this instant are fetched (inclusive, with overlap).
    pub updated_since: Option<DateTime<Utc>>,
    /// The ERP's page token within the current pass.
    pub page: Option<String>,
    /// The newest `updated_at` (ERP clock) seen in the current pass; the next pass starts
    /// from it, so clock skew between us and the ERP cannot lose a change.
    pub max_seen: Option<DateTime<Utc>>,
}

/// Re-read window before the newest change an import pass saw, against clock skew and late
/// writes at the ERP.
pub const IMPORT_OVERLAP: chrono::Duration = chrono::Duration::seconds(60);

/// The cursor a chunk saves: its variant is the step's direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepCursor {
    Export(ExportCursor),
    Import(ImportCursor),
}

impl StepCursor {
    pub fn direction(&self) -> crate::LogDirection {
        match self {
            StepCursor::Export(_) => crate::LogDirection::Export,
            StepCursor::Import(_) => crate::LogDirection::Import,
        }
    }

    /// The JSON stored in `sync_cursors.cursor`.
    pub fn to_json(&self) -> serde_json::Value {
        // Plain structs of options, timestamps and strings always serialize.
        match self {
            StepCursor::Export(c) => serde_json::to_value(c),
            StepCursor::Import(c) => serde_json::to_value(c),
        }
        .unwrap_or(serde_json::Value::Null)
    }
}

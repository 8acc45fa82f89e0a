//! What a dry run found: per entity and direction, how many records a real run would create,
//! update, delete and skip, with a few sample payloads (redacted by the connector).

use crate::domain::{Entity, LogDirection};
use serde::{Deserialize, Serialize};

/// Sample payloads kept per entity and direction.
pub const SAMPLES_PER_STEP: usize = 3;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DryRunReport {
    pub steps: Vec<StepDiff>,
}

/// One entity in one direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepDiff {
    pub entity: Entity,
    pub direction: LogDirection,
    /// Records the ERP (export) or the platform (import) does not have yet.
    pub create: u32,
    /// Records it has, whose content changed since the last sync.
    pub update: u32,
    /// Records deleted at the ERP that an import would remove from the platform.
    pub delete: u32,
    /// Records unchanged since the last sync.
    pub skip: u32,
    /// Records that could not be mapped or read (a real run logs them as failed).
    pub failed: u32,
    /// A few payloads a real run would send (export) or apply (import), redacted.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub samples: Vec<serde_json::Value>,
}

impl StepDiff {
    pub fn new(entity: Entity, direction: LogDirection) -> Self {
        Self {
            entity,
            direction,
            create: 0,
            update: 0,
            delete: 0,
            skip: 0,
            failed: 0,
            samples: Vec::new(),
        }
    }

    /// Keeps `payload` as a sample while there is room.
    pub fn sample(&mut self, payload: impl FnOnce() -> serde_json::Value) {
        if self.samples.len() < SAMPLES_PER_STEP {
            self.samples.push(payload());
        }
    }
}

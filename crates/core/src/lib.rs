//! Passerelle's shared vocabulary: the domain enums that mirror the Postgres schema, the
//! schedule arithmetic, layered configuration, the credential vault and the clock.
//!
//! This crate does no I/O of its own (configuration files aside): the store, queue and
//! connector crates build on it, never the reverse.

pub mod clock;
pub mod config;
pub mod conflict;
pub mod cursor;
pub mod digest;
pub mod domain;
pub mod dry_run;
pub mod ids;
pub mod job;
pub mod mapping;
pub mod platform;
pub mod schedule;
pub mod vault;

pub use clock::{Clock, ManualClock, SystemClock};
pub use domain::*;
pub use ids::{
    ApiTokenId, IdParseError, IntegrationId, InternalId, InternalIdError, RunId, TenantId,
};
pub use mapping::MappingMeta;

//! Job messages: what travels through RabbitMQ from the scheduler or the admin CLI/API to a
//! worker.
//!
//! Typed and versioned: the JSON carries `"type": "sync.v1"`, so a new shape can be added as
//! `sync.v2` while workers still read the old one during a rolling deploy. A message that does
//! not parse is never retried; the worker dead-letters it with the reason from [`JobParseError`].

use crate::domain::{Entity, LogDirection, RunTrigger};
use crate::ids::{IntegrationId, RunId, TenantId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum JobMessage {
    #[serde(rename = "sync.v1")]
    SyncV1(SyncJob),
}

/// One sync run, or the continuation of one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncJob {
    /// The `sync_runs` row this job executes; the worker's source of truth.
    pub run_id: RunId,
    pub integration_id: IntegrationId,
    pub tenant_id: TenantId,
    pub trigger: RunTrigger,
    /// Entities to sync; empty means every entity enabled on the integration.
    #[serde(default)]
    pub entities: Vec<Entity>,
    /// Failed deliveries so far (0 on the first). Drives the retry tier and the give-up point.
    #[serde(default)]
    pub attempt: u32,
    /// Set when a worker yielded after its time budget: what this run already finished.
    #[serde(default)]
    pub continuation: Option<Continuation>,
    /// Do not start before this instant: the ERP asked us to wait longer than the longest
    /// delay tier, so the job goes round the delay queues until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<chrono::DateTime<chrono::Utc>>,
}

/// Where a yielded run resumes. Positions within a step live in Postgres (`sync_cursors`,
/// saved per chunk); this only lists the steps already complete in this run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Continuation {
    pub completed: Vec<Step>,
    /// How many times this run has yielded, for logs and metrics.
    pub segment: u32,
}

/// One pass over one entity in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Step {
    pub entity: Entity,
    pub direction: LogDirection,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed job message: {reason}")]
pub struct JobParseError {
    pub reason: String,
}

impl JobMessage {
    pub fn parse(bytes: &[u8]) -> Result<Self, JobParseError> {
        let message: JobMessage = serde_json::from_slice(bytes).map_err(|e| JobParseError {
            reason: if std::str::from_utf8(bytes).is_err() {
                "body is not UTF-8 text".to_owned()
            } else {
                e.to_string()
            },
        })?;
        let JobMessage::SyncV1(job) = &message;
        if job.integration_id.0 <= 0 || job.tenant_id.0 <= 0 {
            return Err(JobParseError {
                reason: "integration_id and tenant_id must be positive".into(),
            });
        }
        Ok(message)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising a plain struct of strings, integers and enums cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn run_id(&self) -> RunId {
        match self {
            JobMessage::SyncV1(job) => job.run_id,
        }
    }
}

/// A W3C trace context (`traceparent` header), carried in AMQP headers so the enqueuer, the
/// worker and the ERP calls form one trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub span_id: String,
}

impl TraceParent {
    /// A new root trace.
    pub fn new_root() -> Self {
        use rand::RngCore;
        let mut rng = rand::rng();
        let mut trace = [0_u8; 16];
        let mut span = [0_u8; 8];
        rng.fill_bytes(&mut trace);
        rng.fill_bytes(&mut span);
        Self {
            trace_id: hex(&trace),
            span_id: hex(&span),
        }
    }

    /// A child span id in the same trace.
    pub fn child(&self) -> Self {
        let mut next = Self::new_root();
        next.trace_id = self.trace_id.clone();
        next
    }

    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, _flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let valid = version == "00"
            && trace.len() == 32
            && span.len() == 16
            && trace.chars().all(|c| c.is_ascii_hexdigit())
            && span.chars().all(|c| c.is_ascii_hexdigit())
            && trace.chars().any(|c| c != '0');
        valid.then(|| Self {
            trace_id: trace.to_ascii_lowercase(),
            span_id: span.to_ascii_lowercase(),
        })
    }

    pub fn header(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn job() -> JobMessage {
        JobMessage::SyncV1(SyncJob {
            run_id: RunId(Uuid::nil()),
            integration_id: IntegrationId(3),
            tenant_id: TenantId(1),
            trigger: RunTrigger::Manual,
            entities: vec![Entity::Order],
            attempt: 0,
            continuation: None,
            not_before: None,
        })
    }

    #[test]
    fn a_job_round_trips_with_its_version_tag() {
        let bytes = job().to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\"type\":\"sync.v1\""), "{text}");
        assert_eq!(JobMessage::parse(&bytes).unwrap(), job());
    }

    /// Workers of the previous release read these bytes during a rolling deploy: the id
    /// newtypes must leave them as they were with plain integers and a UUID.
    #[test]
    fn a_job_serializes_exactly_as_before_the_id_types() {
        let text = String::from_utf8(job().to_bytes()).unwrap();
        assert_eq!(
            text,
            r#"{"type":"sync.v1","run_id":"00000000-0000-0000-0000-000000000000","integration_id":3,"tenant_id":1,"trigger":"manual","entities":["order"],"attempt":0,"continuation":null}"#
        );
    }

    #[test]
    fn malformed_and_unknown_messages_say_why() {
        let err = JobMessage::parse(b"{\"type\":\"sync.v9\"}").unwrap_err();
        assert!(err.reason.contains("sync.v9"), "{err}");
        let err = JobMessage::parse(b"not json").unwrap_err();
        assert!(err.to_string().starts_with("malformed job message"));
        let err = JobMessage::parse(&[0xff, 0xfe]).unwrap_err();
        assert!(err.reason.contains("UTF-8"));
        let err = JobMessage::parse(br#"{"type":"sync.v1","run_id":"00000000-0000-0000-0000-000000000000","integration_id":0,"tenant_id":1,"trigger":"manual"}"#).unwrap_err();
        assert!(err.reason.contains("positive"));
        let err = JobMessage::parse(br#"{"type":"sync.v1","run_id":"00000000-0000-0000-0000-000000000000","integration_id":1,"tenant_id":1,"trigger":"manual","extra":1}"#).unwrap_err();
        assert!(err.reason.contains("extra"), "{err}");
    }

    #[test]
    fn traceparent_round_trips_and_rejects_garbage() {
        let root = TraceParent::new_root();
        assert_eq!(TraceParent::parse(&root.header()), Some(root.clone()));
        assert_eq!(root.child().trace_id, root.trace_id);
        assert_eq!(TraceParent::parse("00-0000-1-01"), None);
        assert_eq!(
            TraceParent::parse(&format!("00-{}-{}-01", "0".repeat(32), "1".repeat(16))),
            None
        );
    }
}

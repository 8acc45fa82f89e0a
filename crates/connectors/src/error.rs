//! The connector error taxonomy. The worker's decision depends only on the class:
//! retry in place or later (`Transient`, `RateLimited`), log the record as failed and go on
//! (`Rejected`), fail the run and flag the integration (`Auth`), or fail the run (`Fatal`).

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// Network trouble, a timeout, a 5xx, a body we could not read: worth retrying.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The ERP asked us to wait.
    #[error("rate limited by the ERP; retry after {retry_after:?}")]
    RateLimited { retry_after: Duration },
    /// The ERP refused this record (validation, unknown id): retrying the same data will not help.
    #[error("{message}")]
    Rejected {
        message: String,
        status: Option<u16>,
    },
    /// The credentials were refused.
    #[error("{message}")]
    Auth { message: String },
    /// Misconfiguration or an ERP answer we cannot work with: the run fails with this message.
    #[error("{message}")]
    Fatal { message: String },
}

impl ConnectorError {
    pub fn transient(message: impl Into<String>) -> Self {
        ConnectorError::Transient {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn fatal(message: impl Into<String>) -> Self {
        ConnectorError::Fatal {
            message: message.into(),
        }
    }

    pub fn rejected(message: impl Into<String>, status: Option<u16>) -> Self {
        ConnectorError::Rejected {
            message: message.into(),
            status,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ConnectorError::Transient { .. } | ConnectorError::RateLimited { .. }
        )
    }

    /// How long the ERP asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ConnectorError::Transient { retry_after, .. } => *retry_after,
            ConnectorError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// Short class name for logs and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            ConnectorError::Transient { .. } => "transient",
            ConnectorError::RateLimited { .. } => "rate_limited",
            ConnectorError::Rejected { .. } => "rejected",
            ConnectorError::Auth { .. } => "auth",
            ConnectorError::Fatal { .. } => "fatal",
        }
    }
}

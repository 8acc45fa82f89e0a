//! The connector error taxonomy. What the worker (and the connection test) does depends only
//! on the class, through [`ConnectorError::disposition`]: retry later (`Transient`,
//! `RateLimited`), log the record as failed and go on (`Rejected`), fail the run (`Fatal`), or
//! fail the run and flag the integration `error` until an admin fixes it (`Auth`, `Config`).

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
    /// An ERP answer we cannot work with (garbage, an unexpected shape): the run fails with
    /// this message; the next scheduled run tries again.
    #[error("{message}")]
    Fatal { message: String },
    /// The integration's settings or credentials are unusable (a typo, a missing field): no
    /// retry can help until an admin changes them.
    #[error("{message}")]
    Config { message: String },
}

/// What to do about an error, decided in one place for every caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// A passing condition: commit what succeeded, try the rest again later.
    RetryLater,
    /// This record is refused: log it as failed, go on with the others.
    SkipRecord,
    /// Stop the run and record it failed; the integration keeps its schedule.
    FailRun,
    /// Stop the run and set the integration to `error`: it cannot work until an admin acts.
    FailRunAndFlag,
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

    pub fn config(message: impl Into<String>) -> Self {
        ConnectorError::Config {
            message: message.into(),
        }
    }

    /// The one decision every caller makes from an error's class.
    pub fn disposition(&self) -> Disposition {
        match self {
            ConnectorError::Transient { .. } | ConnectorError::RateLimited { .. } => {
                Disposition::RetryLater
            }
            ConnectorError::Rejected { .. } => Disposition::SkipRecord,
            ConnectorError::Fatal { .. } => Disposition::FailRun,
            ConnectorError::Auth { .. } | ConnectorError::Config { .. } => {
                Disposition::FailRunAndFlag
            }
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.disposition() == Disposition::RetryLater
    }

    /// Building a connector only reads its settings and credentials: a `Fatal` there is the
    /// configuration's fault, and says so by its class.
    pub(crate) fn into_config(self) -> Self {
        match self {
            ConnectorError::Fatal { message } => ConnectorError::Config { message },
            other => other,
        }
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
            ConnectorError::Config { .. } => "config",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_one_disposition() {
        let cases = [
            (ConnectorError::transient("t"), Disposition::RetryLater),
            (
                ConnectorError::RateLimited {
                    retry_after: Duration::from_secs(1),
                },
                Disposition::RetryLater,
            ),
            (
                ConnectorError::rejected("r", Some(400)),
                Disposition::SkipRecord,
            ),
            (ConnectorError::fatal("f"), Disposition::FailRun),
            (
                ConnectorError::Auth {
                    message: "a".into(),
                },
                Disposition::FailRunAndFlag,
            ),
            (ConnectorError::config("c"), Disposition::FailRunAndFlag),
        ];
        for (error, expected) in cases {
            assert_eq!(error.disposition(), expected, "{error:?}");
            assert_eq!(error.is_retryable(), expected == Disposition::RetryLater);
        }
        assert_eq!(
            ConnectorError::fatal("typo").into_config(),
            ConnectorError::config("typo")
        );
    }
}

//! Redaction: every value a connector may log (a request body, an ERP's answer, an error)
//! passes through its [`Redactor`], which replaces the integration's secrets wherever they
//! appear.

use crate::ConnectorError;

/// Replaces every occurrence of the given secrets in `text`.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secret(s))", self.secrets.len())
    }
}

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        Self {
            // Very short values would redact ordinary words; they are not worth hiding anyway.
            secrets: secrets.into_iter().filter(|s| s.len() >= 4).collect(),
        }
    }

    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "<redacted>");
            }
        }
        out
    }

    pub fn json(&self, value: &serde_json::Value) -> serde_json::Value {
        self.json_owned(value.clone())
    }

    /// [`Redactor::json`] for a value the caller no longer needs: no copy when nothing in it
    /// is secret (the common case, checked without serializing it). Keys, strings and
    /// numbers are searched; a secret inside one is replaced by `<redacted>`, and a number
    /// that holds one becomes the string `"<redacted>"`.
    pub fn json_owned(&self, mut value: serde_json::Value) -> serde_json::Value {
        if !self.secrets.is_empty() && self.holds_secret(&value) {
            self.redact_in_place(&mut value);
        }
        value
    }

    fn holds_secret(&self, value: &serde_json::Value) -> bool {
        use serde_json::Value;
        let hit = |s: &str| {
            self.secrets
                .iter()
                .any(|secret| s.contains(secret.as_str()))
        };
        match value {
            Value::String(s) => hit(s),
            Value::Number(n) => hit(&n.to_string()),
            Value::Array(items) => items.iter().any(|v| self.holds_secret(v)),
            Value::Object(map) => map.iter().any(|(k, v)| hit(k) || self.holds_secret(v)),
            Value::Null | Value::Bool(_) => false,
        }
    }

    fn redact_in_place(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::String(s) => {
                if self
                    .secrets
                    .iter()
                    .any(|secret| s.contains(secret.as_str()))
                {
                    *s = self.text(s);
                }
            }
            Value::Number(n) => {
                let text = n.to_string();
                let redacted = self.text(&text);
                if redacted != text {
                    *value = Value::String(redacted);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_in_place(v)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (k, mut v) in entries {
                    self.redact_in_place(&mut v);
                    map.insert(self.text(&k), v);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    pub fn error(&self, error: ConnectorError) -> ConnectorError {
        match error {
            ConnectorError::Transient {
                message,
                retry_after,
            } => ConnectorError::Transient {
                message: self.text(&message),
                retry_after,
            },
            ConnectorError::Rejected { message, status } => ConnectorError::Rejected {
                message: self.text(&message),
                status,
            },
            ConnectorError::Auth { message } => ConnectorError::Auth {
                message: self.text(&message),
            },
            ConnectorError::Fatal { message } => ConnectorError::Fatal {
                message: self.text(&message),
            },
            other => other,
        }
    }
}

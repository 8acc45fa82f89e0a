//! The log export's formats, shared by the API (`/logs/export`) and the CLI
//! (`passerelle logs --export`): one row at a time, so neither holds the export in memory.

use chrono::{DateTime, Utc};
use passerelle_core::{IntegrationId, LogAction, LogDirection, LogEntityType, LogStatus};
use passerelle_store::IntegrationLog;
use serde::Serialize;

/// One record operation, as logged (request and response bodies were redacted when written).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogView {
    pub id: i64,
    pub integration_id: IntegrationId,
    pub entity_type: Option<LogEntityType>,
    /// The platform row's id.
    pub internal_id: Option<String>,
    pub external_id: Option<String>,
    pub action: Option<LogAction>,
    pub direction: Option<LogDirection>,
    pub status: Option<LogStatus>,
    #[schema(value_type = Option<Object>)]
    pub request_data: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub response_data: Option<serde_json::Value>,
    pub error_message: Option<String>,
    pub duration_ms: Option<i32>,
    pub created_at: DateTime<Utc>,
}

impl From<IntegrationLog> for LogView {
    fn from(l: IntegrationLog) -> Self {
        Self {
            id: l.id,
            integration_id: l.integration_id,
            entity_type: l.entity_type,
            internal_id: l.entity_id,
            external_id: l.external_id,
            action: l.action,
            direction: l.direction,
            status: l.status,
            request_data: l.request_data,
            response_data: l.response_data,
            error_message: l.error_message,
            duration_ms: l.duration_ms,
            created_at: l.created_at,
        }
    }
}

/// `csv` or `ndjson`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Ndjson,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        match raw {
            "csv" => Ok(ExportFormat::Csv),
            "ndjson" => Ok(ExportFormat::Ndjson),
            other => Err(format!(
                "`{other}` is not an export format; expected csv or ndjson"
            )),
        }
    }
}

impl ExportFormat {
    /// What starts the file (the CSV header line).
    pub fn header(self) -> &'static str {
        match self {
            ExportFormat::Csv => CSV_HEADER,
            ExportFormat::Ndjson => "",
        }
    }

    /// Appends one row.
    pub fn write(self, out: &mut String, row: IntegrationLog) {
        match self {
            ExportFormat::Csv => csv_row(out, &row),
            ExportFormat::Ndjson => {
                out.push_str(&serde_json::to_string(&LogView::from(row)).unwrap_or_default());
                out.push('\n');
            }
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Ndjson => "application/x-ndjson",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Ndjson => "ndjson",
        }
    }
}

const CSV_HEADER: &str = "id,created_at,entity_type,internal_id,external_id,action,direction,status,duration_ms,error_message,request_data,response_data\n";

fn csv_cell(out: &mut String, value: &str) {
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

fn csv_row(out: &mut String, l: &IntegrationLog) {
    let opt = |v: Option<String>| v.unwrap_or_default();
    let cells = [
        l.id.to_string(),
        l.created_at.to_rfc3339(),
        opt(l.entity_type.map(|v| v.to_string())),
        opt(l.entity_id.clone()),
        opt(l.external_id.clone()),
        opt(l.action.map(|v| v.to_string())),
        opt(l.direction.map(|v| v.to_string())),
        opt(l.status.map(|v| v.to_string())),
        opt(l.duration_ms.map(|v| v.to_string())),
        opt(l.error_message.clone()),
        opt(l.request_data.as_ref().map(|v| v.to_string())),
        opt(l.response_data.as_ref().map(|v| v.to_string())),
    ];
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_cell(out, cell);
    }
    out.push('\n');
}

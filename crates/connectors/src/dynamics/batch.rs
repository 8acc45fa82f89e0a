//! Dataverse `$batch` for customers and products: one `application/http` part per upsert,
//! no change set (each request stands alone), and each part's answer read back as a single
//! request's would be.

use super::DynamicsConnector;
use super::client::{Table, exported, header, write_error, write_path, written_row};
use super::mapping::resolve_references;
use crate::http::{HttpReply, RawBody, classify};
use crate::{ConnectorError, ExportOp, ExportResult, Exported, elapsed_ms};
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;
use std::time::Instant;
use uuid::Uuid;

/// One request of a `$batch`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRequest {
    pub method: &'static str,
    /// Absolute, percent-encoded.
    pub url: String,
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: Value,
}

/// A `multipart/mixed` `$batch` body: one `application/http` part per request, no change set
/// (each request stands alone, so one failure does not undo the others).
pub fn batch_body(boundary: &str, requests: &[&BatchRequest]) -> Vec<u8> {
    let mut out = String::new();
    for r in requests {
        out.push_str(&format!(
            "--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n{} {} HTTP/1.1\r\nContent-Type: application/json; charset=utf-8\r\n",
            r.method, r.url
        ));
        for (name, value) in &r.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(&format!("\r\n{}\r\n", r.body));
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out.into_bytes()
}

/// The answers of a `$batch` response, one per part, in order.
pub fn parse_batch_response(content_type: &str, body: &[u8]) -> Result<Vec<HttpReply>, String> {
    let boundary = content_type
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .filter(|b| !b.is_empty())
        .ok_or_else(|| format!("the content type `{content_type}` has no boundary"))?;
    let text = String::from_utf8_lossy(body);
    let (delimiter, close) = (format!("--{boundary}"), format!("--{boundary}--"));
    let mut parts: Vec<Vec<&str>> = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    let mut closed = false;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim_end() == close {
            parts.extend(current.take());
            closed = true;
            break;
        } else if line.trim_end() == delimiter {
            parts.extend(current.take());
            current = Some(Vec::new());
        } else if let Some(part) = current.as_mut() {
            part.push(line);
        }
    }
    if !closed {
        return Err("the body has no closing boundary".into());
    }
    parts.iter().map(|lines| batch_part(lines)).collect()
}

fn batch_part(lines: &[&str]) -> Result<HttpReply, String> {
    let blank = lines
        .iter()
        .position(|l| l.is_empty())
        .ok_or("a part has no blank line after its headers")?;
    let mime = &lines[..blank];
    if !mime.iter().any(|l| {
        l.split_once(':').is_some_and(|(n, v)| {
            n.trim().eq_ignore_ascii_case("content-type")
                && v.trim()
                    .to_ascii_lowercase()
                    .starts_with("application/http")
        })
    }) {
        return Err(format!("a part is not application/http: {mime:?}"));
    }
    let rest = &lines[blank + 1..];
    let status_line = rest.first().ok_or("a part has no status line")?;
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line `{status_line}`"))?;
    let rest = &rest[1..];
    let end = rest.iter().position(|l| l.is_empty()).unwrap_or(rest.len());
    let mut headers = reqwest::header::HeaderMap::new();
    for line in &rest[..end] {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line `{line}`"))?;
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) {
            headers.append(n, v);
        }
    }
    let body = rest.get(end + 1..).unwrap_or_default().join("\r\n");
    Ok(HttpReply {
        status,
        headers,
        body: body.trim_end().as_bytes().to_vec(),
    })
}

impl DynamicsConnector {
    /// The `$batch` request for one record (a PATCH upsert by key, or a PATCH by id), or why
    /// it cannot be sent.
    fn batch_request(&self, table: Table, op: &ExportOp) -> Result<BatchRequest, ConnectorError> {
        let body = resolve_references(op)?;
        let (path, if_match) = write_path(table, op, &body)?;
        Ok(BatchRequest {
            method: "PATCH",
            url: self.settings.api_url(&path).to_string(),
            headers: if if_match {
                vec![("If-Match", "*")]
            } else {
                Vec::new()
            },
            body,
        })
    }

    /// Sends one `$batch`; the answers come back in the requests' order.
    async fn send_batch(
        &self,
        requests: &[&BatchRequest],
    ) -> Result<Vec<HttpReply>, ConnectorError> {
        let boundary = format!("batch_{}", Uuid::new_v4());
        let raw = RawBody {
            content_type: format!("multipart/mixed; boundary={boundary}"),
            bytes: batch_body(&boundary, requests),
        };
        let url = self.settings.api_url("$batch");
        // Every request in it is a PATCH upsert or update: sending it again is safe.
        let reply = self
            .api_call(
                Method::POST,
                url,
                &[header("prefer", "odata.continue-on-error")],
                None,
                Some(raw),
                true,
            )
            .await?;
        let content_type = reply
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        parse_batch_response(content_type, &reply.body).map_err(|e| {
            ConnectorError::transient(format!(
                "POST $batch: the multipart answer could not be read ({e}): {}",
                crate::http::snippet(&reply.body)
            ))
        })
    }

    /// Customers and products: `$batch` requests of up to `batch_size`, each record's
    /// outcome read from its own part.
    pub(super) async fn export_batched(
        &self,
        table: Table,
        ops: Vec<ExportOp>,
    ) -> Vec<ExportResult> {
        let start = Instant::now();
        let mut outcomes: Vec<Option<Result<HttpReply, ConnectorError>>> = Vec::new();
        let mut pending: Vec<(usize, BatchRequest)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match self.batch_request(table, op) {
                Ok(r) => {
                    outcomes.push(None);
                    pending.push((i, r));
                }
                Err(e) => outcomes.push(Some(Err(e))),
            }
        }
        for chunk in pending.chunks(self.settings.batch_size) {
            let requests: Vec<&BatchRequest> = chunk.iter().map(|(_, r)| r).collect();
            let replies = self.send_batch(&requests).await;
            for (k, (i, _)) in chunk.iter().enumerate() {
                let reply = match &replies {
                    Ok(replies) => replies.get(k).cloned().ok_or_else(|| {
                        ConnectorError::transient(
                            "POST $batch: Dataverse's answer has no part for this record",
                        )
                    }),
                    Err(e) => Err(e.clone()),
                };
                if let Some(slot) = outcomes.get_mut(*i) {
                    *slot = Some(reply);
                }
            }
        }
        ops.iter()
            .zip(outcomes)
            .map(|(op, reply)| {
                let reply = reply
                    .unwrap_or_else(|| Err(ConnectorError::transient("the record was not sent")));
                let (outcome, response) = match self.batched_outcome(table, op, reply) {
                    Ok((exported, response)) => (Ok(exported), Some(response)),
                    Err(e) => (Err(e), None),
                };
                op.result(outcome, response, elapsed_ms(start))
            })
            .collect()
    }

    /// A record's outcome from its part of a `$batch` answer, classified as a single request's
    /// answer would be.
    fn batched_outcome(
        &self,
        table: Table,
        op: &ExportOp,
        reply: Result<HttpReply, ConnectorError>,
    ) -> Result<(Exported, Value), ConnectorError> {
        let what = format!("PATCH {} (in $batch)", table.set);
        let reply = reply
            .and_then(|r| match classify(&r, &what, false) {
                None => Ok(r),
                Some(e) => Err(self.http.redactor().error(e)),
            })
            .map_err(|e| write_error(table, op.action(), e))?;
        let row = written_row(&reply, op)?;
        Ok(exported(row, &reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamics::client::entity_id;
    use serde_json::json;

    #[test]
    fn batch_bodies_hold_one_application_http_part_per_request() {
        let upsert = BatchRequest {
            method: "PATCH",
            url: "https://o.crm.dynamics.com/api/data/v9.2/accounts(accountnumber='PAS-1')".into(),
            headers: Vec::new(),
            body: json!({"name": "One"}),
        };
        let update = BatchRequest {
            method: "PATCH",
            url: "https://o.crm.dynamics.com/api/data/v9.2/accounts(0b9a0b9a-0000-0000-0000-000000000001)".into(),
            headers: vec![("If-Match", "*")],
            body: json!({"name": "Two"}),
        };
        let body = String::from_utf8(batch_body("batch_x", &[&upsert, &update])).unwrap();
        assert_eq!(
            body,
            "--batch_x\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
             PATCH https://o.crm.dynamics.com/api/data/v9.2/accounts(accountnumber='PAS-1') HTTP/1.1\r\n\
             Content-Type: application/json; charset=utf-8\r\n\r\n{\"name\":\"One\"}\r\n\
             --batch_x\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
             PATCH https://o.crm.dynamics.com/api/data/v9.2/accounts(0b9a0b9a-0000-0000-0000-000000000001) HTTP/1.1\r\n\
             Content-Type: application/json; charset=utf-8\r\nIf-Match: *\r\n\r\n{\"name\":\"Two\"}\r\n\
             --batch_x--\r\n"
        );
    }

    #[test]
    fn batch_answers_parse_into_one_reply_per_part() {
        let id = "5f1b7f9c-0000-4000-8000-000000000001";
        let body = format!(
            "--batchresponse_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
             HTTP/1.1 204 No Content\r\nOData-Version: 4.0\r\nOData-EntityId: https://o.crm.dynamics.com/api/data/v9.2/accounts({id})\r\n\r\n\r\n\
             --batchresponse_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
             HTTP/1.1 400 Bad Request\r\nContent-Type: application/json; odata.metadata=minimal\r\n\r\n\
             {{\"error\":{{\"code\":\"0x80048d19\",\"message\":\"bad column\"}}}}\r\n\
             --batchresponse_1--\r\n"
        );
        let replies =
            parse_batch_response("multipart/mixed; boundary=batchresponse_1", body.as_bytes())
                .unwrap();
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0].status, 204);
        assert_eq!(
            replies[0]
                .headers
                .get("odata-entityid")
                .and_then(|v| v.to_str().ok())
                .and_then(entity_id),
            Some(Uuid::parse_str(id).unwrap())
        );
        assert!(replies[0].body.is_empty());
        assert_eq!(replies[1].status, 400);
        assert_eq!(
            replies[1].json("x").unwrap()["error"]["message"],
            "bad column"
        );
        // A 400 part is a rejection of that record, a 503 part a transient failure.
        assert!(matches!(
            classify(&replies[1], "x", false),
            Some(ConnectorError::Rejected {
                status: Some(400),
                ..
            })
        ));
        assert!(parse_batch_response("multipart/mixed", body.as_bytes()).is_err());
        let cut = body.replace("--batchresponse_1--", "");
        assert!(
            parse_batch_response("multipart/mixed; boundary=batchresponse_1", cut.as_bytes())
                .is_err()
        );
    }
}

//! OData 4.0 `$batch` bodies (`multipart/mixed`), as the Dataverse Web API takes and answers
//! them: one `application/http` part per request, each carrying a request line, headers, a
//! blank line and a body. Parsing is strict: anything else is a `400`.

use super::model::DvError;

/// At most this many requests in one batch (Dataverse's documented limit).
pub(crate) const MAX_BATCH_REQUESTS: usize = 1000;

/// One request inside a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InnerRequest {
    pub method: String,
    /// The URL as written: absolute, absolute path, or relative to the Web API root.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

fn malformed(message: impl Into<String>) -> DvError {
    DvError::new(400, "0x80048d19", message.into())
}

/// The boundary of a `multipart/mixed; boundary=…` content type.
pub(crate) fn boundary(content_type: &str) -> Result<String, DvError> {
    let mut params = content_type.split(';');
    let media = params.next().unwrap_or_default().trim();
    if !media.eq_ignore_ascii_case("multipart/mixed") {
        return Err(malformed(format!(
            "The batch request must have a 'multipart/mixed' content type, not '{media}'."
        )));
    }
    params
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .filter(|b| !b.is_empty() && b.len() <= 70)
        .ok_or_else(|| {
            malformed("The batch request's content type has no valid 'boundary' parameter.")
        })
}

/// Splits text into lines ending in CRLF (or a lone LF), without the line ends.
fn lines(text: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    for line in &mut out {
        if let Some(stripped) = line.strip_suffix(b"\r") {
            *line = stripped;
        }
    }
    out
}

fn header_lines(raw: &[&[u8]], what: &str) -> Result<Vec<(String, String)>, DvError> {
    raw.iter()
        .map(|line| {
            let line = std::str::from_utf8(line)
                .map_err(|_| malformed(format!("A {what} header is not UTF-8.")))?;
            let (name, value) = line
                .split_once(':')
                .filter(|(n, _)| !n.trim().is_empty() && !n.contains(' '))
                .ok_or_else(|| malformed(format!("Malformed {what} header line '{line}'.")))?;
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

fn find(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

/// The requests of a batch body, in order.
pub(crate) fn parse(body: &[u8], boundary: &str) -> Result<Vec<InnerRequest>, DvError> {
    let delimiter = format!("--{boundary}");
    let close = format!("--{boundary}--");
    let all = lines(body);
    // Split into parts at delimiter lines; nothing but blank lines may precede the first.
    let mut parts: Vec<Vec<&[u8]>> = Vec::new();
    let mut current: Option<Vec<&[u8]>> = None;
    let mut closed = false;
    for line in all {
        if closed {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Err(malformed("Content follows the batch's closing boundary."));
        }
        let trimmed = line.trim_ascii_end();
        if trimmed == close.as_bytes() {
            if let Some(part) = current.take() {
                parts.push(part);
            }
            closed = true;
        } else if trimmed == delimiter.as_bytes() {
            if let Some(part) = current.take() {
                parts.push(part);
            }
            current = Some(Vec::new());
        } else if let Some(part) = current.as_mut() {
            part.push(line);
        } else if !line.iter().all(u8::is_ascii_whitespace) {
            return Err(malformed(
                "The batch body must start with the boundary delimiter.",
            ));
        }
    }
    if !closed {
        return Err(malformed("The batch body has no closing boundary."));
    }
    if parts.is_empty() {
        return Err(malformed("The batch body holds no request."));
    }
    if parts.len() > MAX_BATCH_REQUESTS {
        return Err(malformed(format!(
            "The number of requests in the batch is {}, exceeding the maximum of {MAX_BATCH_REQUESTS}.",
            parts.len()
        )));
    }
    parts.iter().map(|p| part(p)).collect()
}

fn part(lines: &[&[u8]]) -> Result<InnerRequest, DvError> {
    // MIME headers, blank line, then the HTTP request.
    let blank = lines
        .iter()
        .position(|l| l.is_empty())
        .ok_or_else(|| malformed("A batch part has no blank line after its headers."))?;
    let mime = header_lines(&lines[..blank], "part")?;
    let content_type = find(&mime, "Content-Type").unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    if media.eq_ignore_ascii_case("multipart/mixed") {
        return Err(malformed(
            "Change sets are not supported by this simulator: send each request as its own part.",
        ));
    }
    if !media.eq_ignore_ascii_case("application/http") {
        return Err(malformed(format!(
            "A batch part must have Content-Type 'application/http', not '{content_type}'."
        )));
    }
    match find(&mime, "Content-Transfer-Encoding") {
        Some(v) if v.eq_ignore_ascii_case("binary") => {}
        _ => {
            return Err(malformed(
                "A batch part must have 'Content-Transfer-Encoding: binary'.",
            ));
        }
    }
    let rest = &lines[blank + 1..];
    let request_line = rest
        .first()
        .and_then(|l| std::str::from_utf8(l).ok())
        .ok_or_else(|| malformed("A batch part has no request line."))?;
    let mut words = request_line.split(' ');
    let (Some(method), Some(url), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(malformed(format!(
            "Malformed request line '{request_line}' in a batch part."
        )));
    };
    if version != "HTTP/1.1"
        || url.is_empty()
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
    {
        return Err(malformed(format!(
            "Malformed request line '{request_line}' in a batch part."
        )));
    }
    let rest = &rest[1..];
    let end = rest.iter().position(|l| l.is_empty()).unwrap_or(rest.len());
    let headers = header_lines(&rest[..end], "request")?;
    // The body: everything after the blank line; the line break before the next delimiter
    // belongs to the delimiter.
    let mut body_lines: Vec<&[u8]> = rest.get(end + 1..).unwrap_or_default().to_vec();
    while body_lines.last().is_some_and(|l| l.is_empty()) {
        body_lines.pop();
    }
    let body = body_lines.join(&b"\r\n"[..]);
    Ok(InnerRequest {
        method: method.to_owned(),
        url: url.to_owned(),
        headers,
        body,
    })
}

/// One answered request, rendered into the response body.
pub(crate) struct InnerResponse {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The response body for `answers`, delimited by `boundary`.
pub(crate) fn render(boundary: &str, answers: &[InnerResponse]) -> Vec<u8> {
    let mut out = Vec::new();
    for a in answers {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        out.extend_from_slice(
            b"Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n",
        );
        out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", a.status, a.reason).as_bytes());
        for (name, value) in &a.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&a.body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// Decodes `%XX` escapes in a URL path.
pub(crate) fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = path.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_parses_into_its_requests() {
        let body = "--batch_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nPATCH /api/data/v9.2/accounts(accountnumber='A') HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{\"name\":\"A\"}\r\n--batch_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nGET accounts HTTP/1.1\r\n\r\n\r\n--batch_1--\r\n";
        let b = boundary("multipart/mixed; boundary=batch_1").unwrap();
        let parts = parse(body.as_bytes(), &b).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].method, "PATCH");
        assert_eq!(parts[0].body, b"{\"name\":\"A\"}");
        assert_eq!(parts[1].url, "accounts");
        assert!(parts[1].body.is_empty());
        assert!(parse(b"garbage", &b).is_err());
        assert!(boundary("application/json").is_err());
        assert_eq!(percent_decode("a%27b%20c"), "a'b c");
    }
}

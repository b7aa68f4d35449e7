//! The agent's one HTTP client: a cloneable handle on a single `ureq` agent, so every user
//! (the HTTP backend, the alert webhooks) shares one connection pool. Blocking: call it from
//! a thread of your own, never from the flush path or a tokio task. TLS is rustls with the
//! webpki roots; the standard `HTTPS_PROXY` / `NO_PROXY` variables are honoured.
//!
//! Also here, for config validation: [`check_url`] and [`check_header`].

use std::io::Write;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;

/// How much of an answer's body is read (and thrown away) so its connection can be reused.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// Headers [`HttpClient::post_json`] sets itself; configs may not set them.
const RESERVED_HEADERS: [&str; 5] = [
    "content-type",
    "content-encoding",
    "content-length",
    "transfer-encoding",
    "host",
];

/// A POST that did not get a 2xx answer. The URL is shown without credentials or query.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("POST {url}: no answer within {} ms", timeout.as_millis())]
    Timeout { url: String, timeout: Duration },
    #[error("POST {url}: answered with status {status}")]
    Status { url: String, status: u16 },
    #[error("POST {url}: {source}")]
    Request { url: String, source: ureq::Error },
}

/// A shared HTTP client. Clones share one connection pool.
#[derive(Clone)]
pub struct HttpClient {
    agent: ureq::Agent,
}

impl Default for HttpClient {
    fn default() -> HttpClient {
        HttpClient::new()
    }
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

impl HttpClient {
    /// A client with its own connection pool. Redirects are not followed: a 3xx is an
    /// answer like any other non-2xx, because following one would turn a POST into a GET.
    pub fn new() -> HttpClient {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("tallyd/", env!("CARGO_PKG_VERSION")))
            .build();
        HttpClient {
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// POSTs `body` to `url` with `Content-Type: application/json`, and with
    /// `Content-Encoding: gzip` when `gzipped` says the body is already compressed (see
    /// [`gzip`]). `headers` are added as given (checked beforehand by [`check_header`]).
    /// The whole exchange, from DNS to the answer's body, takes at most `timeout`.
    /// Returns the 2xx status.
    ///
    /// # Errors
    /// A timeout, a failure to connect or to speak HTTP(S), or an answer that is not 2xx.
    pub fn post_json(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
        gzipped: bool,
        timeout: Duration,
    ) -> Result<u16, HttpError> {
        let answer = self.post(&Post {
            url,
            headers,
            fixed: &[],
            content_type: "application/json",
            content_encoding: gzipped.then_some("gzip"),
            body,
            timeout,
        })?;
        if (200..300).contains(&answer.status) {
            Ok(answer.status)
        } else {
            Err(HttpError::Status {
                url: display_url(url),
                status: answer.status,
            })
        }
    }

    /// POSTs one request and returns the answer, whatever its status.
    ///
    /// # Errors
    /// A timeout, or a failure to connect or to speak HTTP(S).
    pub fn post(&self, post: &Post<'_>) -> Result<Answer, HttpError> {
        let url = post.url;
        let mut request = self
            .agent
            .post(url)
            .header("Content-Type", post.content_type);
        if let Some(encoding) = post.content_encoding {
            request = request.header("Content-Encoding", encoding);
        }
        for (name, value) in post.fixed {
            request = request.header(*name, *value);
        }
        for (name, value) in post.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let result = request
            .config()
            .timeout_global(Some(post.timeout))
            .build()
            .send(post.body);
        let mut response = match result {
            Ok(response) => response,
            Err(ureq::Error::Timeout(_)) => {
                return Err(HttpError::Timeout {
                    url: display_url(url),
                    timeout: post.timeout,
                });
            }
            Err(source) => {
                return Err(HttpError::Request {
                    url: display_url(url),
                    source,
                });
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Read the answer (bounded) so the connection goes back to the pool; failing to
        // read it does not undo the delivery. Its start goes into the logs of a refusal.
        let mut body = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .unwrap_or_default();
        body.truncate(1024);
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }
}

/// One POST: the configured headers plus the ones the output sets itself (`fixed`).
#[derive(Debug)]
pub struct Post<'a> {
    pub url: &'a str,
    pub headers: &'a [(String, String)],
    pub fixed: &'a [(&'a str, &'a str)],
    pub content_type: &'a str,
    pub content_encoding: Option<&'a str>,
    pub body: &'a [u8],
    pub timeout: Duration,
}

/// A receiver's answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// `Retry-After` in seconds, when given so.
    pub retry_after: Option<Duration>,
    /// The start of the body (at most 1 KiB), for logs.
    pub body: Vec<u8>,
}

/// Gzip-compresses a request body.
pub fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::default());
    encoder.write_all(body)?;
    encoder.finish()
}

/// Checks that `url` is an absolute http:// or https:// URL with a host.
///
/// # Errors
/// What is wrong, for a config error message.
pub fn check_url(url: &str) -> Result<(), String> {
    let uri = ureq::http::Uri::try_from(url).map_err(|e| format!("invalid url {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("url {url:?} must start with http:// or https://")),
    }
    match uri.host() {
        Some(host) if !host.is_empty() => Ok(()),
        _ => Err(format!("url {url:?} has no host")),
    }
}

/// Checks a configured request header: a valid name that tallyd does not set itself, and
/// a value without control characters.
///
/// # Errors
/// What is wrong, for a config error message.
pub fn check_header(name: &str, value: &str) -> Result<(), String> {
    ureq::http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("invalid header name {name:?}"))?;
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(format!("header {name} is set by tallyd"));
    }
    ureq::http::HeaderValue::from_str(value)
        .map_err(|_| format!("header {name}: the value holds a forbidden character"))?;
    Ok(())
}

/// `url` without user info, query or fragment, which may hold secrets: for logs.
pub fn display_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if scheme.is_empty() {
        format!("{host}{path}")
    } else {
        format!("{scheme}://{host}{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_or_https_with_a_host() {
        assert!(check_url("http://127.0.0.1:9/ingest").is_ok());
        assert!(check_url("https://metrics.example.com/ingest?x=1").is_ok());
        assert!(check_url("ftp://example.com/").is_err());
        assert!(check_url("example.com/ingest").is_err());
        assert!(check_url("http://").is_err());
        assert!(check_url("http://exa mple.com/").is_err());
    }

    #[test]
    fn headers_are_checked_and_reserved_ones_refused() {
        assert!(check_header("Authorization", "Bearer abc").is_ok());
        assert!(check_header("X-Scope", "").is_ok());
        assert!(check_header("Bad Name", "x").is_err());
        assert!(check_header("X-A", "line\nbreak").is_err());
        assert!(check_header("content-type", "text/plain").is_err());
        assert!(check_header("Content-Encoding", "br").is_err());
    }

    #[test]
    fn displayed_urls_lose_credentials_and_query() {
        assert_eq!(
            display_url("https://user:pw@host:8443/a/b?token=s3cret#f"),
            "https://host:8443/a/b"
        );
        assert_eq!(display_url("http://host"), "http://host");
        assert_eq!(display_url("http://host?k=v"), "http://host");
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let body = br#"{"metrics":[]}"#;
        let packed = gzip(body).expect("gzip");
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_end(&mut unpacked)
            .expect("gunzip");
        assert_eq!(unpacked, body);
    }
}

//! The HTTP transport every HTTP output delivers through: one POST per payload over the
//! agent's shared client, the answer classified by the output's [`RetryPolicy`].

use std::time::Duration;

use super::{Failure, Transport};
use crate::http::{HttpClient, HttpError, Post, display_url};

/// Which answers are worth another attempt. Connection errors and timeouts always are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Every non-2xx answer (the JSON `http` backend: a webhook-like receiver).
    Always,
    /// 5xx, and 429 when `retry_429` (Prometheus remote write): other 4xx are dropped.
    ServerErrors { retry_429: bool },
    /// 429, 502, 503 and 504 (OTLP/HTTP's retryable answers): others are dropped.
    Otlp,
}

impl RetryPolicy {
    fn retries(self, status: u16) -> bool {
        match self {
            RetryPolicy::Always => true,
            RetryPolicy::ServerErrors { retry_429 } => {
                status >= 500 || (status == 429 && retry_429)
            }
            RetryPolicy::Otlp => matches!(status, 429 | 502 | 503 | 504),
        }
    }
}

/// POSTs payloads to one URL.
pub struct HttpTransport {
    pub client: HttpClient,
    pub url: String,
    /// Configured headers, checked, `${VAR}`s expanded.
    pub headers: Vec<(String, String)>,
    /// Headers the output sets itself.
    pub fixed: Vec<(&'static str, &'static str)>,
    pub content_type: &'static str,
    pub content_encoding: Option<&'static str>,
    pub policy: RetryPolicy,
}

impl Transport for HttpTransport {
    fn describe(&self) -> String {
        display_url(&self.url)
    }

    fn deliver(&mut self, payload: &[u8], timeout: Duration) -> Result<(), Failure> {
        let answer = self
            .client
            .post(&Post {
                url: &self.url,
                headers: &self.headers,
                fixed: &self.fixed,
                content_type: self.content_type,
                content_encoding: self.content_encoding,
                body: payload,
                timeout,
            })
            .map_err(|e: HttpError| Failure::Retry {
                error: e.to_string(),
                after: None,
            })?;
        if (200..300).contains(&answer.status) {
            return Ok(());
        }
        let error = format!(
            "POST {}: answered {}: {}",
            display_url(&self.url),
            answer.status,
            String::from_utf8_lossy(&answer.body).trim()
        );
        if self.policy.retries(answer.status) {
            Err(Failure::Retry {
                error,
                after: answer.retry_after,
            })
        } else {
            Err(Failure::Reject { error })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_policy_retries_its_answers() {
        let rw = RetryPolicy::ServerErrors { retry_429: false };
        assert!(rw.retries(500) && rw.retries(503) && !rw.retries(429) && !rw.retries(400));
        let rw429 = RetryPolicy::ServerErrors { retry_429: true };
        assert!(rw429.retries(429) && !rw429.retries(404));
        let otlp = RetryPolicy::Otlp;
        assert!(otlp.retries(429) && otlp.retries(502) && otlp.retries(504));
        assert!(!otlp.retries(500) && !otlp.retries(400));
        assert!(RetryPolicy::Always.retries(400));
    }
}

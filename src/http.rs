// TEMPORARY: replaced by the shared HTTP client of the http-backend branch.
use std::time::Duration;
#[derive(Debug, Clone, Default)]
pub struct HttpClient {
    _private: (),
}
#[derive(Debug, thiserror::Error)]
#[error("http")]
pub struct HttpError;
impl HttpClient {
    pub fn post(
        &self,
        _url: &str,
        _headers: &[(String, String)],
        _body: &[u8],
        _gzip: bool,
        _timeout: Duration,
    ) -> Result<u16, HttpError> {
        Err(HttpError)
    }
}

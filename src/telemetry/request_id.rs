//! Request ids. Every HTTP request gets one — the client's `X-Request-Id` when it
//! is acceptable (`domain::ids::request_id_acceptable`), else a new UUIDv7 — which
//! is echoed in the response, recorded in the request's tracing span, and carried
//! with the interactions the request brought to the product actor and the writer,
//! whose flush log line names the requests it committed.

use std::fmt;

use warp::http::HeaderValue;

use crate::domain::ids::request_id_acceptable;

/// The request and response header.
pub const HEADER: &str = "x-request-id";

/// One request's id. Cloning shares the header's bytes (no allocation).
#[derive(Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The client's id when acceptable, else a new one.
    pub fn from_client_or_new(client: Option<&HeaderValue>) -> Self {
        match client {
            Some(value) if request_id_acceptable(value.as_bytes()) => Self(value.clone()),
            _ => Self::generate(),
        }
    }

    /// A new id: a UUIDv7 (time-ordered, so ids sort by arrival).
    pub fn generate() -> Self {
        let mut buffer = uuid::Uuid::encode_buffer();
        let text = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buffer);
        Self(HeaderValue::from_str(text).expect("a UUID is a valid header value"))
    }

    pub fn as_str(&self) -> &str {
        // Both constructors guarantee visible ASCII, for which `to_str` cannot fail.
        self.0.to_str().unwrap_or_default()
    }

    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_client_id_is_kept_anything_else_replaced() {
        let client = HeaderValue::from_static("checkout-42.retry:1");
        assert_eq!(
            RequestId::from_client_or_new(Some(&client)).as_str(),
            "checkout-42.retry:1"
        );
        for bad in [
            HeaderValue::from_static("two words"),
            HeaderValue::from_static(""),
            HeaderValue::from_bytes(&[b'a'; 65]).unwrap(),
        ] {
            let id = RequestId::from_client_or_new(Some(&bad));
            assert_ne!(id.header_value(), bad);
            assert!(uuid::Uuid::parse_str(id.as_str()).is_ok(), "{id}");
        }
        let fresh = RequestId::from_client_or_new(None);
        assert_eq!(
            uuid::Uuid::parse_str(fresh.as_str())
                .unwrap()
                .get_version_num(),
            7
        );
        assert_ne!(fresh, RequestId::generate());
    }
}

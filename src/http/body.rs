//! Request bodies: read with a hard size cap (with or without Content-Length), then
//! parsed as JSON with errors that name the offending field.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Stream, TryStreamExt};
use serde::de::DeserializeOwned;
use warp::{Filter, Rejection};

use super::problem::{ApiError, FieldError};

/// The raw body, at most `limit` bytes; larger → 413, before or while reading.
pub fn limited(limit: u64) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(move |declared, stream| collect(declared, stream, limit))
}

async fn collect<S, B>(declared: Option<u64>, stream: S, limit: u64) -> Result<Bytes, Rejection>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let too_large = || warp::reject::custom(ApiError::PayloadTooLarge { limit });
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.try_next().await.map_err(|_| {
        warp::reject::custom(ApiError::MalformedJson("the body could not be read".into()))
    })? {
        if (body.len() + chunk.remaining()) as u64 > limit {
            return Err(too_large());
        }
        body.put(chunk);
    }
    Ok(body.freeze())
}

/// Parses JSON: a syntax error is 400, a missing or mistyped field is 422 naming
/// the field by its path (`interactions[3].type`), and so is text holding the NUL
/// character ([`refuse_nul`]).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    refuse_nul(body)?;
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let data_message = err.inner().to_string();
        let path = err.path().to_string();
        let inner = err.into_inner();
        // A type error can surface before a syntax error further on; malformed
        // JSON is 400 whatever was noticed first (re-checked on errors only).
        let syntax_error = if inner.is_data() {
            serde_json::from_slice::<serde::de::IgnoredAny>(body).err()
        } else {
            Some(inner)
        };
        match syntax_error {
            Some(syntax) => ApiError::MalformedJson(syntax.to_string()),
            None => {
                let field = if path == "." { "body".to_owned() } else { path };
                ApiError::Invalid(vec![FieldError::new(field, strip_position(&data_message))])
            }
        }
    })?;
    deserializer
        .end()
        .map_err(|err| ApiError::MalformedJson(err.to_string()))?;
    Ok(value)
}

/// PostgreSQL's text and jsonb cannot hold the NUL character, so a JSON body with
/// one (`\u0000`) in a string or a key is refused with a 422 naming where. The
/// body is scanned for the escape; it is parsed again only when the scan finds one.
/// A body that is not JSON passes: its parser says what is wrong with it.
pub fn refuse_nul(body: &[u8]) -> Result<(), ApiError> {
    if !has_escaped_nul(body) {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(());
    };
    match nul_path(&value, "") {
        Some(path) => Err(ApiError::invalid(
            if path.is_empty() {
                "body".to_owned()
            } else {
                path
            },
            "must not contain the NUL character (\\u0000)",
        )),
        None => Ok(()),
    }
}

/// Whether the bytes hold `\u0000` as an escape (after an even run of other
/// backslashes, which escape each other). A vectorised search: this runs on every
/// request body.
fn has_escaped_nul(body: &[u8]) -> bool {
    memchr::memmem::find_iter(body, b"\\u0000")
        .any(|at| body[..at].iter().rev().take_while(|b| **b == b'\\').count() % 2 == 0)
}

/// The path (`interactions[0].data.note`) of the first string or key holding NUL.
fn nul_path(value: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(text) => text.contains('\0').then(|| path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_path(item, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            let inner = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if key.contains('\0') {
                Some(path.to_owned())
            } else {
                nul_path(item, &inner)
            }
        }),
        _ => None,
    }
}

/// serde_json appends " at line 1 column 42"; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        name: String,
        count: u32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Wrapper {
        items: Vec<Item>,
    }

    #[test]
    fn text_with_the_nul_character_is_refused_where_it_is() {
        let field = |body: &[u8]| match refuse_nul(body) {
            Err(ApiError::Invalid(errors)) => Some(errors[0].field.clone()),
            Ok(()) => None,
            Err(other) => panic!("{other:?}"),
        };
        assert_eq!(
            field(br#"{"items": [{"name": "a\u0000b", "count": 1}]}"#).as_deref(),
            Some("items[0].name")
        );
        assert_eq!(
            field(br#"{"data": {"k\u0000": 1}}"#).as_deref(),
            Some("data")
        );
        assert_eq!(field(br#""\u0000""#).as_deref(), Some("body"));
        // A backslash, then the text u0000: no NUL.
        assert_eq!(field(br#"{"name": "a\\u0000"}"#), None);
        assert_eq!(field(br#"{"name": "a\\\u0000"}"#).as_deref(), Some("name"));
        assert_eq!(field(b"not json \\u0000"), None);
        assert!(matches!(
            parse_json::<Wrapper>(br#"{"items": [{"name": "\u0000", "count": 1}]}"#),
            Err(ApiError::Invalid(_))
        ));
    }

    #[test]
    fn syntax_errors_are_malformed_and_field_errors_name_the_field() {
        assert!(matches!(
            parse_json::<Wrapper>(b"{\"items\": ["),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(
            parse_json::<Wrapper>(b""),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(
            parse_json::<Wrapper>(b"{\"items\": []} trailing"),
            Err(ApiError::MalformedJson(_))
        ));
        // A type error before a syntax error is still malformed JSON.
        assert!(matches!(
            parse_json::<Wrapper>(b"[1,2"),
            Err(ApiError::MalformedJson(_))
        ));
        match parse_json::<Wrapper>(
            br#"{"items": [{"name": "a", "count": 1}, {"name": "b", "count": -1}]}"#,
        ) {
            Err(ApiError::Invalid(errors)) => assert_eq!(errors[0].field, "items[1].count"),
            other => panic!("{other:?}"),
        }
        match parse_json::<Wrapper>(br#"{"items": [{"name": "a", "count": 1, "colour": 2}]}"#) {
            Err(ApiError::Invalid(errors)) => {
                assert!(errors[0].message.contains("colour"), "{errors:?}")
            }
            other => panic!("{other:?}"),
        }
        match parse_json::<Wrapper>(b"[]") {
            Err(ApiError::Invalid(errors)) => assert_eq!(errors[0].field, "body"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deeply_nested_json_is_refused_not_overflowed() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_json::<serde_json::Value>(deep.as_bytes()).is_err());
    }
}

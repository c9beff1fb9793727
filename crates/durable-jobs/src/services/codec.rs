//! Encoding of user values and internal records.
//!
//! User values (state, events) cross the wire as JSON values and are checked against the
//! job's Rust type here, so a schema mismatch is a `Validation` error with the failing path.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::errors::JobError;

/// Decodes a JSON value into `T`, reporting the path of the first mismatch.
pub fn decode_value<T: DeserializeOwned>(schema: &str, value: &Value) -> Result<T, JobError> {
    serde_path_to_error::deserialize(value).map_err(|e| validation(schema, e))
}

/// Decodes JSON bytes into `T`, reporting the path of the first mismatch. Bytes after the
/// value are refused, as `serde_json::from_slice` refuses them: a stored value with a valid
/// beginning and garbage after it is corrupt, not the value it begins with.
pub fn decode_bytes<T: DeserializeOwned>(schema: &str, bytes: &[u8]) -> Result<T, JobError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| validation(schema, e))?;
    de.end().map_err(|e| JobError::Validation {
        schema: schema.to_string(),
        path: ".".to_string(),
        message: e.to_string(),
    })?;
    Ok(value)
}

fn validation(schema: &str, e: serde_path_to_error::Error<serde_json::Error>) -> JobError {
    JobError::Validation {
        schema: schema.to_string(),
        path: e.path().to_string(),
        message: e.into_inner().to_string(),
    }
}

/// Encodes a user value to a JSON value.
pub fn to_value<T: Serialize>(schema: &str, value: &T) -> Result<Value, JobError> {
    serde_json::to_value(value).map_err(|e| JobError::Validation {
        schema: schema.to_string(),
        path: ".".to_string(),
        message: e.to_string(),
    })
}

/// Encodes an internal record.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, JobError> {
    serde_json::to_vec(value).map_err(|e| JobError::Storage {
        message: format!("cannot encode record: {e}"),
    })
}

/// Decodes an internal record read from `key`.
pub(crate) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, JobError> {
    serde_json::from_slice(bytes).map_err(|e| JobError::corrupt(key, e))
}

/// Decodes an optional internal record read from `key`.
pub(crate) fn decode_opt<T: DeserializeOwned>(
    key: &str,
    bytes: Option<&Vec<u8>>,
) -> Result<Option<T>, JobError> {
    bytes.map(|b| decode(key, b)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        inner: Vec<Inner>,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    #[test]
    fn bytes_after_the_value_are_refused() {
        assert_eq!(decode_bytes::<u32>("state", b" 1 ").ok(), Some(1));
        for bytes in [&b"1\xff"[..], b"1 2", b"{} x", b"[1]]"] {
            match decode_bytes::<serde_json::Value>("state", bytes) {
                Err(JobError::Validation { schema, path, .. }) => {
                    assert_eq!((schema.as_str(), path.as_str()), ("state", "."));
                }
                other => panic!("{bytes:?} decoded as {other:?}"),
            }
        }
    }

    #[test]
    fn stored_floats_decode_bit_for_bit() {
        for x in [
            -7.337215782349096e242_f64,
            -2.1602870924985646e166,
            2.638344616030823e-256,
        ] {
            let bytes = encode(&x).unwrap();
            let back: f64 = decode("state", &bytes).unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{x:e}");
        }
    }

    #[test]
    fn validation_errors_carry_the_path() {
        let v = serde_json::json!({"inner": [{"n": 1}, {"n": "two"}]});
        match decode_value::<Outer>("event", &v) {
            Err(JobError::Validation { schema, path, .. }) => {
                assert_eq!(schema, "event");
                assert_eq!(path, "inner[1].n");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

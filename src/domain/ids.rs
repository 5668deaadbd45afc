//! Identifiers and how they read and print: addresses and bytes32 ids are accepted
//! in any hex case and always printed as lowercase `0x…`.

use alloy::primitives::{Address, B256, keccak256};

/// A product id: `keccak256(lowercase domain)` unless given.
pub type ProductId = B256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must be a 0x-prefixed 20-byte hex address")]
    Address,
    #[error("must be a 0x-prefixed 32-byte hex value")]
    Bytes32,
    #[error("must not be the zero address")]
    ZeroAddress,
}

pub fn parse_address(text: &str) -> Result<Address, IdError> {
    let hex = text.strip_prefix("0x").ok_or(IdError::Address)?;
    if hex.len() != 40 {
        return Err(IdError::Address);
    }
    let bytes = hex::decode(hex).map_err(|_| IdError::Address)?;
    Ok(Address::from_slice(&bytes))
}

/// An address that can act, be paid or be called: any but the zero address (no
/// key signs for it, and a bank refuses to pay it, so a reward to it would block
/// its campaign's batches).
pub fn parse_account(text: &str) -> Result<Address, IdError> {
    match parse_address(text)? {
        Address::ZERO => Err(IdError::ZeroAddress),
        address => Ok(address),
    }
}

pub fn parse_bytes32(text: &str) -> Result<B256, IdError> {
    let hex = text.strip_prefix("0x").ok_or(IdError::Bytes32)?;
    if hex.len() != 64 {
        return Err(IdError::Bytes32);
    }
    let bytes = hex::decode(hex).map_err(|_| IdError::Bytes32)?;
    Ok(B256::from_slice(&bytes))
}

/// Lowercase `0x…` for any byte string (addresses, ids, hashes).
pub fn to_hex(bytes: impl AsRef<[u8]>) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// Longest request id taken from a client's `X-Request-Id`.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// Whether a client-supplied request id may be used as ours: 1 to 64 characters
/// of `A-Z a-z 0-9 - _ . :` — enough for UUIDs and trace ids, nothing that could
/// break a log line or a header.
pub fn request_id_acceptable(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The product id of a (normalized, lowercase) domain.
pub fn product_id_for_domain(domain: &str) -> ProductId {
    keccak256(domain.to_ascii_lowercase().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_short_and_plain() {
        for good in ["a", "0190f3c2-7b1e-7c3d-9f00-1234567890ab", "trace:1.2_3-x"] {
            assert!(request_id_acceptable(good.as_bytes()), "{good}");
        }
        let longest = "x".repeat(MAX_REQUEST_ID_LEN);
        assert!(request_id_acceptable(longest.as_bytes()));
        for bad in ["", "has space", "new\nline", "quote\"", "é", "a,b", "{x}"] {
            assert!(!request_id_acceptable(bad.as_bytes()), "{bad:?}");
        }
        assert!(!request_id_acceptable(format!("{longest}x").as_bytes()));
    }

    #[test]
    fn addresses_parse_in_any_case_and_print_lowercase() {
        let mixed = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
        let address = parse_address(mixed).unwrap();
        assert_eq!(to_hex(address), mixed.to_ascii_lowercase());
        assert_eq!(parse_address(&mixed.to_ascii_lowercase()).unwrap(), address);
        for bad in [
            "",
            "0x",
            "5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
            "0x5aae",
            "0xzzaeb6053f3e94c9b9a09f33669435e7ef1beaed",
        ] {
            assert_eq!(parse_address(bad), Err(IdError::Address), "{bad}");
            assert_eq!(parse_account(bad), Err(IdError::Address), "{bad}");
        }
        assert_eq!(parse_account(mixed), Ok(address));
        let zero = "0x0000000000000000000000000000000000000000";
        assert_eq!(parse_address(zero), Ok(Address::ZERO));
        assert_eq!(parse_account(zero), Err(IdError::ZeroAddress));
    }

    #[test]
    fn product_id_is_keccak_of_the_lowercase_domain() {
        // Published test vector: keccak256("hello").
        assert_eq!(
            to_hex(product_id_for_domain("HeLLo")),
            "0x1c8aff950685c2ed4bc3174f3472287b56d9517b9c948127319a09a7a36deac8"
        );
    }
}

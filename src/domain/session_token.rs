//! Session tokens: compact JWTs (RFC 7519) signed with HMAC-SHA256, carrying the
//! wallet that signed in. Verification is constant-time and allows no clock leeway.

use alloy::primitives::Address;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::ids::{parse_address, to_hex};

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;
pub const ISSUER: &str = "rewardflow";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The wallet, lowercase `0x…`.
    pub sub: String,
    pub iss: String,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Expires at, unix seconds.
    pub exp: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
}

/// A verified session: the wallet and when its token expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub wallet: Address,
    pub expires_at: i64,
}

pub fn mint(secret: &[u8], wallet: Address, now: i64, ttl_secs: i64) -> String {
    let claims = Claims {
        sub: to_hex(wallet),
        iss: ISSUER.into(),
        iat: now,
        exp: now + ttl_secs,
    };
    let payload = serde_json::to_vec(&claims).expect("claims serialize");
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = mac(secret, signing_input.as_bytes())
        .finalize()
        .into_bytes();
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

pub fn verify(secret: &[u8], token: &str, now: i64) -> Result<Session, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    let signing_input = &token[..header.len() + 1 + payload.len()];
    mac(secret, signing_input.as_bytes())
        .verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(TokenError::Malformed);
    }
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
    if claims.iss != ISSUER {
        return Err(TokenError::Malformed);
    }
    if now >= claims.exp {
        return Err(TokenError::Expired);
    }
    let wallet = parse_address(&claims.sub).map_err(|_| TokenError::Malformed)?;
    Ok(Session {
        wallet,
        expires_at: claims.exp,
    })
}

fn mac(secret: &[u8], input: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(input);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret-test-secret-test-secret";
    const WALLET: Address = Address::repeat_byte(0xab);

    #[test]
    fn a_minted_token_verifies_until_it_expires() {
        let token = mint(SECRET, WALLET, 1_000, 60);
        let session = verify(SECRET, &token, 1_059).unwrap();
        assert_eq!(session.wallet, WALLET);
        assert_eq!(session.expires_at, 1_060);
        assert_eq!(verify(SECRET, &token, 1_060), Err(TokenError::Expired));
    }

    #[test]
    fn tampering_or_another_secret_is_rejected() {
        let token = mint(SECRET, WALLET, 1_000, 60);
        assert_eq!(
            verify(b"other", &token, 1_000),
            Err(TokenError::BadSignature)
        );
        let other = mint(SECRET, Address::repeat_byte(0xcd), 1_000, 60);
        let forged = format!(
            "{}.{}",
            &other[..other.rfind('.').unwrap()],
            &token[token.rfind('.').unwrap() + 1..]
        );
        assert_eq!(
            verify(SECRET, &forged, 1_000),
            Err(TokenError::BadSignature)
        );
        for junk in ["", "a.b", "a.b.c.d", "!!.??.**"] {
            assert!(verify(SECRET, junk, 1_000).is_err(), "{junk}");
        }
    }

    #[test]
    fn the_none_algorithm_is_refused() {
        let payload = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Claims {
                sub: to_hex(WALLET),
                iss: ISSUER.into(),
                iat: 0,
                exp: i64::MAX,
            })
            .unwrap(),
        );
        let token = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
        assert_eq!(verify(SECRET, &token, 0), Err(TokenError::BadSignature));
    }
}

//! Sign-In with Ethereum (EIP-4361): parse the message, check its fields against
//! what we expect, and recover the EIP-191 signer.

use alloy::primitives::{Address, Signature};
use chrono::{DateTime, Utc};

const PREAMBLE: &str = " wants you to sign in with your Ethereum account:";

/// The fields of an EIP-4361 message that the service checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiweMessage {
    /// `host[:port]` as written (a scheme, if present, is dropped).
    pub domain: String,
    pub address: Address,
    pub statement: Option<String>,
    pub uri: String,
    pub version: String,
    pub chain_id: u64,
    pub nonce: String,
    pub issued_at: DateTime<Utc>,
    pub expiration_time: Option<DateTime<Utc>>,
    pub not_before: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiweError {
    #[error("the message is not an EIP-4361 message: {0}")]
    Malformed(String),
    #[error("the message's domain {0:?} is not accepted by this service")]
    WrongDomain(String),
    #[error("the message's version must be 1")]
    WrongVersion,
    #[error("the message is not valid yet")]
    NotYetValid,
    #[error("the message has expired")]
    Expired,
    #[error("the signature is not valid")]
    BadSignature,
    #[error("the signature was not made by the message's address")]
    SignerMismatch,
}

impl SiweError {
    /// A short, bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SiweError::Malformed(_) => "malformed",
            SiweError::WrongDomain(_) => "wrong_domain",
            SiweError::WrongVersion => "wrong_version",
            SiweError::NotYetValid => "not_yet_valid",
            SiweError::Expired => "expired",
            SiweError::BadSignature => "bad_signature",
            SiweError::SignerMismatch => "signer_mismatch",
        }
    }
}

fn malformed(what: &str) -> SiweError {
    SiweError::Malformed(what.to_owned())
}

impl SiweMessage {
    pub fn parse(text: &str) -> Result<Self, SiweError> {
        let mut lines = text.split('\n');
        let first = lines.next().ok_or_else(|| malformed("empty message"))?;
        let domain = first
            .strip_suffix(PREAMBLE)
            .ok_or_else(|| malformed("first line must end with the EIP-4361 preamble"))?;
        let domain = domain
            .split_once("://")
            .map_or(domain, |(_, d)| d)
            .to_owned();
        if domain.is_empty() || domain.contains(char::is_whitespace) {
            return Err(malformed("bad domain"));
        }
        // EIP-4361: the address in its EIP-55 checksum form, as wallets that
        // recognise sign-in messages (and warn about their domain) expect.
        let address = lines
            .next()
            .and_then(|l| Address::parse_checksummed(l, None).ok())
            .ok_or_else(|| malformed("second line must be the EIP-55 checksummed address"))?;

        // Then: an empty line, an optional statement, an empty line, the fields.
        let mut statement = None;
        let mut field_lines = Vec::new();
        for line in lines.by_ref() {
            if line.starts_with("URI: ") {
                field_lines.push(line);
                break;
            }
            if !line.is_empty() {
                if statement.is_some() {
                    return Err(malformed("the statement must be one line"));
                }
                statement = Some(line.to_owned());
            }
        }
        field_lines.extend(lines.by_ref().take_while(|l| !l.is_empty()));
        if lines.any(|l| !l.is_empty()) {
            return Err(malformed("text after the fields"));
        }

        let mut fields = Fields::default();
        let mut in_resources = false;
        for line in field_lines {
            if in_resources {
                if line.starts_with("- ") {
                    continue;
                }
                return Err(malformed("unexpected line after Resources"));
            }
            if line == "Resources:" {
                in_resources = true;
                continue;
            }
            let (key, value) = line
                .split_once(": ")
                .ok_or_else(|| malformed("fields must read `Key: value`"))?;
            fields.set(key, value)?;
        }

        let nonce = fields.nonce.ok_or_else(|| malformed("missing Nonce"))?;
        if nonce.len() < 8 || nonce.len() > 64 || !nonce.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(malformed("Nonce must be 8 to 64 letters or digits"));
        }
        Ok(SiweMessage {
            domain,
            address,
            statement,
            uri: fields.uri.ok_or_else(|| malformed("missing URI"))?,
            version: fields.version.ok_or_else(|| malformed("missing Version"))?,
            chain_id: fields
                .chain_id
                .ok_or_else(|| malformed("missing Chain ID"))?,
            nonce,
            issued_at: fields
                .issued_at
                .ok_or_else(|| malformed("missing Issued At"))?,
            expiration_time: fields.expiration_time,
            not_before: fields.not_before,
        })
    }

    /// Checks domain, version and validity window. `allowed_hosts` are compared
    /// with the message's host, ignoring the port, case-insensitively.
    pub fn check(
        &self,
        allowed_hosts: &[String],
        now: DateTime<Utc>,
        clock_skew_secs: i64,
    ) -> Result<(), SiweError> {
        let host = host_of(&self.domain);
        if !allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Err(SiweError::WrongDomain(self.domain.clone()));
        }
        if self.version != "1" {
            return Err(SiweError::WrongVersion);
        }
        let skew = chrono::Duration::seconds(clock_skew_secs);
        if self.issued_at > now + skew || self.not_before.is_some_and(|t| t > now + skew) {
            return Err(SiweError::NotYetValid);
        }
        if self.expiration_time.is_some_and(|t| t <= now) {
            return Err(SiweError::Expired);
        }
        Ok(())
    }
}

/// Recovers the EIP-191 (`personal_sign`) signer of `message` and checks it is
/// `expected`. High-s signatures are refused (EIP-2).
pub fn verify_signature(
    message: &str,
    signature_hex: &str,
    expected: Address,
) -> Result<(), SiweError> {
    let raw = signature_hex.strip_prefix("0x").unwrap_or(signature_hex);
    let bytes = hex::decode(raw).map_err(|_| SiweError::BadSignature)?;
    if bytes.len() != 65 {
        return Err(SiweError::BadSignature);
    }
    let signature = Signature::from_raw(&bytes).map_err(|_| SiweError::BadSignature)?;
    if signature.normalize_s().is_some() {
        return Err(SiweError::BadSignature);
    }
    let signer = signature
        .recover_address_from_msg(message.as_bytes())
        .map_err(|_| SiweError::BadSignature)?;
    if signer == expected {
        Ok(())
    } else {
        Err(SiweError::SignerMismatch)
    }
}

fn host_of(domain: &str) -> &str {
    // `[::1]:8080` keeps its brackets; `host:port` loses the port.
    if let Some(end) = domain.find(']') {
        return &domain[..=end];
    }
    domain.rsplit_once(':').map_or(domain, |(host, _)| host)
}

#[derive(Default)]
struct Fields {
    uri: Option<String>,
    version: Option<String>,
    chain_id: Option<u64>,
    nonce: Option<String>,
    issued_at: Option<DateTime<Utc>>,
    expiration_time: Option<DateTime<Utc>>,
    not_before: Option<DateTime<Utc>>,
    /// Where in `FIELD_ORDER` the next field may be.
    next: usize,
}

/// The fields in the order EIP-4361 writes them; each at most once.
const FIELD_ORDER: [&str; 8] = [
    "URI",
    "Version",
    "Chain ID",
    "Nonce",
    "Issued At",
    "Expiration Time",
    "Not Before",
    "Request ID",
];

impl Fields {
    fn set(&mut self, key: &str, value: &str) -> Result<(), SiweError> {
        let position = FIELD_ORDER
            .iter()
            .position(|k| *k == key)
            .ok_or_else(|| malformed(&format!("unknown field {key:?}")))?;
        if position < self.next {
            return Err(malformed(&format!("{key} out of order or repeated")));
        }
        self.next = position + 1;
        let time = |v: &str| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| malformed(&format!("{key} must be an RFC 3339 time")))
        };
        match key {
            "URI" => self.uri = Some(value.to_owned()),
            "Version" => self.version = Some(value.to_owned()),
            "Chain ID" => {
                self.chain_id = Some(
                    value
                        .parse()
                        .map_err(|_| malformed("Chain ID must be a number"))?,
                )
            }
            "Nonce" => self.nonce = Some(value.to_owned()),
            "Issued At" => self.issued_at = Some(time(value)?),
            "Expiration Time" => self.expiration_time = Some(time(value)?),
            "Not Before" => self.not_before = Some(time(value)?),
            "Request ID" => {}
            other => return Err(malformed(&format!("unknown field {other:?}"))),
        }
        Ok(())
    }
}

/// Builds an EIP-4361 message; used by clients, the CLI and tests.
pub fn format_message(
    domain: &str,
    address: Address,
    uri: &str,
    chain_id: u64,
    nonce: &str,
    issued_at: DateTime<Utc>,
    expiration_time: Option<DateTime<Utc>>,
) -> String {
    let mut text = format!(
        "{domain}{PREAMBLE}\n{}\n\nSign in to rewardflow.\n\nURI: {uri}\nVersion: 1\nChain ID: {chain_id}\nNonce: {nonce}\nIssued At: {}",
        address.to_checksum(None),
        issued_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    if let Some(expiration) = expiration_time {
        text.push_str(&format!(
            "\nExpiration Time: {}",
            expiration.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn hosts() -> Vec<String> {
        vec!["localhost".into(), "app.example".into()]
    }

    #[test]
    fn parses_what_it_formats() {
        let address = Address::repeat_byte(0x11);
        let text = format_message(
            "app.example:8443",
            address,
            "https://app.example",
            1,
            "abcdefgh12",
            now(),
            Some(now() + chrono::Duration::minutes(5)),
        );
        let message = SiweMessage::parse(&text).unwrap();
        assert_eq!(message.domain, "app.example:8443");
        assert_eq!(message.address, address);
        assert_eq!(message.nonce, "abcdefgh12");
        assert_eq!(message.chain_id, 1);
        assert_eq!(message.statement.as_deref(), Some("Sign in to rewardflow."));
        message.check(&hosts(), now(), 60).unwrap();
    }

    #[test]
    fn parses_a_message_without_statement_and_with_resources() {
        let text = "https://localhost wants you to sign in with your Ethereum account:\n0x1111111111111111111111111111111111111111\n\n\nURI: http://localhost\nVersion: 1\nChain ID: 31337\nNonce: 12345678\nIssued At: 2026-11-25T11:59:00Z\nRequest ID: r1\nResources:\n- https://a.example\n- https://b.example";
        let message = SiweMessage::parse(text).unwrap();
        assert_eq!(message.domain, "localhost");
        assert_eq!(message.statement, None);
        message.check(&hosts(), now(), 60).unwrap();
    }

    #[test]
    fn rejects_malformed_messages() {
        let good = format_message(
            "localhost",
            Address::ZERO,
            "http://localhost",
            1,
            "abcdefgh",
            now(),
            None,
        );
        let cases = [
            String::new(),
            good.replace(PREAMBLE, " wants your money"),
            good.replace("0x0000000000000000000000000000000000000000", "0xnope"),
            good.replace("Nonce: abcdefgh", "Nonce: short"),
            good.replace("Nonce: abcdefgh\n", ""),
            good.replace("Chain ID: 1", "Chain ID: one"),
            good.replace("Issued At: ", "Issued At: yesterday "),
            good.replace("URI: ", "Extra: x\nURI: "),
            format!("{good}\nColour: blue"),
            // Strictly EIP-4361: the checksummed address, the fields in their order
            // and once each, nothing after them.
            good.replace("Version: 1\nChain ID: 1", "Chain ID: 1\nVersion: 1"),
            good.replace("Version: 1", "Version: 1\nVersion: 1"),
            format!("{good}\n\nSomething else"),
        ];
        for text in cases {
            assert!(
                matches!(SiweMessage::parse(&text), Err(SiweError::Malformed(_))),
                "{text:?}"
            );
        }
        // An address with letters: only its checksummed form is accepted.
        let address = Address::repeat_byte(0xab);
        let checksummed = address.to_checksum(None);
        let text = format_message(
            "localhost",
            address,
            "http://localhost",
            1,
            "abcdefgh",
            now(),
            None,
        );
        assert_eq!(SiweMessage::parse(&text).unwrap().address, address);
        let lowercase = text.replace(&checksummed, &checksummed.to_lowercase());
        assert_ne!(lowercase, text);
        assert!(matches!(
            SiweMessage::parse(&lowercase),
            Err(SiweError::Malformed(_))
        ));
    }

    #[test]
    fn checks_domain_version_and_validity_window() {
        let base = |domain: &str, issued: DateTime<Utc>, expires: Option<DateTime<Utc>>| {
            SiweMessage::parse(&format_message(
                domain,
                Address::ZERO,
                "http://x",
                1,
                "abcdefgh",
                issued,
                expires,
            ))
            .unwrap()
        };
        let minute = chrono::Duration::minutes(1);
        assert!(matches!(
            base("evil.example", now(), None).check(&hosts(), now(), 60),
            Err(SiweError::WrongDomain(_))
        ));
        assert!(
            base("LOCALHOST:3000", now(), None)
                .check(&hosts(), now(), 60)
                .is_ok()
        );
        assert_eq!(
            base("localhost", now() + minute * 2, None).check(&hosts(), now(), 60),
            Err(SiweError::NotYetValid)
        );
        assert_eq!(
            base("localhost", now() - minute * 2, Some(now() - minute)).check(&hosts(), now(), 60),
            Err(SiweError::Expired)
        );
        let mut message = base("localhost", now(), None);
        message.version = "2".into();
        assert_eq!(
            message.check(&hosts(), now(), 60),
            Err(SiweError::WrongVersion)
        );
    }

    #[test]
    fn recovers_the_signer_and_refuses_others() {
        let signer = PrivateKeySigner::random();
        let text = format_message(
            "localhost",
            signer.address(),
            "http://localhost",
            1,
            "abcdefgh",
            now(),
            None,
        );
        let signature = signer.sign_message_sync(text.as_bytes()).unwrap();
        let hex_sig = hex::encode(signature.as_bytes());
        verify_signature(&text, &hex_sig, signer.address()).unwrap();
        assert_eq!(
            verify_signature(&text, &hex_sig, Address::ZERO),
            Err(SiweError::SignerMismatch)
        );
        assert_eq!(
            verify_signature(&format!("{text} "), &hex_sig, signer.address()),
            Err(SiweError::SignerMismatch)
        );
        assert_eq!(
            verify_signature(&text, "0x1234", signer.address()),
            Err(SiweError::BadSignature)
        );
        // The malleable twin (s' = n - s, flipped parity) recovers the same key but is refused.
        let twin = Signature::new(
            signature.r(),
            alloy::primitives::U256::from_be_slice(&alloy::primitives::hex!(
                "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"
            )) - signature.s(),
            !signature.v(),
        );
        assert_eq!(
            verify_signature(&text, &hex::encode(twin.as_bytes()), signer.address()),
            Err(SiweError::BadSignature)
        );
    }
}

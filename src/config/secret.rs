//! A configuration value that must never appear in logs or in `print-config`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What may be shown: empty stays empty, a URL keeps everything but its password
    /// (in its authority or as a `password`/`sslpassword` query parameter), anything
    /// else becomes `***`.
    pub fn redacted(&self) -> String {
        if self.0.is_empty() {
            return String::new();
        }
        match self.0.split_once("://") {
            Some((scheme, rest)) => {
                let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                let tail = without_query_passwords(tail);
                match authority.rsplit_once('@') {
                    Some((userinfo, host)) => {
                        let user = userinfo.split(':').next().unwrap_or_default();
                        format!("{scheme}://{user}:***@{host}{tail}")
                    }
                    None => format!("{scheme}://{authority}{tail}"),
                }
            }
            None => "***".into(),
        }
    }
}

/// A URL's path and query with the values of password parameters masked.
fn without_query_passwords(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _))
                if key.eq_ignore_ascii_case("password")
                    || key.eq_ignore_ascii_case("sslpassword") =>
            {
                format!("{key}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

/// A text with every http(s) URL in it cut to its scheme and host: node providers
/// put API keys in the path or the query, and error texts (reqwest's name the URL)
/// reach logs, API answers and `print-config`.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = ["http://", "https://"]
        .iter()
        .filter_map(|scheme| rest.find(scheme))
        .min()
    {
        let (before, url) = rest.split_at(at);
        out.push_str(before);
        let end = url
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ','))
            .unwrap_or(url.len());
        let (url, after) = url.split_at(end);
        let scheme_len = url.find("://").map_or(0, |i| i + 3);
        let host_end = url[scheme_len..]
            .find(['/', '?', '#'])
            .map_or(url.len(), |i| scheme_len + i);
        let host = &url[..host_end];
        // Credentials in the authority go too.
        let host = match host[scheme_len..].rsplit_once('@') {
            Some((_, bare)) => format!("{}{bare}", &host[..scheme_len]),
            None => host.to_owned(),
        };
        out.push_str(&host);
        if host_end < url.len() {
            out.push_str("/…");
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({:?})", self.redacted())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// The session-token secret: `auth.jwt_secret` (environment), else the file named by
/// `auth.jwt_secret_file`, else `<dev.data_dir>/jwt-secret`, generated on first use.
/// `serve`, `dev` and `token` run with the same configuration therefore agree.
pub fn resolve_jwt_secret(settings: &super::Settings) -> Result<Secret, super::ConfigError> {
    const MIN_LEN: usize = 32;
    let auth = &settings.auth;
    let (secret, key) = if !auth.jwt_secret.is_empty() {
        (auth.jwt_secret.expose().to_owned(), "auth.jwt_secret")
    } else if !auth.jwt_secret_file.as_os_str().is_empty() {
        let text = std::fs::read_to_string(&auth.jwt_secret_file).map_err(|err| {
            super::ConfigError::invalid(
                "auth.jwt_secret_file",
                &format!("cannot read {}: {err}", auth.jwt_secret_file.display()),
            )
        })?;
        (text.trim().to_owned(), "auth.jwt_secret_file")
    } else {
        let path = settings.dev.data_dir.join("jwt-secret");
        let generated = read_or_create_secret(&path).map_err(|err| {
            super::ConfigError::invalid(
                "dev.data_dir",
                &format!(
                    "cannot keep the generated session secret at {}: {err}",
                    path.display()
                ),
            )
        })?;
        (generated, "dev.data_dir")
    };
    if secret.len() < MIN_LEN {
        return Err(super::ConfigError::invalid(
            key,
            &format!("the session-token secret must be at least {MIN_LEN} characters"),
        ));
    }
    Ok(Secret::new(secret))
}

fn read_or_create_secret(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read_to_string(path) {
        Ok(text) => return Ok(text.trim().to_owned()),
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    use rand::distr::{Alphanumeric, SampleString};
    let secret = Alphanumeric.sample_string(&mut rand::rng(), 48);
    // create_new: if another process wins the race, use its secret.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            file.write_all(secret.as_bytes())?;
            tracing::info!(path = %path.display(), "generated a session-token secret");
            Ok(secret)
        }
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read_to_string(path)?.trim().to_owned())
        }
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn redaction_hides_passwords_and_opaque_values() {
        assert_eq!(Secret::new("").redacted(), "");
        assert_eq!(Secret::new("hunter2").redacted(), "***");
        assert_eq!(
            Secret::new("postgres://app:pw@127.0.0.1:5432/db").redacted(),
            "postgres://app:***@127.0.0.1:5432/db"
        );
        assert_eq!(
            Secret::new("postgres://127.0.0.1/db").redacted(),
            "postgres://127.0.0.1/db"
        );
        assert!(!format!("{:?}", Secret::new("hunter2")).contains("hunter2"));
        assert_eq!(
            Secret::new("postgres://db:5432/rf?user=app&password=s3cret&sslmode=require")
                .redacted(),
            "postgres://db:5432/rf?user=app&password=***&sslmode=require"
        );
    }

    #[test]
    fn urls_in_texts_keep_their_host_only() {
        use super::redact_urls;
        assert_eq!(
            redact_urls(
                "node: error sending request for url (https://eth.example/v2/KEY123) and more"
            ),
            "node: error sending request for url (https://eth.example/…) and more"
        );
        assert_eq!(
            redact_urls("http://u:p@127.0.0.1:8545/?apikey=K http://127.0.0.1:8545"),
            "http://127.0.0.1:8545/… http://127.0.0.1:8545"
        );
        assert_eq!(redact_urls("no url here"), "no url here");
    }
}

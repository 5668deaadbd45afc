//! What a valid product looks like: its domain, name, origins and roles.

/// Roles bitmask of `product_administrators` (SPEC §3). The owner has all of them.
pub mod roles {
    pub const ADMIN: i32 = 1;
    pub const CAMPAIGN_MANAGER: i32 = 2;
    pub const INTERACTION_MANAGER: i32 = 4;
    pub const ORACLE_UPDATER: i32 = 8;
    pub const ALL: i32 = ADMIN | CAMPAIGN_MANAGER | INTERACTION_MANAGER | ORACLE_UPDATER;

    pub const NAMES: [(i32, &str); 4] = [
        (ADMIN, "admin"),
        (CAMPAIGN_MANAGER, "campaign_manager"),
        (INTERACTION_MANAGER, "interaction_manager"),
        (ORACLE_UPDATER, "oracle_updater"),
    ];

    /// The names of the bits set in `mask`.
    pub fn names(mask: i32) -> Vec<&'static str> {
        NAMES
            .iter()
            .filter(|(bit, _)| mask & bit != 0)
            .map(|(_, n)| *n)
            .collect()
    }

    /// The mask of role names; `None` if one is unknown.
    pub fn mask(names: &[String]) -> Option<i32> {
        names.iter().try_fold(0, |mask, name| {
            NAMES
                .iter()
                .find(|(_, n)| n == name)
                .map(|(bit, _)| mask | bit)
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductFieldError {
    #[error("must be a host name such as shop.example.com (no scheme, port or path)")]
    Domain,
    #[error("must be 1 to 200 characters")]
    Name,
    #[error("must be an origin such as https://shop.example.com (scheme, host and optional port)")]
    Origin,
    #[error("at most 32 origins")]
    TooManyOrigins,
}

/// Lowercases and checks a domain: DNS labels of letters, digits and hyphens.
pub fn normalize_domain(input: &str) -> Result<String, ProductFieldError> {
    let domain = input.trim().trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if domain.is_empty() || domain.len() > 253 || !domain.split('.').all(label_ok) {
        return Err(ProductFieldError::Domain);
    }
    Ok(domain)
}

pub fn validate_name(name: &str) -> Result<String, ProductFieldError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ProductFieldError::Name);
    }
    Ok(name.to_owned())
}

/// `scheme://host[:port]`, lowercased, scheme http or https, no path.
pub fn normalize_origin(input: &str) -> Result<String, ProductFieldError> {
    let lower = input.trim().to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://").ok_or(ProductFieldError::Origin)?;
    if scheme != "https" && scheme != "http" {
        return Err(ProductFieldError::Origin);
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    };
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(ProductFieldError::Origin);
    }
    normalize_domain(host).map_err(|_| ProductFieldError::Origin)?;
    if host.ends_with('.') {
        return Err(ProductFieldError::Origin);
    }
    Ok(lower)
}

pub fn normalize_origins(inputs: &[String]) -> Result<Vec<String>, ProductFieldError> {
    if inputs.len() > 32 {
        return Err(ProductFieldError::TooManyOrigins);
    }
    let mut origins = inputs
        .iter()
        .map(|o| normalize_origin(o))
        .collect::<Result<Vec<_>, _>>()?;
    origins.sort();
    origins.dedup();
    Ok(origins)
}

/// Whether a request's `Origin` may call the product's SDK routes: one of its
/// allowed origins, or `https://<domain>` when none are configured.
pub fn origin_allowed(domain: &str, allowed: &[String], origin: &str) -> bool {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    if allowed.is_empty() {
        origin == format!("https://{domain}")
    } else {
        allowed.contains(&origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_lowercased_host_names() {
        assert_eq!(
            normalize_domain(" Shop.Example.COM. ").unwrap(),
            "shop.example.com"
        );
        assert_eq!(normalize_domain("localhost").unwrap(), "localhost");
        for bad in [
            "",
            "https://shop.example",
            "shop.example/x",
            "shop example",
            "-a.example",
            "a..b",
            "shop.example:80",
        ] {
            assert_eq!(
                normalize_domain(bad),
                Err(ProductFieldError::Domain),
                "{bad:?}"
            );
        }
        assert!(normalize_domain(&"a".repeat(64)).is_err());
    }

    #[test]
    fn origins_have_a_scheme_a_host_and_maybe_a_port() {
        assert_eq!(
            normalize_origin("HTTPS://Shop.Example").unwrap(),
            "https://shop.example"
        );
        assert_eq!(
            normalize_origin("http://localhost:3000").unwrap(),
            "http://localhost:3000"
        );
        for bad in [
            "shop.example",
            "ftp://shop.example",
            "https://shop.example/",
            "https://shop.example:0",
            "https://shop.example:99999",
            "https://",
        ] {
            assert!(normalize_origin(bad).is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..33).map(|i| format!("https://s{i}.example")).collect();
        assert_eq!(
            normalize_origins(&many),
            Err(ProductFieldError::TooManyOrigins)
        );
    }

    #[test]
    fn origins_default_to_the_https_domain() {
        assert!(origin_allowed("shop.example", &[], "https://shop.example"));
        assert!(origin_allowed("shop.example", &[], "HTTPS://Shop.Example/"));
        assert!(!origin_allowed("shop.example", &[], "http://shop.example"));
        assert!(!origin_allowed("shop.example", &[], "https://evil.example"));
        let allowed = vec!["http://localhost:3000".to_owned()];
        assert!(origin_allowed(
            "shop.example",
            &allowed,
            "http://localhost:3000"
        ));
        assert!(!origin_allowed(
            "shop.example",
            &allowed,
            "https://shop.example"
        ));
    }

    #[test]
    fn role_names_and_masks() {
        assert_eq!(roles::names(roles::ALL).len(), 4);
        assert_eq!(
            roles::names(roles::CAMPAIGN_MANAGER),
            vec!["campaign_manager"]
        );
        let names = vec!["admin".to_owned(), "oracle_updater".to_owned()];
        assert_eq!(
            roles::mask(&names),
            Some(roles::ADMIN | roles::ORACLE_UPDATER)
        );
        assert_eq!(roles::mask(&["root".to_owned()]), None);
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(validate_name("  My shop ").unwrap(), "My shop");
        assert!(validate_name("   ").is_err());
        assert!(validate_name(&"é".repeat(201)).is_err());
        assert!(validate_name(&"é".repeat(200)).is_ok());
    }
}

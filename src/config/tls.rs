//! `[tls]`: where the edge's certificates come from (ACME, a local CA, or only the
//! operator's), and the ACME settings.

use std::path::PathBuf;

use serde::Deserialize;

/// Where certificates come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// From an ACME CA (Let's Encrypt by default). Using it accepts the CA's subscriber
    /// agreement.
    Acme,
    /// From a local CA made once in the data dir, for LAN use; clients must trust
    /// `certs/local-ca/ca.pem`. Unknown names get a certificate made on the fly.
    SelfSigned,
    /// None obtained; only the operator's certificates are served.
    Off,
}

/// Which ACME challenge proves control of a hostname.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AcmeChallenge {
    /// The CA fetches `http://<host>/.well-known/acme-challenge/<token>` (port 80).
    #[serde(rename = "http-01")]
    Http01,
    /// The CA makes a TLS handshake with ALPN `acme-tls/1` to `<host>:443`.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

/// The `[tls]` section of the daemon's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// `acme`, `self-signed` or `off`.
    pub mode: TlsMode,
    /// The ACME directory: `letsencrypt`, `letsencrypt-staging`, or the https URL of any
    /// ACME directory (a test CA such as pebble).
    pub acme_directory: String,
    /// The contact email given to the ACME CA (expiry and policy notices); none if unset.
    pub acme_email: Option<String>,
    /// `http-01` (answered on the HTTP listener) or `tls-alpn-01` (on the HTTPS listener).
    pub acme_challenge: AcmeChallenge,
    /// A PEM file of extra roots trusted for the ACME directory's own HTTPS, for a test CA
    /// that serves its directory with its own certificate. Relative to `data_dir`.
    pub acme_extra_roots: Option<PathBuf>,
    /// The operator's certificate directory, watched for changes. Relative to `data_dir`;
    /// `certs/manual` when unset.
    pub manual_dir: Option<PathBuf>,
    /// Obtained certificates are renewed this many days before they expire.
    pub renew_before_days: u32,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            mode: TlsMode::Acme,
            acme_directory: LETSENCRYPT.to_owned(),
            acme_email: None,
            acme_challenge: AcmeChallenge::Http01,
            acme_extra_roots: None,
            manual_dir: None,
            renew_before_days: 30,
        }
    }
}

const LETSENCRYPT: &str = "letsencrypt";

const LETSENCRYPT_STAGING: &str = "letsencrypt-staging";

/// The ACME directory `acme_directory` names: Let's Encrypt's (whose URLs the `tls` module
/// knows) or any other by its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeDirectory<'a> {
    LetsEncrypt,
    LetsEncryptStaging,
    Url(&'a str),
}

impl TlsConfig {
    /// Checks what serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        self.directory()?;
        if let Some(email) = &self.acme_email {
            let plausible = email
                .split_once('@')
                .is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'))
                && !email.chars().any(|c| c.is_whitespace() || c.is_control());
            if !plausible {
                return Err(format!(
                    "tls.acme_email `{email}` is not an email address such as ops@example.com"
                ));
            }
        }
        if !(1..=365).contains(&self.renew_before_days) {
            return Err("tls.renew_before_days must be between 1 and 365".to_owned());
        }
        Ok(())
    }

    /// Which ACME directory `acme_directory` names; the message names the key.
    pub fn directory(&self) -> Result<AcmeDirectory<'_>, String> {
        match self.acme_directory.as_str() {
            LETSENCRYPT => Ok(AcmeDirectory::LetsEncrypt),
            LETSENCRYPT_STAGING => Ok(AcmeDirectory::LetsEncryptStaging),
            url if url.starts_with("https://") && url.len() > "https://".len() => {
                Ok(AcmeDirectory::Url(url))
            }
            other => Err(format!(
                "tls.acme_directory `{other}` must be `{LETSENCRYPT}`, `{LETSENCRYPT_STAGING}` \
                 or an https:// URL"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_mistakes_are_named() {
        let err = toml::from_str::<TlsConfig>("renew_days = 3").unwrap_err();
        assert!(err.to_string().contains("renew_days"), "{err}");
        let err = toml::from_str::<TlsConfig>("mode = \"selfsigned\"").unwrap_err();
        assert!(err.to_string().contains("selfsigned"), "{err}");
        for (config, key) in [
            (
                TlsConfig {
                    acme_directory: "http://ca.example/dir".into(),
                    ..TlsConfig::default()
                },
                "acme_directory",
            ),
            (
                TlsConfig {
                    acme_email: Some("nobody".into()),
                    ..TlsConfig::default()
                },
                "acme_email",
            ),
            (
                TlsConfig {
                    renew_before_days: 0,
                    ..TlsConfig::default()
                },
                "renew_before_days",
            ),
        ] {
            let err = config.validate().unwrap_err();
            assert!(err.contains(key), "{err}");
        }
    }
}

//! Encryption at rest for secrets (webhook secrets, access tokens, secret env values):
//! XChaCha20-Poly1305 with a key kept in `<data_dir>/secret.key` (mode 0600).
//! Invariant: the store only ever holds sealed bytes for these values.

use std::{io::Write, path::Path, sync::Arc};

use chacha20poly1305::{
    aead::{Aead, AeadCore, KeyInit, OsRng},
    XChaCha20Poly1305, XNonce,
};

use crate::error::Error;

const KEY_FILE: &str = "secret.key";
const NONCE_LENGTH: usize = 24;

/// Seals and opens secrets. Cheap to clone.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Arc<XChaCha20Poly1305>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// Loads the key from the data dir, creating it (owner-only) on first use.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join(KEY_FILE);
        let key = match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == 32 => bytes,
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} is not a 32-byte key; restore it from a backup",
                        path.display()
                    ),
                ))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let key = XChaCha20Poly1305::generate_key(&mut OsRng).to_vec();
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(&path)?;
                file.write_all(&key)?;
                file.sync_all()?;
                key
            }
            Err(err) => return Err(err),
        };
        let cipher = XChaCha20Poly1305::new_from_slice(&key)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad key length"))?;
        Ok(Self {
            cipher: Arc::new(cipher),
        })
    }

    /// Encrypts `plaintext`: a random nonce followed by the ciphertext and tag.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Encryption with a valid key and nonce cannot fail for in-memory buffers.
        let ciphertext = self.cipher.encrypt(&nonce, plaintext).unwrap_or_default();
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    pub fn seal_str(&self, plaintext: &str) -> Vec<u8> {
        self.seal(plaintext.as_bytes())
    }

    /// Decrypts what `seal` produced; fails when the bytes were altered or sealed with
    /// another key.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, Error> {
        if sealed.len() < NONCE_LENGTH {
            return Err(Error::Internal("a sealed secret is truncated".to_owned()));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LENGTH);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| {
                Error::Internal(
                    "a sealed secret cannot be opened: altered, or secret.key changed".to_owned(),
                )
            })
    }

    pub fn open_string(&self, sealed: &[u8]) -> Result<String, Error> {
        String::from_utf8(self.open(sealed)?)
            .map_err(|_| Error::Internal("a sealed secret is not UTF-8".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_detects_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = SecretBox::load_or_create(dir.path()).unwrap();
        let sealed = secrets.seal_str("hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(secrets.open_string(&sealed).unwrap(), "hunter2");
        assert_ne!(sealed, secrets.seal_str("hunter2"), "fresh nonce each time");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(secrets.open(&tampered).is_err());

        // The same key is loaded again; another data dir has another key.
        let again = SecretBox::load_or_create(dir.path()).unwrap();
        assert_eq!(again.open_string(&sealed).unwrap(), "hunter2");
        let other = tempfile::tempdir().unwrap();
        assert!(SecretBox::load_or_create(other.path())
            .unwrap()
            .open(&sealed)
            .is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}

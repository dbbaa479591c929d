//! The encrypted envelope of a state backup: a header naming the key derivation, then the
//! tar stream sealed with XChaCha20-Poly1305 in the STREAM construction (64 KiB chunks,
//! each with its own tag and a counter in its nonce, the last one flagged as last).
//! Invariant: a reader returns only bytes that were authenticated, and reports the end of
//! the stream only after the chunk sealed as last, so a truncated, reordered or altered
//! file fails instead of yielding a shorter archive.
//!
//! Layout (all integers big-endian):
//! `CANTILA-STATE\0` | version (1 byte) | Argon2id memory KiB, iterations, lanes (3 x u32)
//! | salt (16) | nonce prefix (19) | key check (32) | chunks (64 KiB + 16-byte tag each,
//! the last one shorter or equal). The whole header is the associated data of every chunk.

use std::io::{self, Read, Write};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::{
    aead::{
        rand_core::RngCore,
        stream::{DecryptorBE32, EncryptorBE32},
        KeyInit, OsRng, Payload,
    },
    XChaCha20Poly1305,
};

use super::{archive::Passphrase, StateBackupError};

/// The first bytes of every encrypted state backup.
pub const MAGIC: &[u8; 14] = b"CANTILA-STATE\0";
/// The envelope's version; a newer one is refused with a clear message.
const VERSION: u8 = 1;
/// Plaintext bytes per sealed chunk.
const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
const SALT: usize = 16;
/// XChaCha20's 24-byte nonce less the 5 bytes STREAM keeps for its counter and last flag.
const NONCE_PREFIX: usize = 19;
const KEY_CHECK: usize = 32;
const HEADER: usize = MAGIC.len() + 1 + 12 + SALT + NONCE_PREFIX + KEY_CHECK;

/// Argon2id costs written with each archive: RFC 9106's second recommended option
/// (64 MiB, 3 passes), with one lane since the derivation runs on one thread.
const MEMORY_KIB: u32 = 64 * 1024;
const ITERATIONS: u32 = 3;
const LANES: u32 = 1;
/// Ceilings on what a header may ask for, so a crafted file cannot make a restore
/// allocate gigabytes or spin for hours before the passphrase is even checked.
const MAX_MEMORY_KIB: u32 = 1024 * 1024;
const MAX_ITERATIONS: u32 = 64;
const MAX_LANES: u32 = 16;

/// The key derivation's inputs, as written in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kdf {
    memory_kib: u32,
    iterations: u32,
    lanes: u32,
}

/// The cipher key and the check value that tells a wrong passphrase from a damaged file:
/// both halves of one Argon2id output, so the check reveals nothing about the key.
fn derive(
    passphrase: &Passphrase,
    kdf: Kdf,
    salt: &[u8],
) -> Result<([u8; 32], [u8; KEY_CHECK]), StateBackupError> {
    let params = Params::new(kdf.memory_kib, kdf.iterations, kdf.lanes, Some(64))
        .map_err(|err| StateBackupError::Damaged(format!("bad key derivation costs: {err}")))?;
    let mut out = [0u8; 64];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.expose().as_bytes(), salt, &mut out)
        .map_err(|err| StateBackupError::Damaged(format!("key derivation failed: {err}")))?;
    let mut key = [0u8; 32];
    let mut check = [0u8; KEY_CHECK];
    key.copy_from_slice(&out[..32]);
    check.copy_from_slice(&out[32..]);
    Ok((key, check))
}

/// Seals everything written to it; `finish` seals the last chunk and returns the inner
/// writer. Dropping it without `finish` leaves an archive that fails to open, as wanted.
pub struct SealingWriter<W: Write> {
    inner: W,
    encryptor: Option<EncryptorBE32<XChaCha20Poly1305>>,
    header: Vec<u8>,
    buffer: Vec<u8>,
}

impl<W: Write> SealingWriter<W> {
    /// Writes the header to `inner` (with a fresh salt and nonce prefix) and returns the
    /// writer of the sealed body.
    pub fn new(mut inner: W, passphrase: &Passphrase) -> Result<Self, StateBackupError> {
        let kdf = Kdf {
            memory_kib: MEMORY_KIB,
            iterations: ITERATIONS,
            lanes: LANES,
        };
        let mut salt = [0u8; SALT];
        OsRng.fill_bytes(&mut salt);
        let mut nonce_prefix = [0u8; NONCE_PREFIX];
        OsRng.fill_bytes(&mut nonce_prefix);
        let (key, check) = derive(passphrase, kdf, &salt)?;

        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.push(VERSION);
        header.extend_from_slice(&kdf.memory_kib.to_be_bytes());
        header.extend_from_slice(&kdf.iterations.to_be_bytes());
        header.extend_from_slice(&kdf.lanes.to_be_bytes());
        header.extend_from_slice(&salt);
        header.extend_from_slice(&nonce_prefix);
        header.extend_from_slice(&check);
        inner
            .write_all(&header)
            .map_err(StateBackupError::io("writing the archive"))?;

        let cipher = XChaCha20Poly1305::new((&key).into());
        let encryptor = EncryptorBE32::from_aead(cipher, (&nonce_prefix).into());
        Ok(Self {
            inner,
            encryptor: Some(encryptor),
            header,
            buffer: Vec::with_capacity(CHUNK),
        })
    }

    /// Seals the buffered rest as the last chunk (possibly empty) and returns the inner
    /// writer, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        let encryptor = self
            .encryptor
            .take()
            .ok_or_else(|| io::Error::other("the sealed stream was already finished"))?;
        let sealed = encryptor
            .encrypt_last(Payload {
                msg: &self.buffer,
                aad: &self.header,
            })
            .map_err(|_| io::Error::other("sealing the last chunk failed"))?;
        self.inner.write_all(&sealed)?;
        self.inner.flush()?;
        Ok(self.inner)
    }

    /// Seals the full buffer as a chunk that is not the last.
    fn seal_chunk(&mut self) -> io::Result<()> {
        let encryptor = self
            .encryptor
            .as_mut()
            .ok_or_else(|| io::Error::other("the sealed stream was already finished"))?;
        let sealed = encryptor
            .encrypt_next(Payload {
                msg: &self.buffer,
                aad: &self.header,
            })
            .map_err(|_| io::Error::other("sealing a chunk failed"))?;
        self.inner.write_all(&sealed)?;
        self.buffer.clear();
        Ok(())
    }
}

impl<W: Write> Write for SealingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // A full buffer is sealed only when more data comes, so the stream's real end is
        // always sealed by `finish` as the last chunk, even when it falls on a boundary.
        if self.buffer.len() == CHUNK {
            self.seal_chunk()?;
        }
        let taken = data.len().min(CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&data[..taken]);
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Why reading the sealed body stopped, kept so the caller can tell the operator more
/// than tar's wrapping of an I/O error would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFailure {
    /// A chunk failed authentication: bytes were altered, reordered or cut off.
    Altered,
    /// The file does not end with a chunk sealed as the last one: it was cut off, or its
    /// last chunk was altered (the cipher cannot tell the two apart).
    Truncated,
}

/// Opens what `SealingWriter` wrote; yields only authenticated plaintext.
pub struct OpeningReader<R: Read> {
    inner: R,
    decryptor: Option<DecryptorBE32<XChaCha20Poly1305>>,
    header: Vec<u8>,
    /// Opened plaintext not yet handed out, and how much of it was.
    plain: Vec<u8>,
    position: usize,
    /// The byte read past a chunk to learn whether another one follows.
    lookahead: Option<u8>,
    /// Set once the last chunk was opened.
    done: bool,
    failure: Option<OpenFailure>,
}

/// Whether `start` (the first bytes of a file) begin an encrypted state backup.
pub fn is_sealed(start: &[u8]) -> bool {
    start.starts_with(MAGIC)
}

impl<R: Read> OpeningReader<R> {
    /// Reads the header from `inner` (whose first bytes are `MAGIC`), derives the key and
    /// checks the passphrase against the header's check value.
    pub fn new(mut inner: R, passphrase: &Passphrase) -> Result<Self, StateBackupError> {
        let mut header = vec![0u8; HEADER];
        read_exact_or(&mut inner, &mut header[..MAGIC.len() + 1])?;
        if !is_sealed(&header) {
            return Err(StateBackupError::Damaged(
                "not an encrypted Cantila state backup".to_owned(),
            ));
        }
        let version = header[MAGIC.len()];
        if version != VERSION {
            return Err(StateBackupError::UnsupportedFormat {
                found: u32::from(version),
                known: u32::from(VERSION),
            });
        }
        read_exact_or(&mut inner, &mut header[MAGIC.len() + 1..])?;
        let mut at = MAGIC.len() + 1;
        let mut next_u32 = || {
            let value =
                u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
            at += 4;
            value
        };
        let kdf = Kdf {
            memory_kib: next_u32(),
            iterations: next_u32(),
            lanes: next_u32(),
        };
        if kdf.memory_kib > MAX_MEMORY_KIB
            || kdf.iterations > MAX_ITERATIONS
            || kdf.lanes > MAX_LANES
        {
            return Err(StateBackupError::Damaged(format!(
                "the header asks for key derivation costs beyond what is accepted \
                 ({} KiB, {} passes, {} lanes)",
                kdf.memory_kib, kdf.iterations, kdf.lanes
            )));
        }
        let salt = &header[at..at + SALT];
        let nonce_prefix = &header[at + SALT..at + SALT + NONCE_PREFIX];
        let check = &header[at + SALT + NONCE_PREFIX..HEADER];
        let (key, expected) = derive(passphrase, kdf, salt)?;
        if check != expected {
            return Err(StateBackupError::WrongPassphrase);
        }
        let cipher = XChaCha20Poly1305::new((&key).into());
        let decryptor = DecryptorBE32::from_aead(cipher, nonce_prefix.into());
        Ok(Self {
            inner,
            decryptor: Some(decryptor),
            header,
            plain: Vec::new(),
            position: 0,
            lookahead: None,
            done: false,
            failure: None,
        })
    }

    /// What stopped the stream early, if anything did.
    pub fn failure(&self) -> Option<OpenFailure> {
        self.failure
    }

    fn fail(&mut self, failure: OpenFailure) -> io::Error {
        self.failure = Some(failure);
        io::Error::new(
            io::ErrorKind::InvalidData,
            match failure {
                OpenFailure::Altered => "the archive was altered",
                OpenFailure::Truncated => "the archive is truncated or altered",
            },
        )
    }

    /// Reads and opens the next chunk into `plain`.
    fn open_chunk(&mut self) -> io::Result<()> {
        let mut sealed = Vec::with_capacity(CHUNK + TAG);
        if let Some(byte) = self.lookahead.take() {
            sealed.push(byte);
        }
        let wanted = (CHUNK + TAG - sealed.len()) as u64;
        (&mut self.inner).take(wanted).read_to_end(&mut sealed)?;
        let mut probe = [0u8; 1];
        let more = loop {
            match self.inner.read(&mut probe) {
                Ok(0) => break false,
                Ok(_) => break true,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        };
        if more && sealed.len() < CHUNK + TAG {
            // `take` stopped short only at the end of the file; more bytes after it
            // cannot happen with a regular file, but a stream must not be trusted.
            return Err(self.fail(OpenFailure::Altered));
        }
        if sealed.len() < TAG {
            return Err(self.fail(OpenFailure::Truncated));
        }
        let opened = if more {
            self.lookahead = Some(probe[0]);
            let decryptor = self
                .decryptor
                .as_mut()
                .ok_or_else(|| io::Error::other("the sealed stream was already finished"))?;
            decryptor.decrypt_next(Payload {
                msg: &sealed,
                aad: &self.header,
            })
        } else {
            self.done = true;
            let decryptor = self
                .decryptor
                .take()
                .ok_or_else(|| io::Error::other("the sealed stream was already finished"))?;
            decryptor.decrypt_last(Payload {
                msg: &sealed,
                aad: &self.header,
            })
        };
        match opened {
            Ok(plain) => {
                self.plain = plain;
                self.position = 0;
                Ok(())
            }
            // A file cut on a chunk boundary ends with a chunk sealed as "not last": it
            // fails here like any altered byte; both mean the file cannot be trusted.
            Err(_) if !more => Err(self.fail(OpenFailure::Truncated)),
            Err(_) => Err(self.fail(OpenFailure::Altered)),
        }
    }
}

impl<R: Read> Read for OpeningReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if let Some(failure) = self.failure {
            return Err(self.fail(failure));
        }
        while self.position == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.open_chunk()?;
        }
        let n = out.len().min(self.plain.len() - self.position);
        out[..n].copy_from_slice(&self.plain[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

fn read_exact_or(inner: &mut impl Read, buffer: &mut [u8]) -> Result<(), StateBackupError> {
    inner.read_exact(buffer).map_err(|err| {
        if err.kind() == io::ErrorKind::UnexpectedEof {
            StateBackupError::Damaged("the archive is truncated in its header".to_owned())
        } else {
            StateBackupError::io("reading the archive")(err)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passphrase() -> Passphrase {
        Passphrase::new("correct horse battery").unwrap()
    }

    fn seal(plain: &[u8]) -> Vec<u8> {
        let mut writer = SealingWriter::new(Vec::new(), &passphrase()).unwrap();
        writer.write_all(plain).unwrap();
        writer.finish().unwrap()
    }

    fn open(sealed: &[u8], passphrase: &Passphrase) -> Result<Vec<u8>, String> {
        let mut reader = OpeningReader::new(sealed, passphrase).map_err(|e| e.to_string())?;
        let mut plain = Vec::new();
        reader
            .read_to_end(&mut plain)
            .map_err(|_| format!("{:?}", reader.failure()))?;
        Ok(plain)
    }

    #[test]
    fn round_trips_every_size_around_a_chunk_boundary() {
        for size in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 7] {
            let plain: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let sealed = seal(&plain);
            assert!(is_sealed(&sealed));
            assert_eq!(open(&sealed, &passphrase()).unwrap(), plain, "size {size}");
        }
    }

    #[test]
    fn truncation_alteration_and_a_wrong_passphrase_fail() {
        let plain = vec![7u8; 2 * CHUNK + 100];
        let sealed = seal(&plain);
        let body = HEADER;
        // Cut on a chunk boundary, inside a chunk, and right after the header.
        for cut in [
            body + CHUNK + TAG,
            body + 2 * (CHUNK + TAG),
            sealed.len() - 1,
            body,
        ] {
            assert_eq!(
                open(&sealed[..cut], &passphrase()),
                Err("Some(Truncated)".to_owned()),
                "cut at {cut}"
            );
        }
        let mut altered = sealed.clone();
        altered[body + 10] ^= 1;
        assert_eq!(
            open(&altered, &passphrase()),
            Err("Some(Altered)".to_owned())
        );
        // The header is authenticated too (here: a salt byte, which also changes the key).
        let mut header = sealed.clone();
        header[MAGIC.len() + 14] ^= 1;
        assert!(open(&header, &passphrase()).is_err());
        let wrong = Passphrase::new("incorrect horse battery").unwrap();
        assert_eq!(
            open(&sealed, &wrong),
            Err(StateBackupError::WrongPassphrase.to_string())
        );
    }
}

//! Records at rest: AES-256-GCM with a random 96-bit nonce per write, the storage key as associated
//! data (a record copied under another key does not open), and a version byte in front.
//!
//! Keys rotate without downtime: a cipher holds one key that seals and any number of older keys
//! that still open. Give every replica the new key as a decryption key first, then make it the
//! encryption key everywhere, then drop the old one once its records have expired (a token's
//! lifetime).

use std::fmt;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, Generate, KeyInit, Nonce, Payload};
use zeroize::Zeroizing;

use crate::error::{FleetError, InvalidKey};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// The 256-bit key that encrypts tokens in the shared store. Give every replica the same one.
///
/// Keep it with your other secrets (a secret manager, an environment variable); make one with
/// `openssl rand -hex 32`. It is zeroed when dropped, and `Debug` never shows it.
///
/// ```
/// use spapi_rdt::fleet::EncryptionKey;
///
/// let key = EncryptionKey::from_hex(&"0f".repeat(32)).unwrap();
/// assert_eq!(format!("{key:?}"), "EncryptionKey(<redacted>)");
/// assert!(EncryptionKey::from_hex("too short").is_err());
/// assert!(EncryptionKey::from_slice(&[0; 16]).is_err());
/// ```
pub struct EncryptionKey(Zeroizing<[u8; 32]>);

impl EncryptionKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        EncryptionKey(Zeroizing::new(bytes))
    }

    /// A key from a slice that must be 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, InvalidKey> {
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() != key.len() {
            return Err(InvalidKey(()));
        }
        key.copy_from_slice(bytes);
        Ok(EncryptionKey(key))
    }

    /// A key from 64 hexadecimal digits (surrounding white space is ignored).
    pub fn from_hex(hex: &str) -> Result<Self, InvalidKey> {
        let hex = hex.trim().as_bytes();
        let mut key = Zeroizing::new([0u8; 32]);
        if hex.len() != 2 * key.len() {
            return Err(InvalidKey(()));
        }
        for (byte, pair) in key.iter_mut().zip(hex.chunks_exact(2)) {
            let high = digit(pair[0]).ok_or(InvalidKey(()))?;
            let low = digit(pair[1]).ok_or(InvalidKey(()))?;
            *byte = (high << 4) | low;
        }
        Ok(EncryptionKey(key))
    }
}

fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(<redacted>)")
    }
}

/// Seals records with its first key and opens them with any of its keys.
pub(crate) struct Cipher(Vec<Aes256Gcm>);

impl Cipher {
    #[cfg(test)]
    pub(crate) fn new(key: &EncryptionKey) -> Result<Self, InvalidKey> {
        Cipher::with_keys(&[key])
    }

    /// A cipher that seals with `keys[0]` and opens with any of `keys`; an error for no key.
    pub(crate) fn with_keys(keys: &[&EncryptionKey]) -> Result<Self, InvalidKey> {
        if keys.is_empty() {
            return Err(InvalidKey(()));
        }
        keys.iter()
            .map(|key| Aes256Gcm::new_from_slice(&key.0[..]).map_err(|_| InvalidKey(())))
            .collect::<Result<Vec<_>, _>>()
            .map(Cipher)
    }

    /// `VERSION | nonce | ciphertext and tag`, bound to `aad`.
    pub(crate) fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, FleetError> {
        let nonce = Nonce::<Aes256Gcm>::try_generate()
            .map_err(|e| FleetError::new("no random nonce for encryption").with_source(e))?;
        let key = self
            .0
            .first()
            .ok_or_else(|| FleetError::new("no encryption key"))?;
        let sealed = key
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| FleetError::new("the record could not be encrypted"))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plaintext, or `None` when the bytes were not sealed with this key for `aad`.
    pub(crate) fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let (&version, rest) = sealed.split_first()?;
        if version != VERSION || rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::<Aes256Gcm>::try_from(nonce).ok()?;
        self.0.iter().find_map(|key| {
            key.decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .ok()
            .map(Zeroizing::new)
        })
    }
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cipher(AES-256-GCM)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_records_open_only_with_their_key_and_place() {
        let cipher = Cipher::new(&EncryptionKey::from_bytes([7; 32])).unwrap();
        let secret = b"Atz.sprdt|the-secret-token";
        let a = cipher.seal(secret, b"key-a").unwrap();
        let b = cipher.seal(secret, b"key-a").unwrap();
        // A fresh nonce each time: equal plaintexts give different bytes.
        assert_ne!(a, b);
        assert!(!a.windows(secret.len()).any(|w| w == secret));
        assert_eq!(&cipher.open(&a, b"key-a").unwrap()[..], secret);
        assert!(cipher.open(&a, b"key-b").is_none());
        let other = Cipher::new(&EncryptionKey::from_bytes([8; 32])).unwrap();
        assert!(other.open(&a, b"key-a").is_none());
        let mut tampered = a.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(cipher.open(&tampered, b"key-a").is_none());
        for cut in 0..a.len() {
            assert!(cipher.open(&a[..cut], b"key-a").is_none());
        }
    }

    #[test]
    fn rotated_keys_open_old_records_and_seal_with_the_new_one() {
        let old = EncryptionKey::from_bytes([1; 32]);
        let new = EncryptionKey::from_bytes([2; 32]);
        let before = Cipher::with_keys(&[&old]).unwrap();
        let during = Cipher::with_keys(&[&new, &old]).unwrap();
        let after = Cipher::with_keys(&[&new]).unwrap();
        let written_before = before.seal(b"token", b"k").unwrap();
        // During the rotation, records written with the old key still open...
        assert_eq!(&during.open(&written_before, b"k").unwrap()[..], b"token");
        // ...and new ones are written with the new key, which replicas not yet rotated cannot read
        // (they fetch their own token) and fully rotated ones can.
        let written_during = during.seal(b"token", b"k").unwrap();
        assert!(before.open(&written_during, b"k").is_none());
        assert_eq!(&after.open(&written_during, b"k").unwrap()[..], b"token");
        assert!(after.open(&written_before, b"k").is_none());
        assert!(Cipher::with_keys(&[]).is_err());
    }

    #[test]
    fn hex_keys() {
        let key = EncryptionKey::from_hex(&format!(" {} ", "aB".repeat(32))).unwrap();
        assert_eq!(*key.0, [0xab; 32]);
        assert!(EncryptionKey::from_hex(&"g0".repeat(32)).is_err());
        assert!(EncryptionKey::from_hex(&"00".repeat(31)).is_err());
        assert!(EncryptionKey::from_slice(&[1; 32]).is_ok());
    }
}

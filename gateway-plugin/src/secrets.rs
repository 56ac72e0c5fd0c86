//! A local secret store with envelope encryption, as functions reference
//! secrets by name in their environment (ECS `secrets`, Lambda with
//! Secrets Manager) and receive the value only at invocation.
//!
//! Each secret is encrypted with its own random 256-bit data key
//! (AES-256-GCM, random 96-bit nonce, the secret's name as associated data
//! so a ciphertext cannot be moved to another name); the data key is
//! encrypted ("wrapped") with the store's master key, also AES-256-GCM.
//! The file holds only wrapped keys and ciphertexts:
//!
//! ```json
//! {"version": 1, "secrets": {"db-password": {"key": "<b64 nonce+wrapped key>", "value": "<b64 nonce+ciphertext>"}}}
//! ```
//!
//! The master key comes from the caller (the demo keeps it in a 0600 file
//! beside the store, or `TRACELAKE_SECRETS_KEY` as 64 hex digits); it never
//! enters the file. Writes are atomic (temporary file, then rename).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Why the store failed.
#[derive(Debug)]
pub enum SecretError {
    Io(std::io::Error),
    /// The file is not a secret store, or was tampered with.
    Corrupt(String),
    NotFound(String),
    /// The master key does not open the secret.
    WrongKey(String),
}

impl std::fmt::Display for SecretError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(error) => write!(f, "secret store: {error}"),
            Self::Corrupt(why) => write!(f, "secret store is corrupt: {why}"),
            Self::NotFound(name) => write!(f, "secret {name:?} does not exist"),
            Self::WrongKey(name) => {
                write!(
                    f,
                    "secret {name:?} cannot be decrypted with this master key"
                )
            }
        }
    }
}

impl std::error::Error for SecretError {}

impl From<std::io::Error> for SecretError {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sealed {
    /// Nonce then the data key encrypted with the master key, base64.
    key: String,
    /// Nonce then the value encrypted with the data key, base64.
    value: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    secrets: BTreeMap<String, Sealed>,
}

/// A master key: 32 bytes.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn generate() -> Self {
        let key = Aes256Gcm::generate_key(OsRng);
        Self(key.into())
    }

    /// From 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text.trim()).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Reads the key file, or creates it (mode 0600) with a new key.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Self::from_hex(&text).ok_or_else(|| {
                SecretError::Corrupt(format!("{} is not 64 hex digits", path.display()))
            });
        }
        let key = Self::generate();
        write_private(path, key.to_hex().as_bytes())?;
        Ok(key)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

fn seal(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> String {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer does not fail");
    let mut out = nonce.to_vec();
    out.extend(sealed);
    STANDARD.encode(out)
}

fn open(key: &[u8; 32], sealed: &str, aad: &[u8]) -> Option<Vec<u8>> {
    let bytes = STANDARD.decode(sealed).ok()?;
    if bytes.len() < 12 {
        return None;
    }
    let (nonce, ciphertext) = bytes.split_at(12);
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
}

/// The store: a file of sealed secrets.
#[derive(Debug)]
pub struct SecretStore {
    path: PathBuf,
    master: MasterKey,
    file: Mutex<StoreFile>,
}

impl SecretStore {
    /// Opens the store at `path` (created on first write).
    pub fn open(path: &Path, master: MasterKey) -> Result<Self, SecretError> {
        let file = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<StoreFile>(&bytes)
                .map_err(|error| SecretError::Corrupt(error.to_string()))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => StoreFile {
                version: 1,
                ..StoreFile::default()
            },
            Err(error) => return Err(error.into()),
        };
        Ok(Self {
            path: path.to_path_buf(),
            master,
            file: Mutex::new(file),
        })
    }

    /// Stores (or replaces) `name`.
    pub fn put(&self, name: &str, value: &str) -> Result<(), SecretError> {
        let data_key: [u8; 32] = Aes256Gcm::generate_key(OsRng).into();
        let sealed = Sealed {
            key: seal(&self.master.0, &data_key, name.as_bytes()),
            value: seal(&data_key, value.as_bytes(), name.as_bytes()),
        };
        let mut file = self.file.lock();
        file.secrets.insert(name.to_string(), sealed);
        let bytes = serde_json::to_vec_pretty(&*file)
            .map_err(|error| SecretError::Corrupt(error.to_string()))?;
        write_private(&self.path, &bytes)?;
        Ok(())
    }

    /// Decrypts `name`.
    pub fn get(&self, name: &str) -> Result<String, SecretError> {
        let sealed = self
            .file
            .lock()
            .secrets
            .get(name)
            .cloned()
            .ok_or_else(|| SecretError::NotFound(name.to_string()))?;
        let wrong = || SecretError::WrongKey(name.to_string());
        let data_key: [u8; 32] = open(&self.master.0, &sealed.key, name.as_bytes())
            .and_then(|key| key.try_into().ok())
            .ok_or_else(wrong)?;
        let value = open(&data_key, &sealed.value, name.as_bytes()).ok_or_else(wrong)?;
        String::from_utf8(value).map_err(|_| SecretError::Corrupt(format!("{name} is not UTF-8")))
    }

    pub fn names(&self) -> Vec<String> {
        self.file.lock().secrets.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_never_stored_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        let key = MasterKey::load_or_create(&dir.path().join("master.key")).unwrap();
        let store = SecretStore::open(&path, key.clone()).unwrap();
        let value = "hunter2-correct-horse-battery-staple";
        store.put("db-password", value).unwrap();
        store.put("api-token", "tok-123456789").unwrap();

        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(value), "plaintext in the store: {text}");
        assert!(!text.contains("tok-123456789"));
        assert!(
            !text.contains(&key.to_hex()),
            "the master key is not in the store"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }

        // Reopened with the same key: the values; another key: refused.
        let reopened = SecretStore::open(&path, key).unwrap();
        assert_eq!(reopened.get("db-password").unwrap(), value);
        assert_eq!(reopened.names(), ["api-token", "db-password"]);
        let other = SecretStore::open(&path, MasterKey::generate()).unwrap();
        assert!(matches!(
            other.get("db-password"),
            Err(SecretError::WrongKey(_))
        ));
        assert!(matches!(
            reopened.get("nope"),
            Err(SecretError::NotFound(_))
        ));

        // A ciphertext moved to another name does not open.
        let mut file: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        file["secrets"]["api-token"] = file["secrets"]["db-password"].clone();
        std::fs::write(&path, file.to_string()).unwrap();
        let tampered = SecretStore::open(&path, reopened.master.clone()).unwrap();
        assert!(matches!(
            tampered.get("api-token"),
            Err(SecretError::WrongKey(_))
        ));
        // Two puts of the same value differ (fresh keys and nonces).
        let twice = SecretStore::open(&dir.path().join("b.json"), MasterKey::generate()).unwrap();
        twice.put("a", "same").unwrap();
        twice.put("b", "same").unwrap();
        let file = twice.file.lock();
        assert_ne!(file.secrets["a"].value, file.secrets["b"].value);
    }
}

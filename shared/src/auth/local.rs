//! Local development: a per-checkout HS256 secret and a token minter.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::{MIN_HS256_SECRET_BYTES, Scope};

/// The file in the local data directory that holds the development secret.
pub const LOCAL_DEV_SECRET_FILE: &str = "dev-jwt-secret";

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("the customer id (sub) must not be empty")]
    EmptySubject,
    #[error("the HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes long")]
    WeakSecret,
    #[error("could not sign the token: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
}

#[derive(Serialize)]
struct MintedClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    scope: String,
    iat: u64,
    nbf: u64,
    exp: u64,
}

/// Mints an HS256 token for local development (the local server's `token`
/// command) and tests: `sub` = `customer_id`, `scope` = the scopes joined by
/// spaces, valid from now for `ttl`.
pub fn mint_hs256_token(
    secret: &str,
    issuer: &str,
    audience: &str,
    customer_id: &str,
    scopes: &[Scope],
    ttl: Duration,
) -> Result<String, MintError> {
    if customer_id.trim().is_empty() {
        return Err(MintError::EmptySubject);
    }
    // The authenticator refuses short secrets; fail here rather than hand
    // out a token that can never verify.
    if secret.len() < MIN_HS256_SECRET_BYTES {
        return Err(MintError::WeakSecret);
    }
    let now = jsonwebtoken::get_current_timestamp();
    let claims = MintedClaims {
        iss: issuer,
        aud: audience,
        sub: customer_id,
        scope: Scope::join(scopes),
        iat: now,
        nbf: now,
        exp: now.saturating_add(ttl.as_secs()),
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?;
    Ok(token)
}

/// The local-mode HS256 secret: `<data_dir>/dev-jwt-secret`, created on first
/// use with 32 random bytes from the OS's CSPRNG (hex, so 64 characters, used
/// as-is as the secret) and mode 0600. No secret lives in the repository, and
/// the server and the `token` command agree because both read this file.
///
/// Creation is race-free: the secret is written to a private temporary file
/// and hard-linked into place, which never overwrites. Of two processes
/// starting together, the loser reads the winner's complete file.
pub fn local_dev_secret(data_dir: &Path) -> io::Result<String> {
    let path = data_dir.join(LOCAL_DEV_SECRET_FILE);
    match read_secret(&path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        existing => return existing,
    }
    fs::create_dir_all(data_dir)?;
    let secret = random_hex_secret()?;
    let temporary = data_dir.join(format!(
        ".{LOCAL_DEV_SECRET_FILE}.{}.{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    write_private(&temporary, &secret)?;
    let linked = fs::hard_link(&temporary, &path);
    // Best effort: a leftover temporary file is harmless.
    let _ = fs::remove_file(&temporary);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created the local development JWT secret");
            Ok(secret)
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => read_secret(&path),
        Err(error) => Err(error),
    }
}

fn read_secret(path: &Path) -> io::Result<String> {
    let text = fs::read_to_string(path)?;
    let secret = text.trim();
    if secret.len() < MIN_HS256_SECRET_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} holds fewer than {MIN_HS256_SECRET_BYTES} characters; delete it to generate a new secret",
                path.display()
            ),
        ));
    }
    warn_if_readable_by_others(path);
    Ok(secret.to_owned())
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = fs::metadata(path)
        && metadata.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the local JWT secret is readable by other users; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

fn random_hex_secret() -> io::Result<String> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| io::Error::other("the system random number generator failed"))?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn write_private(path: &Path, secret: &str) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Set at creation, so the secret is never readable by others, even briefly.
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "auth-{name}-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn dev_secret_is_created_once_and_stable() {
        let dir = scratch_dir("secret").join("nested");
        let first = local_dev_secret(&dir).unwrap();
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        let second = local_dev_secret(&dir).unwrap();
        assert_eq!(first, second);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(LOCAL_DEV_SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        // Another directory gets another secret.
        let other = scratch_dir("secret-other");
        assert_ne!(local_dev_secret(&other).unwrap(), first);
        let _ = fs::remove_dir_all(dir.parent().unwrap());
        let _ = fs::remove_dir_all(other);
    }

    #[test]
    fn concurrent_creation_agrees() {
        let dir = scratch_dir("race");
        let secrets: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| local_dev_secret(&dir).unwrap()))
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap())
                .collect()
        });
        assert!(
            secrets.windows(2).all(|pair| pair[0] == pair[1]),
            "{secrets:?}"
        );
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_corrupt_secret_file_is_an_error_not_overwritten() {
        let dir = scratch_dir("corrupt");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(LOCAL_DEV_SECRET_FILE), "short\n").unwrap();
        let error = local_dev_secret(&dir).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            fs::read_to_string(dir.join(LOCAL_DEV_SECRET_FILE)).unwrap(),
            "short\n"
        );
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn mint_refuses_empty_subject_and_weak_secret() {
        let secret = "x".repeat(MIN_HS256_SECRET_BYTES);
        let ttl = Duration::from_secs(60);
        assert!(matches!(
            mint_hs256_token(&secret, "iss", "aud", " ", &[], ttl),
            Err(MintError::EmptySubject)
        ));
        assert!(matches!(
            mint_hs256_token("short", "iss", "aud", "c-1", &[], ttl),
            Err(MintError::WeakSecret)
        ));
        assert!(mint_hs256_token(&secret, "iss", "aud", "c-1", &[Scope::Read], ttl).is_ok());
    }
}

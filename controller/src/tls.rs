//! The server certificate: the operator's, or a self-signed one generated once into the data dir.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
}

/// Paths of the certificate and key to serve.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Returns `<data_dir>/tls/{cert,key}.pem`, generating them first if they do not exist. The
/// certificate names localhost, 127.0.0.1, ::1 and this host's name.
pub fn self_signed(data_dir: &Path) -> Result<(CertFiles, bool), TlsError> {
    let dir = data_dir.join("tls");
    let files = CertFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, source }
    };
    if files.cert.exists() && files.key.exists() {
        // A key written by an older version, or copied in, may be readable by others.
        restrict(&files.key).map_err(io(&files.key))?;
        return Ok((files, false));
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(host) =
        std::env::var("HOSTNAME").or_else(|_| std::fs::read_to_string("/etc/hostname"))
    {
        let host = host.trim().to_owned();
        if !host.is_empty() && !names.contains(&host) {
            names.push(host);
        }
    }
    let certified = rcgen::generate_simple_self_signed(names)?;
    write_private(&files.key, certified.signing_key.serialize_pem().as_bytes())
        .map_err(io(&files.key))?;
    std::fs::write(&files.cert, certified.cert.pem()).map_err(io(&files.cert))?;
    Ok((files, true))
}

#[cfg(unix)]
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies to a new file only: an existing one keeps its permissions otherwise.
    restrict(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// Makes the file readable and writable by its owner only.
#[cfg(unix)]
fn restrict(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

/// SHA-256 fingerprint of the first certificate in a PEM file, as `AB:CD:…`.
pub fn fingerprint(cert_pem: &Path) -> Result<String, TlsError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let no_cert = || TlsError::NoCertificate {
        path: cert_pem.to_path_buf(),
    };
    let der = CertificateDer::pem_file_iter(cert_pem)
        .map_err(|_| no_cert())?
        .next()
        .ok_or_else(no_cert)?
        .map_err(|_| no_cert())?;
    let digest = Sha256::digest(der.as_ref());
    Ok(digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_fingerprints() {
        let dir = std::env::temp_dir().join(format!("jsacc-tls-{}", uuid::Uuid::new_v4()));
        let (files, created) = self_signed(&dir).unwrap();
        assert!(created);
        let fp = fingerprint(&files.cert).unwrap();
        assert_eq!(fp.len(), 32 * 3 - 1);
        let (again, created) = self_signed(&dir).unwrap();
        assert!(!created);
        assert_eq!(fingerprint(&again.cert).unwrap(), fp);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn the_key_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = std::env::temp_dir().join(format!("jsacc-tls-{}", uuid::Uuid::new_v4()));
        let (files, _) = self_signed(&dir).unwrap();
        assert_eq!(mode(&files.key), 0o600);
        // A key left world-readable (an older version, a copy) is closed at the next start.
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
        self_signed(&dir).unwrap();
        assert_eq!(mode(&files.key), 0o600);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn fingerprint_of_garbage_is_an_error() {
        let path = std::env::temp_dir().join(format!("jsacc-notpem-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, "not a certificate").unwrap();
        assert!(matches!(
            fingerprint(&path),
            Err(TlsError::NoCertificate { .. })
        ));
        std::fs::remove_file(path).unwrap();
    }
}

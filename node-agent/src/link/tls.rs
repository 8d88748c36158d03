//! Trust in the controller's certificate (`ca_cert`): its certificates are the only roots, and
//! rustls's webpki verifier checks the controller against them as usual (chain, dates, name).
//!
//! One exception, for what the README promises: `ca_cert` may hold "the controller's
//! certificate" itself. webpki refuses two such certificates: a self-signed one made the usual
//! way (`openssl req -x509 …`) is marked `CA:TRUE`, and a CA refuses it as the server's own
//! (`CaUsedAsEndEntity`); one issued by a CA is no root of its own (`UnknownIssuer`: what
//! `jsagent enroll` saves, since it pins the controller's certificate alone). When the server
//! presents a certificate that is byte for byte one of `ca_cert`'s, those refusals are
//! overruled: the certificate is trusted exactly. Its validity dates and the name in the
//! controller URL are still checked, and the handshake signatures are verified with its key as
//! always.
//!
//! A `ca_cert` that cannot be read or holds no usable certificate is refused at start
//! ([`Trust::load`], a configuration error), so the agent never polls with a trust it cannot use.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// What to give as `ca_cert`, for error messages.
const WHAT_TO_GIVE: &str =
    "give the PEM file of the controller's certificate (<data-dir>/tls/cert.pem \
of a jsacc that made its own) or of the CA that signed it";

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read ca_cert {path}: {source}; {WHAT_TO_GIVE}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ca_cert {path} is not a readable PEM file ({reason}); {WHAT_TO_GIVE}")]
    Pem { path: PathBuf, reason: String },
    #[error(
        "no certificate in ca_cert {0} (no `-----BEGIN CERTIFICATE-----` block); {WHAT_TO_GIVE}"
    )]
    Empty(PathBuf),
    #[error("certificate {index} of ca_cert {path} cannot be trusted: {reason}; {WHAT_TO_GIVE}")]
    Unusable {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

/// The certificates of `ca_cert`, checked at start.
#[derive(Clone)]
pub struct Trust {
    path: PathBuf,
    certs: Vec<CertificateDer<'static>>,
    roots: Arc<RootCertStore>,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trust")
            .field("path", &self.path)
            .field("certificates", &self.certs.len())
            .finish()
    }
}

impl Trust {
    /// Reads `ca_cert`: every certificate in it, each usable as a root.
    pub(crate) fn load(path: &Path) -> Result<Trust, TrustError> {
        let pem = std::fs::read(path).map_err(|source| TrustError::Read {
            path: path.to_owned(),
            source,
        })?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TrustError::Pem {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TrustError::Empty(path.to_owned()));
        }
        let mut roots = RootCertStore::empty();
        for (i, cert) in certs.iter().enumerate() {
            roots.add(cert.clone()).map_err(|e| TrustError::Unusable {
                path: path.to_owned(),
                index: i + 1,
                reason: e.to_string(),
            })?;
        }
        Ok(Trust {
            path: path.to_owned(),
            certs,
            roots: Arc::new(roots),
        })
    }

    /// A rustls client configuration trusting only these certificates (see the module rules),
    /// offering HTTP/2 and HTTP/1.1 as reqwest would.
    pub(crate) fn client_config(&self) -> Result<ClientConfig, TrustError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki =
            WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider.clone())
                .build()
                .map_err(|e| TrustError::Setup(e.to_string()))?;
        let verifier = Arc::new(ExactOrWebPki {
            exact: self.certs.clone(),
            webpki,
            provider: provider.clone(),
        });
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TrustError::Setup(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// webpki's verifier, except that a server certificate found byte for byte in `ca_cert` is not
/// refused for being marked as a CA.
#[derive(Debug)]
struct ExactOrWebPki {
    exact: Vec<CertificateDer<'static>>,
    webpki: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ExactOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match verified {
            Err(e) if is_trusted_as_itself(&e) && self.is_exact(end_entity) => {
                check_dates(end_entity, now)?;
                let parsed = ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

impl ExactOrWebPki {
    fn is_exact(&self, cert: &CertificateDer<'_>) -> bool {
        self.exact.iter().any(|c| c.as_ref() == cert.as_ref())
    }
}

/// Whether webpki's refusal is one a certificate found in `ca_cert` overrules: a CA used as
/// the server's own, or a certificate whose issuer is not in `ca_cert`.
fn is_trusted_as_itself(e: &rustls::Error) -> bool {
    is_ca_used_as_end_entity(e)
        || matches!(
            e,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        )
}

/// A certificate trusted as itself must still be within its validity dates at `now`.
fn check_dates(cert: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let validity = parsed.validity();
    if secs < validity.not_before.timestamp() {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet,
        ));
    }
    if secs > validity.not_after.timestamp() {
        return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
    }
    Ok(())
}

/// Whether webpki refused a certificate for being a CA used as the server's own.
fn is_ca_used_as_end_entity(e: &rustls::Error) -> bool {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => matches!(
            other.0.downcast_ref::<webpki::Error>(),
            Some(webpki::Error::CaUsedAsEndEntity)
        ),
        _ => false,
    }
}

/// What an operator should do about a failed TLS handshake with the controller.
pub(crate) fn advice(e: &rustls::Error) -> &'static str {
    if is_ca_used_as_end_entity(e) {
        return "the controller serves a certificate marked as a CA (CA:TRUE) that is not in \
                ca_cert: put exactly that certificate into ca_cert (--ca-cert), or serve one \
                signed by a CA in it";
    }
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => {
                "the controller's certificate is neither in ca_cert nor signed by a certificate \
                 in it: set ca_cert (--ca-cert) to the controller's certificate \
                 (<data-dir>/tls/cert.pem of a jsacc that made its own) or to the CA that signed it"
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the controller's certificate does not name the host of the controller URL: use a \
                 host name the certificate lists, or give the controller a certificate for this \
                 name (jsacc --tls-cert)"
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => {
                "the controller's certificate is outside its validity dates: renew it \
                 (jsacc --tls-cert), or check this machine's clock"
            }
            _ => {
                "the controller's certificate is refused: check ca_cert and the certificate \
                 the controller serves (jsacc --tls-cert)"
            }
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the controller did not answer in TLS: if it runs with --insecure-http, give the \
             agent an http:// controller URL"
        }
        _ => "check that the controller URL points at a jsacc serving HTTPS, and ca_cert",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("jsagent-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_missing_or_certificate_less_file_is_refused_saying_what_to_give() {
        let d = dir("load");
        let err = Trust::load(&d.join("nope.pem")).unwrap_err().to_string();
        assert!(err.starts_with("cannot read ca_cert"), "{err}");
        assert!(err.contains("controller's certificate"), "{err}");

        let key = d.join("key.pem");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = Trust::load(&key).unwrap_err();
        assert!(matches!(err, TrustError::Empty(_)), "{err}");
        assert!(err.to_string().contains("BEGIN CERTIFICATE"), "{err}");

        let junk = d.join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(Trust::load(&junk).is_err());
        std::fs::remove_dir_all(d).unwrap();
    }

    /// A self-signed certificate for `names`, marked `CA:TRUE` or not, as PEM and DER.
    fn self_signed(names: &[&str], ca: bool) -> (String, CertificateDer<'static>) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), cert.der().clone())
    }

    fn verifier(pem: &str, name: &str) -> (Trust, ExactOrWebPki) {
        let d = dir(name);
        let path = d.join("ca.pem");
        std::fs::write(&path, pem).unwrap();
        let trust = Trust::load(&path).unwrap();
        std::fs::remove_dir_all(d).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki =
            WebPkiServerVerifier::builder_with_provider(trust.roots.clone(), provider.clone())
                .build()
                .unwrap();
        let verifier = ExactOrWebPki {
            exact: trust.certs.clone(),
            webpki,
            provider,
        };
        (trust, verifier)
    }

    fn verify(
        v: &impl ServerCertVerifier,
        cert: &CertificateDer<'_>,
        host: &str,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from(host.to_owned()).unwrap();
        v.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
    }

    /// The regression of issue 10 item 14: `openssl req -x509` marks its certificate CA:TRUE,
    /// and webpki alone refuses it as the server's own (the agent retried for ever).
    #[test]
    fn the_exact_certificate_of_ca_cert_is_trusted_though_marked_as_a_ca() {
        let (pem, der) = self_signed(&["localhost", "127.0.0.1"], true);
        let (trust, v) = verifier(&pem, "exact");
        let webpki_alone = verify(v.webpki.as_ref(), &der, "localhost").unwrap_err();
        assert!(is_ca_used_as_end_entity(&webpki_alone), "{webpki_alone:?}");
        verify(&v, &der, "localhost").unwrap();
        verify(&v, &der, "127.0.0.1").unwrap();
        // The name is still checked.
        let wrong = verify(&v, &der, "example.com").unwrap_err();
        assert!(
            matches!(
                wrong,
                rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })
            ),
            "{wrong:?}"
        );
        // And the whole client configuration builds on it.
        let config = trust.client_config().unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    /// A CA, and a certificate for `names` it issued (valid from `not_before` to `not_after`,
    /// seconds from now), the latter as PEM and DER.
    fn issued(
        names: &[&str],
        not_before: i64,
        not_after: i64,
    ) -> (String, CertificateDer<'static>) {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "jsacc test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut leaf = rcgen::CertificateParams::new(names).unwrap();
        let now = time_now();
        leaf.not_before = now + time::Duration::seconds(not_before);
        leaf.not_after = now + time::Duration::seconds(not_after);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        (cert.pem(), cert.der().clone())
    }

    fn time_now() -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }

    /// What `jsagent enroll` saves of a controller whose certificate a CA issued: that
    /// certificate alone. webpki alone cannot build a chain to it; it is trusted as itself.
    #[test]
    fn the_exact_certificate_of_ca_cert_is_trusted_though_a_ca_issued_it() {
        let (pem, der) = issued(&["localhost"], -60, 3600);
        let (_, v) = verifier(&pem, "issued");
        let webpki_alone = verify(v.webpki.as_ref(), &der, "localhost").unwrap_err();
        assert!(
            matches!(
                webpki_alone,
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
            ),
            "{webpki_alone:?}"
        );
        verify(&v, &der, "localhost").unwrap();
        assert!(
            verify(&v, &der, "example.com").is_err(),
            "the name is checked"
        );
        let (_, other) = issued(&["localhost"], -60, 3600);
        assert!(
            verify(&v, &other, "localhost").is_err(),
            "only that certificate"
        );
    }

    #[test]
    fn a_certificate_trusted_as_itself_must_be_within_its_dates() {
        let (_, der) = issued(&["localhost"], -7200, -3600);
        let expired = check_dates(&der, UnixTime::now()).unwrap_err();
        assert!(
            matches!(
                expired,
                rustls::Error::InvalidCertificate(CertificateError::Expired)
            ),
            "{expired:?}"
        );
        let (pem, der) = issued(&["localhost"], -7200, -3600);
        let (_, v) = verifier(&pem, "expired");
        let err = verify(&v, &der, "localhost").unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. }
                )
            ),
            "{err:?}"
        );
        let (pem, der) = issued(&["localhost"], 3600, 7200);
        let (_, v) = verifier(&pem, "not-yet");
        let err = verify(&v, &der, "localhost").unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
                )
            ),
            "{err:?}"
        );
    }

    #[test]
    fn another_certificate_marked_as_a_ca_is_not_trusted() {
        let (pem, _) = self_signed(&["localhost"], true);
        let (_, other) = self_signed(&["localhost"], true);
        let (_, v) = verifier(&pem, "other");
        let err = verify(&v, &other, "localhost").unwrap_err();
        assert!(is_ca_used_as_end_entity(&err), "{err:?}");
    }

    #[test]
    fn an_ordinary_self_signed_certificate_is_still_verified_by_webpki() {
        let (pem, der) = self_signed(&["localhost"], false);
        let (_, v) = verifier(&pem, "plain");
        verify(&v, &der, "localhost").unwrap();
        let (_, stranger) = self_signed(&["localhost"], false);
        let err = verify(&v, &stranger, "localhost").unwrap_err();
        // Both have rcgen's subject: webpki finds the root of that name, whose key did not sign it.
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer | CertificateError::BadSignature
                )
            ),
            "{err:?}"
        );
    }

    #[test]
    fn advice_names_what_to_fix() {
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert!(advice(&unknown).contains("set ca_cert"));
        let name = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        assert!(advice(&name).contains("host name"));
        let expired = rustls::Error::InvalidCertificate(CertificateError::Expired);
        assert!(advice(&expired).contains("clock"));
        let ca = rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
            Arc::new(webpki::Error::CaUsedAsEndEntity),
        )));
        assert!(advice(&ca).contains("put exactly that certificate into ca_cert"));
    }
}

//! Trust on first contact, pinned: while enrolling, the agent has no `ca_cert` yet, only the
//! SHA-256 fingerprint of the controller's certificate that `jsacc` printed at start. The
//! [`Pinned`] verifier accepts exactly the certificate with that fingerprint (and only if it
//! names the host of the controller URL, as the agent will check it later), verifies the
//! handshake signatures with its key as always, and keeps that certificate, which becomes the
//! agent's `ca_cert` (never the intermediates sent with it: they were not checked).

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// A SHA-256 fingerprint, 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// `AB:CD:…` as `jsacc` prints it; colons (or spaces) and case do not matter.
    pub(crate) fn parse(text: &str) -> Result<Fingerprint, String> {
        let hex: String = text
            .chars()
            .filter(|c| !matches!(c, ':' | ' ' | '-'))
            .collect();
        let bad = || {
            format!(
                "--ca-fingerprint `{text}`: 64 hex digits (colons optional), as jsacc prints \
                 its \"certificate SHA-256 fingerprint\" at start"
            )
        };
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(Fingerprint(bytes))
    }

    pub(crate) fn of(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|b| format!("{b:02X}")).collect();
        f.write_str(&parts.join(":"))
    }
}

/// What the verifier saw of the controller.
#[derive(Debug, Default)]
pub(crate) enum Seen {
    #[default]
    Nothing,
    /// The certificate had another fingerprint.
    Mismatch(Fingerprint),
    /// The pinned certificate, but not for the URL's host.
    WrongName(String),
    /// The pinned certificate (DER).
    Pinned(Vec<u8>),
}

/// Accepts only the certificate whose SHA-256 is the pinned one.
#[derive(Debug)]
pub(crate) struct Pinned {
    pin: Fingerprint,
    seen: Arc<Mutex<Seen>>,
    provider: Arc<CryptoProvider>,
}

impl Pinned {
    /// A rustls client configuration trusting only `pin`, and what it will have seen.
    pub(crate) fn client_config(
        pin: Fingerprint,
    ) -> Result<(ClientConfig, Arc<Mutex<Seen>>), String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let seen = Arc::new(Mutex::new(Seen::Nothing));
        let verifier = Arc::new(Pinned {
            pin,
            seen: seen.clone(),
            provider: provider.clone(),
        });
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok((config, seen))
    }

    fn record(&self, seen: Seen) {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = seen;
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = Fingerprint::of(end_entity.as_ref());
        if got != self.pin {
            self.record(Seen::Mismatch(got));
            return Err(rustls::Error::General(
                "certificate fingerprint mismatch".into(),
            ));
        }
        let parsed = ParsedCertificate::try_from(end_entity)?;
        if let Err(e) = rustls::client::verify_server_name(&parsed, server_name) {
            self.record(Seen::WrongName(server_name.to_str().into_owned()));
            return Err(e);
        }
        self.record(Seen::Pinned(end_entity.as_ref().to_vec()));
        Ok(ServerCertVerified::assertion())
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
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A DER certificate as a PEM block.
pub(crate) fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_with_or_without_colons_and_print_as_jsacc_does() {
        let colons = "AB:".repeat(31) + "CD";
        let fp = Fingerprint::parse(&colons).unwrap();
        assert_eq!(fp.to_string(), colons);
        assert_eq!(
            Fingerprint::parse(&colons.replace(':', "").to_lowercase()).unwrap(),
            fp
        );
        for bad in [
            "",
            "AB:CD",
            &"zz".repeat(32),
            &"ab".repeat(33),
            "é".repeat(32).as_str(),
        ] {
            let e = Fingerprint::parse(bad).unwrap_err();
            assert!(e.contains("--ca-fingerprint"), "{e}");
        }
    }

    #[test]
    fn only_the_pinned_certificate_is_kept_not_the_intermediates_sent_with_it() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["evil.example".into()]).unwrap();
        let der = cert.cert.der().clone();
        let seen = Arc::new(Mutex::new(Seen::Nothing));
        let verifier = Pinned {
            pin: Fingerprint::of(&der),
            seen: seen.clone(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        };
        let name = ServerName::try_from("localhost").unwrap();
        verifier
            .verify_server_cert(
                &der,
                &[other.cert.der().clone()],
                &name,
                &[],
                UnixTime::now(),
            )
            .expect("the pinned certificate is accepted");
        let kept = std::mem::take(&mut *seen.lock().unwrap());
        match kept {
            Seen::Pinned(kept) => assert_eq!(kept, der.as_ref()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pem_round_trips_through_rustls() {
        use rustls::pki_types::pem::PemObject;
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = cert.cert.der().to_vec();
        let text = pem(&der);
        let back: Vec<_> = CertificateDer::pem_slice_iter(text.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].as_ref(), der.as_slice());
    }
}

//! What every AWS SDK client (DynamoDB, Step Functions, and STS inside the
//! default credentials chain) shares: one HTTPS client, the credentials, the
//! region and the retry policy.
//!
//! Why not simply `aws_config::defaults(..).load()`: its HTTPS client trusts
//! the machine's whole CA store, which rustls parses when a client is built
//! (≈ 140 certificates, 75 % of a function's init instructions, measured in
//! `docs/benchmarks.md`), and the default credentials chain builds an STS
//! client, then DynamoDB and Step Functions each build the same HTTPS client
//! again. Here:
//!
//! - one HTTPS client (rustls on aws-lc, as the SDK's own default) trusts
//!   only [`AMAZON_ROOTS_PEM`], the roots every AWS endpoint chains to, plus
//!   the certificates of an optional bundle (`AWS_CA_BUNDLE`, for a proxy
//!   that inspects TLS). Verification stays fully on: a server whose chain
//!   ends elsewhere is refused (`tests/aws_tls.rs` proves it);
//! - given credentials (on Lambda: the environment's, see
//!   `lambda::config::aws_config`) replace the default chain, so its STS
//!   client is never built;
//! - everything else is the SDK's default: proxies from `HTTPS_PROXY` /
//!   `NO_PROXY`, timeouts, plain `http://` for a local endpoint (moto).

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Amazon Trust Services' roots: Amazon Root CA 1–4 and Starfield Services
/// Root Certificate Authority – G2. Compiled in, so building a client reads
/// no file and parses five certificates instead of the system's ≈ 140.
pub const AMAZON_ROOTS_PEM: &[u8] = include_bytes!("../../certs/amazon-trust-services-roots.pem");

#[derive(Debug, thiserror::Error)]
pub enum AwsSdkError {
    /// The extra CA bundle is not a list of PEM CA certificates.
    #[error("extra CA bundle: {0}")]
    CaBundle(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// How the SDK configuration is built; `lambda::config::aws_config` fills
/// it from the environment, tests fill it directly.
#[derive(Default)]
pub struct SdkSettings {
    /// `None` leaves the region to the SDK's default chain (environment,
    /// profile, instance metadata).
    pub region: Option<String>,
    /// `None` uses the SDK's default credentials chain (profiles, SSO, web
    /// identity, containers, instance metadata), which builds an STS client.
    pub credentials: Option<SharedCredentialsProvider>,
    /// PEM certificates trusted besides Amazon's roots.
    pub extra_roots_pem: Option<Vec<u8>>,
}

/// The SDK configuration every client is built from (`Builder::from(&sdk)`).
///
/// Retries: standard mode, 3 attempts with exponential backoff — the SDK's
/// default, set explicitly so it is a decision, not an accident. A request
/// still failing after that surfaces as 503 + Retry-After (API) or
/// `Transient` (steps, which Step Functions retries again).
pub async fn sdk_config(settings: SdkSettings) -> Result<SdkConfig, AwsSdkError> {
    let mut trust_store = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(AMAZON_ROOTS_PEM);
    if let Some(pem) = settings.extra_roots_pem {
        check_ca_bundle(&pem)?;
        trust_store = trust_store.with_pem_certificate(pem);
    }
    let tls_context = TlsContext::builder()
        .with_trust_store(trust_store)
        .build()
        .map_err(|e| AwsSdkError::Tls(e.to_string()))?;
    // The SDK's own default client, built the same way (aws-smithy-runtime's
    // `default_https_client`) but with this trust store. The SDK calls this
    // once per distinct connector setting and caches the connector, so
    // every client sharing this configuration shares its connections.
    let http_client = Builder::new().build_with_connector_fn(move |settings, components| {
        let mut connector = ConnectorBuilder::default()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(tls_context.clone());
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    });
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .retry_config(RetryConfig::standard().with_max_attempts(3));
    if let Some(region) = settings.region {
        loader = loader.region(Region::new(region));
    }
    if let Some(credentials) = settings.credentials {
        loader = loader.credentials_provider(credentials);
    }
    Ok(loader.load().await)
}

/// Checks a CA bundle the way the SDK's TLS set-up reads it (which panics
/// on a bad one): PEM certificates, each usable as a trust anchor, at least
/// one. Returns how many.
pub fn check_ca_bundle(pem: &[u8]) -> Result<usize, AwsSdkError> {
    let mut roots = rustls::RootCertStore::empty();
    for (index, cert) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let cert = cert.map_err(|e| {
            AwsSdkError::CaBundle(format!("certificate {} is not valid PEM: {e}", index + 1))
        })?;
        roots.add(cert).map_err(|e| {
            AwsSdkError::CaBundle(format!("certificate {} is not a usable CA: {e}", index + 1))
        })?;
    }
    match roots.len() {
        0 => Err(AwsSdkError::CaBundle(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        )),
        count => Ok(count),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_in_roots_are_the_five_amazon_trust_services_roots() {
        assert_eq!(check_ca_bundle(AMAZON_ROOTS_PEM).unwrap(), 5);
    }

    #[test]
    fn a_bundle_that_is_not_pem_certificates_is_refused_not_a_panic() {
        for bundle in [
            &b""[..],
            b"not a certificate",
            b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
            b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
        ] {
            let error = check_ca_bundle(bundle).unwrap_err();
            assert!(matches!(error, AwsSdkError::CaBundle(_)), "{error}");
        }
    }
}

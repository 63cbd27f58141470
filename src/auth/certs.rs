//! Client certificates: CA bundles that verify a presented chain, and the subject (CN, O) of
//! a certificate.
//!
//! The TLS layer asks for a client certificate and verifies it against the union of the
//! client CA and the request-header CA (or lets a client in without one). That says nothing
//! about *which* CA signed it, so each authenticator verifies the chain again against its own
//! bundle, as Go's `x509.Verifier` / `x509.Authenticator` do for every request.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;

/// A PEM bundle of CA certificates and a verifier for client chains that end in one of them.
#[derive(Clone)]
pub struct CaBundle {
    certs: Vec<CertificateDer<'static>>,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaBundle")
            .field("certs", &self.describe())
            .finish()
    }
}

/// Bundles are equal when they hold the same certificates in the same order.
impl PartialEq for CaBundle {
    fn eq(&self, other: &Self) -> bool {
        self.certs == other.certs
    }
}

impl CaBundle {
    /// Parses PEM text; other PEM sections are skipped, as Go's `CertsFromPEM` does. Errors
    /// say what is wrong, without the caller's key (callers add it).
    pub fn from_pem(pem: &str) -> Result<CaBundle, String> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("invalid PEM: {e}"))?;
        if certs.is_empty() {
            return Err("no PEM certificate found".into());
        }
        let mut roots = RootCertStore::empty();
        for (i, cert) in certs.iter().enumerate() {
            roots
                .add(cert.clone())
                .map_err(|e| format!("certificate {} is not a usable CA: {e}", i + 1))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| format!("cannot build a verifier: {e}"))?;
        Ok(CaBundle { certs, verifier })
    }

    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// Verifies `chain` (leaf first, then intermediates as presented) against this bundle:
    /// signatures, validity period, and extended key usage clientAuth (a certificate without
    /// an EKU extension passes, as with Go's `x509.Verify`).
    pub fn verify(&self, chain: &[CertificateDer<'_>]) -> Result<(), String> {
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| "no client certificate".to_string())?;
        self.verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map(|_| ())
            .map_err(|e| format!("verifying certificate {} failed: {e}", identify(leaf)))
    }

    /// For logs: each CA's subject and SHA-256 fingerprint prefix (certificates are public).
    pub fn describe(&self) -> String {
        let items: Vec<String> = self
            .certs
            .iter()
            .map(|c| {
                let cn = subject(c)
                    .map(|s| s.common_name)
                    .unwrap_or_else(|| "?".into());
                format!("CN={cn} sha256:{}", &fingerprint(c)[..16])
            })
            .collect();
        format!("[{}]", items.join(", "))
    }
}

/// The roots the TLS layer verifies client certificates against: every certificate of every
/// bundle, or `None` when there is none (then no client certificate is asked for).
pub fn union_roots(bundles: &[&CaBundle]) -> Option<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for bundle in bundles {
        // Each certificate was accepted by a RootCertStore when its bundle was parsed.
        let (_added, _ignored) = roots.add_parsable_certificates(bundle.certs.iter().cloned());
    }
    (!roots.is_empty()).then(|| Arc::new(roots))
}

/// The parts of a certificate subject Kubernetes reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// Empty when the subject has no CN. With several, the last one, like Go's `pkix.Name`.
    pub common_name: String,
    /// Every O, in order: the user's groups.
    pub organizations: Vec<String>,
}

/// The subject of a DER certificate, or `None` if it does not parse.
pub fn subject(der: &CertificateDer<'_>) -> Option<Subject> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let name = cert.subject();
    Some(Subject {
        common_name: name
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .last()
            .unwrap_or_default()
            .to_string(),
        organizations: name
            .iter_organization()
            .filter_map(|a| a.as_str().ok().map(str::to_string))
            .collect(),
    })
}

/// Lower-case hex SHA-256 of the DER bytes.
pub fn fingerprint(der: &CertificateDer<'_>) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, der.as_ref()).as_ref())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How a certificate is named in errors and logs (never its private parts, it has none).
fn identify(der: &CertificateDer<'_>) -> String {
    let cn = subject(der).map(|s| s.common_name).unwrap_or_default();
    format!("CN={cn:?} sha256:{}", &fingerprint(der)[..16])
}

#[cfg(test)]
pub(crate) mod testing {
    //! rcgen-made CAs and certificates for the tests of this module tree.

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    /// ConfigMap `data` from pairs, as the auth ConfigMap's tests write it.
    pub fn configmap_data(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub struct TestCa {
        pub pem: String,
        params: CertificateParams,
        key: KeyPair,
    }

    impl TestCa {
        pub fn new(cn: &str) -> TestCa {
            let key = KeyPair::generate().expect("CA key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let cert = params.self_signed(&key).expect("self-sign CA");
            TestCa {
                pem: cert.pem(),
                params,
                key,
            }
        }

        /// A client certificate (EKU clientAuth) with this CN and these O values.
        pub fn client(&self, cn: &str, orgs: &[&str]) -> Vec<CertificateDer<'static>> {
            self.client_with_orgs(cn, orgs).0
        }

        /// A client certificate and its key, for a TLS handshake.
        pub fn client_pair(
            &self,
            cn: &str,
        ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
            self.client_with_orgs(cn, &[])
        }

        fn client_with_orgs(
            &self,
            cn: &str,
            orgs: &[&str],
        ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
            self.leaf(cn, orgs, &[], vec![ExtendedKeyUsagePurpose::ClientAuth])
        }

        /// A certificate usable only for serving: not a client certificate.
        pub fn server_only(&self, cn: &str) -> Vec<CertificateDer<'static>> {
            self.server_pair(cn).0
        }

        /// A serving certificate for `dns` and its key.
        pub fn server_pair(
            &self,
            dns: &str,
        ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
            self.leaf(dns, &[], &[dns], vec![ExtendedKeyUsagePurpose::ServerAuth])
        }

        fn leaf(
            &self,
            cn: &str,
            orgs: &[&str],
            dns: &[&str],
            eku: Vec<ExtendedKeyUsagePurpose>,
        ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
            let key = KeyPair::generate().expect("leaf key");
            let names: Vec<String> = dns.iter().map(|d| d.to_string()).collect();
            let mut params = CertificateParams::new(names).expect("leaf params");
            params.distinguished_name.push(DnType::CommonName, cn);
            // rcgen keeps one value per attribute type, so a second O goes in under the same
            // OID (2.5.4.10) spelled as a custom type; two is the most this can make.
            assert!(orgs.len() <= 2, "at most two organizations");
            for (i, o) in orgs.iter().enumerate() {
                let ty = if i == 0 {
                    DnType::OrganizationName
                } else {
                    DnType::CustomDnType(vec![2, 5, 4, 10])
                };
                params.distinguished_name.push(ty, *o);
            }
            params.extended_key_usages = eku;
            let issuer = Issuer::from_params(&self.params, &self.key);
            let cert = params.signed_by(&key, &issuer).expect("sign leaf");
            let key_der = PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
            (vec![cert.der().clone()], key_der)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::TestCa;
    use super::*;

    #[test]
    fn verifies_only_chains_of_its_own_ca() {
        let ca = TestCa::new("front-proxy-ca");
        let other = TestCa::new("other-ca");
        let bundle = CaBundle::from_pem(&ca.pem).expect("bundle");
        bundle
            .verify(&ca.client("front-proxy-client", &[]))
            .expect("own client cert verifies");
        let err = bundle
            .verify(&other.client("front-proxy-client", &[]))
            .expect_err("foreign");
        assert!(err.contains("front-proxy-client"), "{err}");
        assert!(bundle.verify(&[]).is_err());
        assert!(
            bundle.verify(&ca.server_only("server")).is_err(),
            "serverAuth-only certificates are not client certificates"
        );
    }

    #[test]
    fn subject_cn_and_organizations() {
        let ca = TestCa::new("ca");
        let chain = ca.client("jane", &["dev", "ops"]);
        let s = subject(&chain[0]).expect("parses");
        assert_eq!(s.common_name, "jane");
        assert_eq!(s.organizations, ["dev", "ops"]);
        assert_eq!(fingerprint(&chain[0]).len(), 64);
    }

    #[test]
    fn pem_errors_and_union() {
        assert!(CaBundle::from_pem("").is_err());
        assert!(CaBundle::from_pem("not pem").is_err());
        let a = CaBundle::from_pem(&TestCa::new("a").pem).expect("a");
        let b = CaBundle::from_pem(&TestCa::new("b").pem).expect("b");
        let both = CaBundle::from_pem(&format!("{}{}", TestCa::new("c").pem, TestCa::new("d").pem))
            .expect("two");
        assert_eq!(both.certs().len(), 2);
        assert!(both.describe().contains("CN=c"), "{}", both.describe());
        assert_eq!(union_roots(&[&a, &b, &both]).map(|r| r.len()), Some(4));
        assert!(union_roots(&[]).is_none());
        assert_ne!(a, b);
        assert_eq!(a, a.clone());
    }
}

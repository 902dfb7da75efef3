//! Registry errors as one clear message each: what was not found, who refused whom, what
//! could not be reached and how to fix it.

use anyhow::anyhow;
use oci_client::errors::{OciDistributionError, OciErrorCode};

use super::Request;

/// What the pull was doing when the registry answered with an error.
#[derive(Clone, Copy)]
pub enum Step<'a> {
    /// Asking for a token or checking credentials.
    Login,
    /// Fetching the manifest or index the reference names.
    Manifest,
    /// Fetching one blob.
    Blob(&'a str),
}

pub fn explain(err: OciDistributionError, request: &Request, step: Step) -> anyhow::Error {
    let registry = request.reference.registry();
    let repo = format!("{registry}/{}", request.reference.repository());
    match err {
        OciDistributionError::UnauthorizedError { .. } => refused(request, None),
        OciDistributionError::AuthenticationFailure(reason) => {
            refused(request, Some(reason.trim()))
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let detail = envelope
                .errors
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                refused(request, Some(&detail))
            } else if codes.contains(&&OciErrorCode::Toomanyrequests) {
                anyhow!("registry {registry} refused the pull: too many requests ({detail}); try again later, or log in for a higher limit")
            } else if codes.contains(&&OciErrorCode::NameUnknown) {
                anyhow!("repository {repo} not found: the registry does not know it ({detail})")
            } else {
                not_found(request, step, &repo, &detail).unwrap_or_else(|| {
                    anyhow!("registry {registry} refused to serve {repo}: {detail}")
                })
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => {
            not_found(request, step, &repo, "404 not found")
                .unwrap_or_else(|| anyhow!("{} not found on {registry}", request.given))
        }
        OciDistributionError::ServerError { code, message, url } => anyhow!(
            "registry {registry} answered {code} for {url}: {}",
            message.trim()
        ),
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            unreachable(request, anyhow::Error::new(e))
        }
        OciDistributionError::DigestError(e) => match step {
            Step::Blob(digest) => {
                anyhow!("blob {digest} does not match its digest ({e}); nothing was imported")
            }
            _ => anyhow!(
                "the manifest of {} does not match its digest ({e}); nothing was imported",
                request.given
            ),
        },
        other => {
            anyhow::Error::new(other).context(format!("pull {} from {registry}", request.given))
        }
    }
}

/// Manifest or blob unknown: names the tag, digest or blob the registry lacks.
fn not_found(request: &Request, step: Step, repo: &str, detail: &str) -> Option<anyhow::Error> {
    match step {
        Step::Manifest => Some(
            match (request.reference.digest(), request.reference.tag()) {
                (Some(digest), _) => anyhow!("no manifest {digest} in {repo} ({detail})"),
                (None, Some(tag)) => anyhow!("tag {tag} not found in {repo} ({detail})"),
                (None, None) => anyhow!("{} not found ({detail})", request.given),
            },
        ),
        Step::Blob(digest) => Some(anyhow!(
            "{repo} lacks blob {digest}, which its manifest names ({detail})"
        )),
        Step::Login => None,
    }
}

/// 401 after the token dance, or a refused token request.
fn refused(request: &Request, detail: Option<&str>) -> anyhow::Error {
    let registry = request.reference.registry();
    let repo = request.reference.repository();
    let detail = detail
        .filter(|d| !d.is_empty())
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    match &request.credentials {
        Some(c) => anyhow!(
            "registry {registry} refused the credentials of {} from {} for {repo}{detail}; \
             log in again with `podman login {registry}` or `docker login {registry}`",
            c.username,
            c.source.display()
        ),
        None => {
            let files: Vec<String> = request
                .credential_files
                .iter()
                .map(|f| f.display().to_string())
                .collect();
            anyhow!(
                "registry {registry} requires credentials to pull {repo}, or has no such repository{detail}; \
                 none found in {}; `podman login {registry}` or `docker login {registry}` stores them",
                files.join(", ")
            )
        }
    }
}

fn unreachable(request: &Request, err: anyhow::Error) -> anyhow::Error {
    let registry = request.reference.resolve_registry();
    let scheme = request.scheme();
    let text = format!("{err:#}");
    let (what, hint) = failure(&text, scheme);
    anyhow!("cannot reach registry {registry} over {scheme}: {what}: {text}{hint}")
}

/// What went wrong, named, and the hint that fits it (not one hint for every failure).
fn failure(text: &str, scheme: &str) -> (&'static str, &'static str) {
    let lower = text.to_lowercase();
    if lower.contains("dns error") || lower.contains("failed to lookup address") {
        (
            "the name does not resolve (DNS)",
            "; check the registry's name, and that this machine can resolve names (/etc/resolv.conf)",
        )
    } else if lower.contains("connection refused") {
        (
            "connection refused",
            "; nothing listens there: check the port, and that the registry runs",
        )
    } else if lower.contains("certificate") {
        (
            "TLS: the certificate is not trusted",
            "; add the CA that signed it to the system's trust store (or point SSL_CERT_FILE \
             at it)",
        )
    } else if scheme == "https"
        && (lower.contains("tls") || lower.contains("handshake") || lower.contains("wrong version"))
    {
        (
            "TLS failed",
            "; if it serves plain HTTP on a network you trust, pass --plain-http",
        )
    } else if lower.contains("timed out") || lower.contains("deadline") {
        (
            "no answer in time",
            "; check the network between here and the registry",
        )
    } else if scheme == "https" {
        (
            "the connection failed",
            "; if it serves plain HTTP on a network you trust, pass --plain-http",
        )
    } else {
        ("the connection failed", "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::errors::{OciEnvelope, OciError};

    fn request(reference: &str) -> Request {
        Request::for_test(reference)
    }

    fn envelope(code: OciErrorCode, message: &str) -> OciDistributionError {
        OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: vec![OciError {
                    code,
                    message: message.to_string(),
                    detail: serde_json::Value::Null,
                }],
            },
            url: "http://r/v2/x".to_string(),
        }
    }

    #[test]
    fn each_failure_gets_its_own_hint() {
        let dns = failure(
            "client error (Connect): dns error: failed to lookup address",
            "https",
        );
        assert!(
            dns.0.contains("DNS") && !dns.1.contains("--plain-http"),
            "{dns:?}"
        );
        let refused = failure(
            "tcp connect error: Connection refused (os error 111)",
            "http",
        );
        assert_eq!(refused.0, "connection refused");
        let tls = failure("invalid peer certificate: UnknownIssuer", "https");
        assert!(
            tls.0.starts_with("TLS") && tls.1.contains("SSL_CERT_FILE"),
            "{tls:?}"
        );
        let plain = failure(
            "received corrupt message of type InvalidContentType (tls)",
            "https",
        );
        assert!(plain.1.contains("--plain-http"), "{plain:?}");
    }

    #[test]
    fn unknown_tag_and_repository_are_named() {
        let r = request("127.0.0.1:5000/test/bb:nope");
        let e = explain(
            envelope(OciErrorCode::ManifestUnknown, "manifest unknown"),
            &r,
            Step::Manifest,
        );
        assert_eq!(
            e.to_string(),
            "tag nope not found in 127.0.0.1:5000/test/bb (manifest unknown)"
        );
        let e = explain(
            envelope(
                OciErrorCode::NameUnknown,
                "repository name not known to registry",
            ),
            &r,
            Step::Manifest,
        );
        assert!(e
            .to_string()
            .starts_with("repository 127.0.0.1:5000/test/bb not found"));
    }

    #[test]
    fn refusals_say_where_credentials_come_from() {
        let r = request("quay.io/org/app:1");
        let e = explain(
            OciDistributionError::UnauthorizedError { url: "u".into() },
            &r,
            Step::Manifest,
        )
        .to_string();
        assert!(e.contains("requires credentials to pull org/app"), "{e}");
        assert!(e.contains("podman login quay.io"), "{e}");
    }
}

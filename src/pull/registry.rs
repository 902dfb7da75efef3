//! The registry's HTTP API, spoken with reqwest directly rather than through oci-client's
//! request helpers, because those read whole bodies into memory: what a registry sends is
//! hostile until checked. Here every body is read with a limit that holds while it
//! streams (manifests and tokens a few MiB, error bodies a few KiB, blobs their declared
//! size), every request runs under a deadline of its own (see `deadline`), redirects
//! and token services are held to `hosts`' rules, and the host that actually answered
//! (after redirects) is what errors name.
//!
//! Errors from the registry's status codes become oci-client's `OciDistributionError`
//! values, so `explain` words them the same way whichever code path met them.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use oci_client::errors::{OciDistributionError, OciEnvelope};
use oci_client::Reference;
use reqwest::header::{HeaderMap, ACCEPT, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;

use super::deadline::{within, Deadlines};
use super::explain::{explain, Step};
use super::hosts::{self, host_of};
use super::Request;
use crate::image::byte_size;

/// The largest manifest or index sbx reads, as containerd and podman limit them.
pub const MAX_MANIFEST: u64 = 4 << 20;
/// The largest image config sbx downloads.
pub const MAX_CONFIG: u64 = 4 << 20;
/// How much of an error response's body is read (the rest is never received).
const MAX_ERROR_BODY: u64 = 16 << 10;
/// The largest token-service answer.
const MAX_TOKEN: u64 = 1 << 20;
/// How much of an error body a message quotes.
const QUOTED: usize = 200;

/// How requests to the registry itself are authorized (never sent to other hosts).
enum Auth {
    None,
    Basic(String, String),
    Bearer(String),
}

/// A logged-in connection to one repository of one registry.
pub struct Registry {
    http: reqwest::Client,
    /// `http://host:port` or `https://host`.
    base: String,
    repository: String,
    auth: Auth,
    pub deadlines: Deadlines,
}

/// A response body too large for its limit.
pub struct TooLarge {
    /// What the registry said it would send (Content-Length), if it said.
    pub declared: Option<u64>,
}

impl Registry {
    /// Connects and logs in: `GET /v2/`, and for a bearer challenge a token from the
    /// registry's token service (with the user's credentials, if any).
    pub async fn login(request: &Request, deadlines: Deadlines) -> Result<Registry> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("sbx/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::custom(hosts::redirect))
            .build()
            .context("set up the registry client")?;
        let reference = &request.reference;
        let mut registry = Registry {
            http,
            base: format!("{}://{}", request.scheme(), reference.resolve_registry()),
            repository: reference.repository().to_string(),
            auth: Auth::None,
            deadlines,
        };
        let limit = deadlines.floor;
        let what = format!("the login at {}", reference.resolve_registry());
        let auth = within(
            limit,
            &what,
            &deadlines.describe(0),
            registry.authorize(request),
        )
        .await?;
        registry.auth = auth;
        Ok(registry)
    }

    async fn authorize(&self, request: &Request) -> Result<Auth> {
        let login = |e: OciDistributionError| explain(e, request, Step::Login);
        let ping = self
            .http
            .get(format!("{}/v2/", self.base))
            .send()
            .await
            .map_err(|e| send_error(e, request, Step::Login, "the login"))?;
        let challenge = bearer_challenge(ping.headers());
        // The ping's body is never read.
        drop(ping);
        let creds = request
            .credentials
            .as_ref()
            .map(|c| (c.username.clone(), c.password.clone()));
        let Some((realm, service)) = challenge else {
            return Ok(match creds {
                Some((user, password)) => Auth::Basic(user, password),
                None => Auth::None,
            });
        };
        let mut url = Url::parse(&realm)
            .with_context(|| format!("the registry's token service {realm:?} is not a URL"))?;
        // The realm is the registry's choice of host, as a redirect is: the same rules.
        let base = Url::parse(&self.base).context("the registry's URL")?;
        if let Some(why) = hosts::refusal(&base, &url) {
            bail!(
                "registry {} names {realm:?} as its token service; sbx does not send a token \
                 request there ({why}); nothing was imported",
                request.reference.resolve_registry()
            );
        }
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("scope", &format!("repository:{}:pull", self.repository));
            if let Some(service) = &service {
                query.append_pair("service", service);
            }
        }
        let mut token_request = self.http.get(url);
        if let Some((user, password)) = &creds {
            token_request = token_request.basic_auth(user, Some(password));
        }
        let mut answer = token_request
            .send()
            .await
            .map_err(|e| send_error(e, request, Step::Login, "the token request"))?;
        if answer.status() != StatusCode::OK {
            let body = error_body(&mut answer).await;
            return Err(login(OciDistributionError::AuthenticationFailure(quote(
                &body,
            ))));
        }
        let body = match read_limited(&mut answer, MAX_TOKEN).await {
            Ok(Ok(body)) => body,
            Ok(Err(_)) => bail!(
                "the token service {} sent more than {}; a token is a few KiB (a hostile registry?)",
                host_of(answer.url()),
                byte_size(MAX_TOKEN)
            ),
            Err(e) => return Err(login(e.into())),
        };
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token: Token = serde_json::from_slice(&body).with_context(|| {
            format!("the token service {} sent no token", host_of(answer.url()))
        })?;
        match token.token.or(token.access_token) {
            Some(token) => Ok(Auth::Bearer(token)),
            None => bail!("the token service {} sent no token", host_of(answer.url())),
        }
    }

    fn authorized(&self, builder: RequestBuilder) -> RequestBuilder {
        match &self.auth {
            Auth::None => builder,
            Auth::Basic(user, password) => builder.basic_auth(user, Some(password)),
            Auth::Bearer(token) => builder.bearer_auth(token),
        }
    }

    /// The manifest `reference` names (its digest, else its tag), read up to
    /// [`MAX_MANIFEST`]; returns its bytes and digest, checked against the reference's
    /// digest and the registry's `Docker-Content-Digest` header when they are given.
    pub async fn manifest(
        &self,
        request: &Request,
        reference: &Reference,
        accept: &[&str],
    ) -> Result<(Vec<u8>, String)> {
        let name = reference
            .digest()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_string();
        let what = format!("manifest {name} of {}", request.given);
        let describe = self.deadlines.describe(MAX_MANIFEST);
        let limit = self.deadlines.for_size(MAX_MANIFEST);
        within(limit, &what, &describe, async {
            let url = format!("{}/v2/{}/manifests/{name}", self.base, self.repository);
            let step = Step::Manifest;
            let mut response = self
                .authorized(self.http.get(&url).header(ACCEPT, accept.join(", ")))
                .send()
                .await
                .map_err(|e| send_error(e, request, step, &what))?;
            check_status(&mut response, request, step).await?;
            let header = response
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_string);
            let body = match read_limited(&mut response, MAX_MANIFEST).await {
                Ok(Ok(body)) => body,
                Ok(Err(too_large)) => bail!(
                    "{what} from {} is larger than {}{}, the most sbx accepts for a manifest \
                     (a hostile registry?); nothing was imported",
                    host_of(response.url()),
                    byte_size(MAX_MANIFEST),
                    declared(&too_large)
                ),
                Err(e) => return Err(explain(e.into(), request, step)),
            };
            let digest = manifest_digest(&body, reference.digest(), header.as_deref(), &what)?;
            Ok((body, digest))
        })
        .await
    }

    /// Starts downloading blob `digest` from the registry: the response, once its status
    /// is known. A failure status is returned as the response too (for foreign URLs).
    pub async fn blob(&self, request: &Request, digest: &str) -> Result<Response> {
        let url = format!("{}/v2/{}/blobs/{digest}", self.base, self.repository);
        self.authorized(self.http.get(&url))
            .send()
            .await
            .map_err(|e| send_error(e, request, Step::Blob(digest), &format!("blob {digest}")))
    }

    /// Starts downloading from a layer's foreign URL: no credentials, ever (they belong
    /// to the registry; CVE-2020-15157).
    pub async fn foreign(&self, url: &Url) -> Result<Response> {
        self.http
            .get(url.clone())
            .send()
            .await
            .with_context(|| format!("cannot reach {}, a foreign URL of the layer", host_of(url)))
    }
}

/// A request that could not be sent or answered; a redirect sbx refused says so.
fn send_error(e: reqwest::Error, request: &Request, step: Step, what: &str) -> anyhow::Error {
    if e.is_redirect() {
        let why = std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_else(|| e.to_string());
        return anyhow!(
            "registry {} answered {what} with a redirect sbx does not follow: {why}; \
             nothing was imported",
            request.reference.resolve_registry()
        );
    }
    explain(e.into(), request, step)
}

/// A failure status becomes the registry's error; success passes.
pub async fn check_status(
    response: &mut Response,
    request: &Request,
    step: Step<'_>,
) -> Result<()> {
    let status = response.status();
    if status == StatusCode::OK {
        return Ok(());
    }
    let body = error_body(response).await;
    let err = explain(status_error(status, &body, response.url()), request, step);
    // Redirected elsewhere (a CDN, say): the host that answered is the one to name.
    let answered = host_of(response.url());
    if answered != request.reference.resolve_registry() {
        return Err(anyhow!("{err:#} (the answer came from {answered})"));
    }
    Err(err)
}

/// What oci-client would make of an error status and (the first KiB of) its body.
pub fn status_error(status: StatusCode, body: &[u8], url: &Url) -> OciDistributionError {
    let url = url.to_string();
    match status {
        StatusCode::UNAUTHORIZED => OciDistributionError::UnauthorizedError { url },
        s if s.is_success() => {
            OciDistributionError::SpecViolationError(format!("expected HTTP status 200, got {s}"))
        }
        s if s.is_client_error() => match serde_json::from_slice::<OciEnvelope>(body) {
            Ok(mut envelope) => {
                for e in &mut envelope.errors {
                    e.message = quote(e.message.as_bytes());
                }
                OciDistributionError::RegistryError { envelope, url }
            }
            Err(_) => OciDistributionError::ServerError {
                code: s.as_u16(),
                url,
                message: quote(body),
            },
        },
        s => OciDistributionError::ServerError {
            code: s.as_u16(),
            url,
            message: quote(body),
        },
    }
}

/// At most [`MAX_ERROR_BODY`] bytes of an error response; the rest is never received
/// (the connection is dropped with the response), and a read error ends it early.
pub async fn error_body(response: &mut Response) -> Vec<u8> {
    let mut body = Vec::new();
    while (body.len() as u64) < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_ERROR_BODY as usize - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            _ => break,
        }
    }
    body
}

/// The whole body if it fits in `limit` bytes, else `TooLarge` as soon as it is clear
/// (from Content-Length, or once `limit` is passed); never more than `limit` in memory.
pub async fn read_limited(
    response: &mut Response,
    limit: u64,
) -> reqwest::Result<Result<Vec<u8>, TooLarge>> {
    let declared = response.content_length();
    if declared.is_some_and(|n| n > limit) {
        return Ok(Err(TooLarge { declared }));
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(chunk) = response.chunk().await? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Ok(Err(TooLarge { declared }));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Ok(body))
}

fn declared(too_large: &TooLarge) -> String {
    match too_large.declared {
        Some(n) => format!(" (it announced {})", byte_size(n)),
        None => String::new(),
    }
}

/// Printable text from an untrusted body: one line, at most [`QUOTED`] characters.
pub fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(QUOTED + 1)
        .collect();
    if line.chars().count() > QUOTED {
        line = line.chars().take(QUOTED).collect::<String>() + "...";
    }
    line.trim().to_string()
}

/// The bearer challenge's realm and service, if the registry sent one.
fn bearer_challenge(headers: &HeaderMap) -> Option<(String, Option<String>)> {
    for value in headers.get_all(WWW_AUTHENTICATE) {
        let Ok(text) = value.to_str() else { continue };
        let Ok(challenges) = http_auth::parse_challenges(text) else {
            continue;
        };
        for challenge in challenges {
            if !challenge.scheme.eq_ignore_ascii_case("bearer") {
                continue;
            }
            let param = |name: &str| {
                challenge
                    .params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_unescaped())
            };
            if let Some(realm) = param("realm") {
                return Some((realm, param("service")));
            }
        }
    }
    None
}

/// The sha256 digest of a manifest's bytes, which must match the digest the reference
/// pins and the one the registry announced.
fn manifest_digest(
    body: &[u8],
    pinned: Option<&str>,
    announced: Option<&str>,
    what: &str,
) -> Result<String> {
    use sha2::{Digest, Sha256};
    let actual = format!("sha256:{}", super::layout::hex(&Sha256::digest(body)));
    for expected in [pinned, announced].into_iter().flatten() {
        if expected.starts_with("sha256:") && expected != actual {
            bail!(
                "{what} does not match its digest {expected} (its content hashes to {actual}); \
                 nothing was imported"
            );
        }
    }
    if let Some(pinned) = pinned {
        super::layout::sha256_hex(pinned)?;
    }
    Ok(actual)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_bodies_are_one_short_line() {
        assert_eq!(quote(b"  not found\n"), "not found");
        let long = quote(&[b'a'; 5000]);
        assert_eq!(long.len(), QUOTED + 3);
        assert!(!quote(b"a\nb\x1b[2J").contains(['\n', '\x1b']));
    }

    #[test]
    fn bearer_challenges_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(WWW_AUTHENTICATE, "Basic realm=\"r\"".parse().unwrap());
        assert_eq!(bearer_challenge(&headers), None);
        headers.append(
            WWW_AUTHENTICATE,
            "Bearer realm=\"https://auth.example/token\",service=\"reg\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            bearer_challenge(&headers),
            Some((
                "https://auth.example/token".to_string(),
                Some("reg".to_string())
            ))
        );
    }
}

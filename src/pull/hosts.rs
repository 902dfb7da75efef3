//! Which hosts sbx-pull contacts besides the registry. A registry chooses some: the
//! targets of its redirects (blobs on a CDN are normal) and its token service (the realm
//! of its bearer challenge; `auth.docker.io` for Docker Hub). It must not be able to use
//! them to make this machine send requests where it likes: to this machine itself, or
//! the local link (`169.254.169.254` answers cloud metadata requests), or to downgrade
//! from HTTPS to plain HTTP. A layer's foreign `urls` are a third kind, followed only
//! with `--allow-foreign-layers` (see `fetch`).

use reqwest::Url;

/// Which redirects are followed. Registries send blobs to CDNs and storage services, so
/// redirects to other hosts are normal; but never more than 10, never from HTTPS down to
/// plain HTTP, and never to this machine or a link-local address (`169.254.169.254`
/// answers cloud metadata requests) from a registry that is not there itself, which
/// would let a registry make this machine send requests to hosts of its choosing. (A host
/// name that resolves to such an address is not caught here.)
pub fn redirect(attempt: reqwest::redirect::Attempt) -> reqwest::redirect::Action {
    let Some(first) = attempt.previous().first() else {
        return attempt.follow();
    };
    let refusal = if attempt.previous().len() > 10 {
        Some("more than 10 redirects".to_string())
    } else {
        refusal(first, attempt.url())
            .map(|why| format!("a redirect to {}: {why}", host_of(attempt.url())))
    };
    match refusal {
        Some(why) => attempt.error(format!("refused {why}")),
        None => attempt.follow(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Local {
    /// This machine: loopback, `localhost`, the unspecified address.
    Machine,
    /// The local link: 169.254.0.0/16, fe80::/10.
    Link,
}

/// Whether a URL's host is an IP literal (or `localhost`) of this machine or its link.
fn local(url: &Url) -> Option<Local> {
    let host = url.host_str()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let (machine, link) = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => {
            (ip.is_loopback() || ip.is_unspecified(), ip.is_link_local())
        }
        Ok(std::net::IpAddr::V6(ip)) => (
            ip.is_loopback() || ip.is_unspecified(),
            (ip.segments()[0] & 0xffc0) == 0xfe80,
        ),
        Err(_) => (host.eq_ignore_ascii_case("localhost"), false),
    };
    if machine {
        Some(Local::Machine)
    } else if link {
        Some(Local::Link)
    } else {
        None
    }
}

/// Why a request the registry at `from` sends sbx-pull on to `to` is refused, if it is.
pub fn refusal(from: &Url, to: &Url) -> Option<&'static str> {
    if !matches!(to.scheme(), "http" | "https") {
        Some("not an http or https URL")
    } else if from.scheme() == "https" && to.scheme() != "https" {
        Some("plain HTTP from an HTTPS registry")
    } else if local(to).is_some_and(|there| local(from) != Some(there)) {
        Some("an address on this machine or its link")
    } else {
        None
    }
}

/// `host[:port]` of a URL, as errors name the host that answered.
pub fn host_of(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_and_link_local_addresses_are_told_apart() {
        let class = |u: &str| local(&Url::parse(u).unwrap());
        for machine in [
            "http://127.0.0.1:5000/x",
            "http://[::1]/x",
            "http://LOCALHOST/x",
            "http://0.0.0.0/x",
        ] {
            assert_eq!(class(machine), Some(Local::Machine), "{machine}");
        }
        for link in [
            "http://169.254.169.254/latest/meta-data",
            "http://[fe80::1]/x",
        ] {
            assert_eq!(class(link), Some(Local::Link), "{link}");
        }
        for remote in [
            "https://cdn.example/x",
            "http://10.0.0.1/x",
            "http://[2001:db8::1]/x",
        ] {
            assert_eq!(class(remote), None, "{remote}");
        }
    }

    #[test]
    fn registries_elsewhere_cannot_send_sbx_home_or_down_to_http() {
        let url = |u: &str| Url::parse(u).unwrap();
        let remote = url("https://registry.example/v2/");
        assert_eq!(refusal(&remote, &url("https://cdn.example/blob")), None);
        assert!(refusal(&remote, &url("http://cdn.example/blob")).is_some());
        assert!(refusal(&remote, &url("https://127.0.0.1/x")).is_some());
        assert!(refusal(&remote, &url("https://169.254.169.254/x")).is_some());
        assert!(refusal(&remote, &url("file:///etc/passwd")).is_some());
        let loopback = url("http://127.0.0.1:5000/v2/");
        assert_eq!(
            refusal(&loopback, &url("http://127.0.0.1:5001/token")),
            None
        );
        assert!(refusal(&loopback, &url("http://169.254.169.254/x")).is_some());
    }
}

//! The sandbox's network from the profile and the overrides: mode, published ports, host
//! loopback, where slirp4netns is.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::Overrides;
use crate::error::HostFeature;
use crate::plan::net::{Join, NetPlan, Proto, Publish};
use crate::profile::{NetworkMode, NetworkOptions};

/// `join`: the running sandbox `--net sandbox:NAME` names, as the front end found it.
pub fn plan(
    profile: Option<NetworkOptions>,
    args: &Overrides,
    join: Option<&Join>,
) -> Result<NetPlan> {
    let profile = profile.unwrap_or_default();
    let (mode, join) = match args.net.as_deref().map(|n| (n, n.strip_prefix("sandbox:"))) {
        Some((_, Some(name))) => match join {
            Some(join) if join.name == name => (NetworkMode::Sandbox, Some(join.clone())),
            _ => bail!("internal: --net sandbox:{name} must be looked up before planning"),
        },
        Some((mode, None)) => (mode.parse().context("--net")?, None),
        None => (profile.mode.unwrap_or_default(), None),
    };
    let publish = publish(&profile, args)?;
    let allow_host_loopback =
        args.allow_host_loopback || profile.allow_host_loopback.unwrap_or(false);
    check(mode, &publish, allow_host_loopback, &profile)?;
    let slirp4netns = match mode {
        NetworkMode::Slirp4netns => Some(find_slirp4netns()?),
        _ => None,
    };
    if mode == NetworkMode::Slirp4netns {
        check_tun()?;
    }
    Ok(NetPlan {
        mode,
        publish,
        allow_host_loopback,
        allow_tcp_connect: profile.allow_tcp_connect,
        slirp4netns,
        join,
    })
}

pub fn parse_publish(value: &str) -> Result<Publish> {
    let (spec, proto) = match value.rsplit_once('/') {
        Some((spec, "tcp")) => (spec, Proto::Tcp),
        Some((spec, "udp")) => (spec, Proto::Udp),
        Some((_, other)) => bail!("unknown protocol {other:?}; use tcp or udp"),
        None => (value, Proto::Tcp),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (addr, host, guest) = match parts.as_slice() {
        [host, guest] => ("127.0.0.1", *host, *guest),
        [addr, host, guest] => (*addr, *host, *guest),
        _ => bail!("use [IP:]HOSTPORT:PORT[/tcp|/udp], such as 8080:80 or 127.0.0.1:5353:53/udp"),
    };
    let port = |p: &str| -> Result<u16> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => bail!("invalid port {p:?}"),
        }
    };
    Ok(Publish {
        host_addr: addr
            .parse()
            .map_err(|_| anyhow::anyhow!("invalid IPv4 address {addr:?}"))?,
        host_port: port(host)?,
        guest_port: port(guest)?,
        proto,
    })
}

/// `SBX_SLIRP4NETNS` replaces the search (the tests use it to simulate a missing helper).
fn find_slirp4netns() -> Result<PathBuf> {
    crate::helpers::find("slirp4netns").ok_or_else(|| {
        HostFeature::new(
            "slirp4netns",
            "--net slirp4netns needs slirp4netns, which is not installed; install it \
             (Debian/Ubuntu: `sudo apt-get install slirp4netns`; Fedora: `sudo dnf install \
             slirp4netns`)",
        )
        .into()
    })
}

fn check_tun() -> Result<()> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(_) => Ok(()),
        Err(e) => Err(HostFeature::new(
            "a usable /dev/net/tun",
            format!(
                "--net slirp4netns needs /dev/net/tun, which you cannot open ({e}); \
                 distributions ship it mode 0666: `sudo chmod 666 /dev/net/tun`"
            ),
        )
        .into()),
    }
}

/// The published ports of the profile, then of the command line.
fn publish(profile: &NetworkOptions, args: &Overrides) -> Result<Vec<Publish>> {
    let mut publish = Vec::new();
    for (what, value) in profile
        .publish
        .iter()
        .map(|v| ("network.publish", v))
        .chain(args.publish.iter().map(|v| ("--publish", v)))
    {
        publish.push(parse_publish(value).with_context(|| format!("{what} {value}"))?);
    }
    Ok(publish)
}

/// What the mode and the ports allow together.
fn check(
    mode: NetworkMode,
    publish: &[Publish],
    allow_host_loopback: bool,
    profile: &NetworkOptions,
) -> Result<()> {
    if mode != NetworkMode::Slirp4netns {
        if !publish.is_empty() {
            bail!("--publish needs --net slirp4netns (the network here is {mode})");
        }
        if allow_host_loopback {
            bail!("--allow-host-loopback needs --net slirp4netns (the network here is {mode})");
        }
    }
    if mode == NetworkMode::None && !profile.allow_tcp_connect.is_empty() {
        bail!("network.allow_tcp_connect: with the network \"none\" there is no TCP to allow");
    }
    for (i, p) in publish.iter().enumerate() {
        if publish[..i].iter().any(|q| {
            q.proto == p.proto
                && q.host_port == p.host_port
                && (q.host_addr == p.host_addr
                    || q.host_addr.is_unspecified()
                    || p.host_addr.is_unspecified())
        }) {
            bail!(
                "--publish {p}: host {} port {} is published twice",
                p.proto.name(),
                p.host_port
            );
        }
    }
    if let Some(udp) = publish.iter().find(|p| p.proto == Proto::Udp) {
        if !allow_host_loopback {
            bail!(
                "--publish {udp}: publishing a UDP port needs --allow-host-loopback: slirp4netns \
                 cannot tell the sandbox's replies from new traffic to the host's loopback, so \
                 with the loopback closed the replies are dropped (podman issue #4586)"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn publish_forms() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(
            (p.host_addr, p.host_port, p.guest_port, p.proto),
            (Ipv4Addr::LOCALHOST, 8080, 80, Proto::Tcp)
        );
        let p = parse_publish("0.0.0.0:5353:53/udp").unwrap();
        assert_eq!((p.host_addr, p.proto), (Ipv4Addr::UNSPECIFIED, Proto::Udp));
        for bad in [
            "80",
            "a:b",
            "1:2:3:4",
            "8080:80/sctp",
            "x.y:1:2",
            "0:80",
            "70000:80",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }
}

//! The sandbox's network for `-v` and `sbx inspect`. It is planned by `planner::network`
//! (types in `plan::net`, re-exported here) and set up by `supervisor::net` and
//! `child::net`.

pub use crate::plan::net::{NetPlan, Proto, Publish, DNS, GATEWAY, GUEST_ADDR, MTU};
use crate::profile::NetworkMode;

/// For `sbx run -v`.
pub fn describe(plan: &NetPlan) -> String {
    match plan.mode {
        NetworkMode::Sandbox => match &plan.join {
            Some(join) => format!(
                "sandbox {}: its network namespace (its loopback{}), and its user namespace",
                join.name,
                if join.nat { ", slirp4netns" } else { " only" }
            ),
            None => "sandbox".into(),
        },
        NetworkMode::None => "none: loopback only".into(),
        NetworkMode::Host => "host: the host's network namespace, NO network isolation".into(),
        NetworkMode::Slirp4netns => {
            let published: Vec<String> = plan.publish.iter().map(|p| p.to_string()).collect();
            format!(
                "slirp4netns: {GUEST_ADDR}/24 on tap0 via {GATEWAY}, DNS {DNS}; host loopback {}; published: {}{}",
                if plan.allow_host_loopback { "reachable at 10.0.2.2" } else { "closed" },
                if published.is_empty() { "none".to_string() } else { published.join(", ") },
                if plan.allow_tcp_connect.is_empty() {
                    String::new()
                } else {
                    format!("; outbound TCP only to ports {:?}", plan.allow_tcp_connect)
                }
            )
        }
    }
}

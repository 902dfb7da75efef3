//! Which namespaces a sandbox has of its own, for `clone` when it is made and for
//! `setns` when `sbx exec` enters it.

use nix::sched::CloneFlags;

use crate::profile::NetworkMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespaces {
    /// `clone` of the sandbox's init. The cgroup namespace comes later: the child
    /// unshares it once it is in its leaf, so the leaf is what it sees as `/`.
    Create,
    /// `setns` into a running sandbox through its command's pidfd.
    Enter,
}

pub fn namespace_flags(network: NetworkMode, how: Namespaces) -> CloneFlags {
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    match how {
        // `--net sandbox:NAME`: made inside that sandbox's user and network namespaces.
        Namespaces::Create => match network {
            NetworkMode::Sandbox => {}
            NetworkMode::Host => flags |= CloneFlags::CLONE_NEWUSER,
            NetworkMode::None | NetworkMode::Slirp4netns => {
                flags |= CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET
            }
        },
        // The sandbox's user namespace is always its own or the joined one's.
        Namespaces::Enter => {
            flags |= CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWCGROUP;
            if network != NetworkMode::Host {
                flags |= CloneFlags::CLONE_NEWNET;
            }
        }
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creating_and_entering_agree_on_the_network() {
        let create = namespace_flags(NetworkMode::Host, Namespaces::Create);
        assert!(!create.contains(CloneFlags::CLONE_NEWNET));
        assert!(!create.contains(CloneFlags::CLONE_NEWCGROUP));
        let enter = namespace_flags(NetworkMode::Host, Namespaces::Enter);
        assert!(!enter.contains(CloneFlags::CLONE_NEWNET));
        assert!(enter.contains(CloneFlags::CLONE_NEWCGROUP | CloneFlags::CLONE_NEWUSER));
        let joined = namespace_flags(NetworkMode::Sandbox, Namespaces::Create);
        assert!(!joined.intersects(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET));
        assert!(namespace_flags(NetworkMode::None, Namespaces::Enter)
            .contains(CloneFlags::CLONE_NEWNET));
    }
}

//! The prepare step: the writes a sandbox needs on the host, made just before the runtime
//! by `run`, `run --name` and `start` (the planner makes none).
//!
//! It makes what the Plan's `setup` lists (bind sources a profile asks to create, the kept
//! upper directory, missing protected paths, the cgroup controllers), then plans again from
//! the same request, until a Plan lists nothing: that Plan describes the host as it now is,
//! and is the one the runtime gets. Then it takes the shared locks on the image's layers,
//! held for as long as the `Prepared` it returns lives.

use std::os::unix::fs::DirBuilderExt;

use anyhow::{bail, Context, Result};

use crate::image::run::LayerLocks;
use crate::plan::{HostSetup, Plan, Rootfs};
use crate::planner::{self, Fact, Request};
use crate::supervisor::cgroup;

/// Rounds of make-then-plan: a bind source or upper directory is made in the first, the
/// protected paths inside a bind source made in it in the second; the plan after the
/// last must list nothing.
const ROUNDS: usize = 3;

/// What the run holds besides its Plan: given to the runtime with it.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The image's layers, locked in the store while the sandbox runs.
    pub layer_locks: Option<LayerLocks>,
}

/// Makes what `plan` (built from `req`) lists in its setup, and returns the Plan to run,
/// which lists nothing, with what the run holds.
pub fn prepare(req: &Request, mut plan: Plan) -> Result<(Plan, Prepared)> {
    let mut host = req.host.clone();
    let first = plan.limits.clone();
    for _ in 0..ROUNDS {
        if plan.setup.is_empty() {
            return finish(&host, &first, plan);
        }
        make(&plan, &mut host)?;
        plan = planner::build(&Request {
            host: &host,
            ..*req
        })?;
    }
    if plan.setup.is_empty() {
        return finish(&host, &first, plan);
    }
    bail!(
        "the host kept changing while sbx was starting (still missing: {}); check what else \
         writes there, then run again",
        describe(&plan.setup)
    )
}

/// The run's Plan, once the cgroup question is settled, and its layer locks.
fn finish(
    host: &planner::HostFacts,
    first: &crate::plan::LimitsPlan,
    plan: Plan,
) -> Result<(Plan, Prepared)> {
    // Enabling the controllers failed, and the new Plan decided what the planner decides
    // when there is no delegated cgroup: a systemd scope, or the rlimits alone.
    if first.via_systemd.is_none() {
        if let Some(systemd_run) = &plan.limits.via_systemd {
            return Err(crate::limits::rerun_in_scope(systemd_run));
        }
    }
    if first.not_enforced.is_none() {
        if let Some(warning) = planner::limits::not_enforced_warning(&plan.limits) {
            eprintln!("sbx: warning: {warning}");
        }
    }
    let layer_locks = match &plan.rootfs {
        Rootfs::Image { name, layers, .. } => {
            let store = host
                .store
                .get()
                .as_ref()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Some(crate::image::run::hold_layers(store, name, layers)?)
        }
        _ => None,
    };
    Ok((plan, Prepared { layer_locks }))
}

/// Makes what the setup lists. A cgroup that refuses its controllers is recorded in `host`
/// for the next plan, as a cgroup without delegation would be.
fn make(plan: &Plan, host: &mut planner::HostFacts) -> Result<()> {
    let setup = &plan.setup;
    for dir in &setup.bind_sources {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| {
                format!(
                    "create bind source {} (a profile mount with \"create\": true)",
                    dir.display()
                )
            })?;
    }
    if let Some(upper) = &setup.upper {
        crate::image::run::create_upper(upper)?;
    }
    for missing in &setup.protected {
        crate::protect::create(missing)?;
    }
    if let Some(site) = &plan.limits.site {
        if let Err(why) = cgroup::enable(site, &setup.controllers) {
            host.cgroup = Fact::known(Err(why));
        }
    }
    Ok(())
}

fn describe(setup: &HostSetup) -> String {
    let mut parts: Vec<String> = setup
        .bind_sources
        .iter()
        .chain(&setup.upper)
        .map(|p| p.display().to_string())
        .collect();
    parts.extend(
        setup
            .protected
            .iter()
            .map(|p| p.bind.join(&p.rel).display().to_string()),
    );
    if !setup.controllers.is_empty() {
        parts.push(format!("controllers {}", setup.controllers.join(" ")));
    }
    parts.join(", ")
}

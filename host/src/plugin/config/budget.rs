//! The instances stages hold between requests (pre-warmed fresh instances, idle
//! reused ones) must leave at least half of the runtime's slots to requests.
//!
//! Values an operator wrote are kept as written; defaults shrink, the largest first
//! and never below one, until the chain fits. A chain of many stages with default
//! settings therefore loads in any runtime with room for one held instance each.

use super::{InstanceMode, StageSpec};

/// How many slots `stage` holds between requests: up to `prewarm` ready instances
/// and as many used ones awaiting teardown, or up to `max_idle` idle ones.
fn held(stage: &StageSpec) -> u32 {
    match stage.instances {
        InstanceMode::Fresh => 2 * stage.prewarm,
        InstanceMode::Reuse => stage.max_idle,
    }
}

/// The setting that decides what `stage` holds: `prewarm` or `max_idle`.
fn setting(stage: &StageSpec) -> u32 {
    match stage.instances {
        InstanceMode::Fresh => stage.prewarm,
        InstanceMode::Reuse => stage.max_idle,
    }
}

fn setting_mut(stage: &mut StageSpec) -> &mut u32 {
    match stage.instances {
        InstanceMode::Fresh => &mut stage.prewarm,
        InstanceMode::Reuse => &mut stage.max_idle,
    }
}

/// Lowers the defaulted `prewarm`/`max_idle` of `stages` (those without
/// `held_explicit`) until what they hold fits in half of `max_instances`. On failure
/// returns the reason, naming what the stages still hold.
pub(super) fn fit(stages: &mut [StageSpec], max_instances: u32) -> Result<(), String> {
    let budget = max_instances / 2;
    let mut total: u32 = stages.iter().map(held).sum();
    while total > budget {
        let largest = (0..stages.len())
            .filter(|&i| !stages[i].held_explicit && setting(&stages[i]) > 1)
            .max_by_key(|&i| setting(&stages[i]));
        let Some(i) = largest else { break };
        let stage = &mut stages[i];
        let before = held(stage);
        *setting_mut(stage) -= 1;
        total -= before - held(stage);
    }
    if total <= budget {
        return Ok(());
    }
    let sum = |mode| -> u32 {
        stages
            .iter()
            .filter(|s| s.instances == mode)
            .map(held)
            .sum()
    };
    let shrunk = if stages.iter().any(|s| !s.held_explicit) {
        " (the defaults are already lowered to 1)"
    } else {
        ""
    };
    Err(format!(
        "{max_instances} slots, but stages hold {total} instances between requests \
         ({} pre-warmed: 2 x prewarm per fresh stage; {} idle for reuse: max_idle){shrunk} \
         and at least half must stay free for requests; raise max_instances or lower \
         prewarm or max_idle",
        sum(InstanceMode::Fresh),
        sum(InstanceMode::Reuse),
    ))
}

impl StageSpec {
    /// Whether `self` and `other` differ at most in defaulted `prewarm` and
    /// `max_idle`, which [`fit`] lowers because of other stages. A value the operator
    /// wrote (or changed) counts as a change of the stage.
    pub(crate) fn same_but_held(&self, other: &StageSpec) -> bool {
        if self.held_explicit || other.held_explicit {
            return self == other;
        }
        let mut a = self.clone();
        a.prewarm = other.prewarm;
        a.max_idle = other.max_idle;
        a == *other
    }
}

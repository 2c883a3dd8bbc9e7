//! The exports the host calls on a plugin instance: `lifecycle.init` and the one
//! function of the stage's interface, looked up by index and type-checked once per
//! plugin version.
//!
//! The generated bindings type-check every export each time an instance is created,
//! which was a fifth of a fresh instance's cost. An export's type is a property of the
//! component, not of one instance of it, so checking it on the first instance of a
//! [`Template`](super::instance::Template) covers every later one. Skipping the check
//! needs `unsafe` (`TypedFunc::new_unchecked`); this module is the only place it is used
//! for calls, and each use says why it holds.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::component::{
    ComponentExportIndex, ComponentNamedList, Func, Instance, InstancePre, Lift, Lower, TypedFunc,
};
use wasmtime::Store;

use super::instance::{Call, Reply, StoreState};
use super::types::{
    AuditDecision, Candidate, Denial, PluginInfo, Principal, RouteChoice, StageKind,
};
use super::view::{AuditEventView, RequestView};

// The export types, with `'static` borrows for the one-time check.
type InitParams = (&'static str,);
type InitResults = (Result<PluginInfo, String>,);
type CheckParams = (&'static RequestView<'static>,);
type CheckResults = (Result<Option<Principal>, Denial>,);
type ApplyParams = (&'static Principal, &'static RequestView<'static>);
type ApplyResults = (Result<Option<Principal>, Denial>,);
type RouteParams = (
    &'static RequestView<'static>,
    Option<&'static Principal>,
    &'static [Candidate],
);
type RouteResults = (Result<Option<RouteChoice>, Denial>,);
type DecideParams = (&'static AuditEventView<'static>,);
type DecideResults = (Result<AuditDecision, String>,);

/// Where a plugin version's `init` and stage function are, and whether their types
/// have been checked against what the host calls them with.
pub(crate) struct ExportIndices {
    kind: StageKind,
    init: ComponentExportIndex,
    stage: ComponentExportIndex,
    checked: AtomicBool,
}

/// The `init` and stage function of one instance. Their types were checked by
/// [`ExportIndices::load`]; calls build the typed view from that.
pub(crate) struct Funcs {
    kind: StageKind,
    init: Func,
    stage: Func,
}

const INTERFACE_VERSION: &str = "0.2.0";

impl ExportIndices {
    /// Finds `lifecycle.init` and the function of `kind`'s interface in the component.
    /// Fails with a message naming what is missing.
    pub(crate) fn new(pre: &InstancePre<StoreState>, kind: StageKind) -> Result<Self, String> {
        let component = pre.component();
        let find = |interface: &str, func: &str| {
            let name = format!("hawser:plugin/{interface}@{INTERFACE_VERSION}");
            let iface = component
                .get_export_index(None, &name)
                .ok_or_else(|| format!("no exported instance `{name}`"))?;
            component
                .get_export_index(Some(&iface), func)
                .ok_or_else(|| format!("`{name}` does not export `{func}`"))
        };
        let init = find("lifecycle", "init")?;
        let (interface, func) = match kind {
            StageKind::Credential => ("credential", "check"),
            StageKind::Impersonation => ("impersonation", "apply"),
            StageKind::Routing => ("routing", "route"),
            StageKind::Audit => ("audit", "decide"),
        };
        let stage = find(interface, func).map_err(|e| format!("not a {kind} plugin: {e}"))?;
        Ok(ExportIndices {
            kind,
            init,
            stage,
            checked: AtomicBool::new(false),
        })
    }

    /// The `init` and stage function of `instance`, an instance of the component these
    /// indices were found in. Their types are checked on the first instance only.
    pub(crate) fn load(
        &self,
        store: &mut Store<StoreState>,
        instance: &Instance,
    ) -> wasmtime::Result<Funcs> {
        let lookup = |store: &mut Store<StoreState>, index| {
            instance
                .get_func(&mut *store, index)
                .ok_or_else(|| wasmtime::format_err!("export is not a function"))
        };
        let init = lookup(store, &self.init)?;
        let stage = lookup(store, &self.stage)?;
        if !self.checked.load(Ordering::Acquire) {
            check::<InitParams, InitResults>(init, store)?;
            match self.kind {
                StageKind::Credential => check::<CheckParams, CheckResults>(stage, store)?,
                StageKind::Impersonation => check::<ApplyParams, ApplyResults>(stage, store)?,
                StageKind::Routing => check::<RouteParams, RouteResults>(stage, store)?,
                StageKind::Audit => check::<DecideParams, DecideResults>(stage, store)?,
            }
            self.checked.store(true, Ordering::Release);
        }
        Ok(Funcs {
            kind: self.kind,
            init,
            stage,
        })
    }
}

impl Funcs {
    /// Calls `lifecycle.init`, inline or on a fiber (see `instance::runs_inline`).
    pub(crate) async fn init(
        &self,
        store: &mut Store<StoreState>,
        config: &str,
        inline: bool,
    ) -> wasmtime::Result<Result<PluginInfo, String>> {
        // SAFETY: see `typed`.
        let f = unsafe { typed::<(&str,), InitResults>(self.init) };
        Ok(invoke(f, store, (config,), inline).await?.0)
    }

    /// Calls the stage function, inline or on a fiber; `call` must match the stage kind.
    pub(crate) async fn call(
        &self,
        store: &mut Store<StoreState>,
        call: Call<'_>,
        inline: bool,
    ) -> wasmtime::Result<Reply> {
        // SAFETY (each arm): see `typed`; the arm matches `self.kind`, whose function
        // type `load` checked.
        Ok(match (self.kind, call) {
            (StageKind::Credential, Call::Credential(req)) => {
                let f = unsafe { typed::<(&RequestView,), CheckResults>(self.stage) };
                Reply::Credential(invoke(f, store, (req,), inline).await?.0)
            }
            (StageKind::Impersonation, Call::Impersonation(who, req)) => {
                let f = unsafe { typed::<(&Principal, &RequestView), ApplyResults>(self.stage) };
                Reply::Impersonation(invoke(f, store, (who, req), inline).await?.0)
            }
            (StageKind::Routing, Call::Routing(req, who, candidates)) => {
                let f = unsafe {
                    typed::<(&RequestView, Option<&Principal>, &[Candidate]), RouteResults>(
                        self.stage,
                    )
                };
                Reply::Routing(invoke(f, store, (req, who, candidates), inline).await?.0)
            }
            (StageKind::Audit, Call::Audit(event)) => {
                let f = unsafe { typed::<(&AuditEventView,), DecideResults>(self.stage) };
                Reply::Audit(invoke(f, store, (event,), inline).await?.0)
            }
            _ => wasmtime::bail!("host error: call does not match the stage kind"),
        })
    }
}

/// Calls `f` inline on this stack, or on a fiber that can yield at epoch ticks.
async fn invoke<P, R>(
    f: TypedFunc<P, R>,
    store: &mut Store<StoreState>,
    params: P,
    inline: bool,
) -> wasmtime::Result<R>
where
    P: ComponentNamedList + Lower + Send + Sync,
    R: ComponentNamedList + Lift + Send + Sync + 'static,
{
    if inline {
        f.call(store, params)
    } else {
        f.call_async(store, params).await
    }
}

/// Checks that `func` has the type `(P, R)`.
fn check<P, R>(func: Func, store: &Store<StoreState>) -> wasmtime::Result<()>
where
    P: ComponentNamedList + Lower,
    R: ComponentNamedList + Lift,
{
    func.typed::<P, R>(store).map(|_| ())
}

/// A typed view of `func` without checking its type again.
///
/// # Safety
/// `func` must come from [`ExportIndices::load`], which checked its type as `(P, R)`
/// (with `'static` borrows; lifetimes do not change a component type) on this or an
/// earlier instance of the same component. An export's type is fixed by the component,
/// so it is the same in every instance.
unsafe fn typed<P, R>(func: Func) -> TypedFunc<P, R>
where
    P: ComponentNamedList + Lower,
    R: ComponentNamedList + Lift,
{
    // SAFETY: guaranteed by the caller, as documented above.
    unsafe { TypedFunc::new_unchecked(func) }
}

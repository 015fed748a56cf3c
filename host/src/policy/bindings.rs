//! The generated bindings for `vigil:policy@1.x` — the only `bindgen!`s in the host.
//!
//! Five worlds of the one `@1.4.0` package, sharing one set of types: `policy` (what a 1.4
//! component exports: `describe`, `evaluate`, `configure`, `evaluate-configured`,
//! `evaluate-run`, `evaluate-ext`, `evaluate-run-ext` and `resume`), [`ext`] (what a 1.3.x
//! component exports: all but `resume`), [`runs`] (what a 1.2.x component
//! exports: all but the two `-ext` calls), [`configured`] (what a 1.1.x component exports:
//! `describe`, `evaluate`, `configure` and `evaluate-configured`) and
//! [`base`] (what a 1.0.x component exports: `describe` and `evaluate`). A host built from these
//! bindings loads any `@1.y` guest (wasmtime matches the `types` import by semver and each
//! function by its structure); a `@2` guest is refused at load (a new major needs its own
//! bindings here).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "policy",
});

/// The `ext-policy` world: the exports of a component built against `vigil:policy@1.3.x`.
pub mod ext {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ext-policy",
        with: {
            "vigil:policy/types": crate::policy::bindings::vigil::policy::types,
        },
    });
}

/// The `runs-policy` world: the exports of a component built against `vigil:policy@1.2.x`.
pub mod runs {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "runs-policy",
        with: {
            "vigil:policy/types": crate::policy::bindings::vigil::policy::types,
        },
    });
}

/// The `configured-policy` world: the exports of a component built against
/// `vigil:policy@1.1.x`.
pub mod configured {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "configured-policy",
        with: {
            "vigil:policy/types": crate::policy::bindings::vigil::policy::types,
        },
    });
}

/// The `base-policy` world: the exports of a component built against `vigil:policy@1.0.x`.
pub mod base {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "base-policy",
        with: {
            "vigil:policy/types": crate::policy::bindings::vigil::policy::types,
        },
    });
}

//! The generated bindings for `vigil:policy@1.x` — the only `bindgen!` in the host.
//!
//! A host built from these `@1.0.0` bindings loads any `@1.y` guest; a `@2` guest fails at
//! instantiate-pre with a clear error (a new major needs a second `bindgen!` here).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "policy",
});

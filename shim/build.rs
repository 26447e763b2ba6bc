//! Links berth-shim as a position-dependent executable. One shim runs per container, so
//! every page it dirties is paid for per container: a PIE's ~450 KiB of `.data.rel.ro`
//! (vtables and other pointer tables) is written by the dynamic loader's relocations at
//! every start and becomes private to each process. Linked without PIE, those pointers are
//! fixed at link time and the pages stay shared with the page cache.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}

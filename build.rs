//! Links the `rein` executable at a fixed address (no PIE). Every agent runs under a PTY host
//! that is this executable; as a PIE, the dynamic loader rewrites about 1.2 MiB of its
//! relocated read-only data in every process (private, dirty, charged to each agent's unit),
//! where a fixed-address executable shares those pages, clean, with every other host.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}

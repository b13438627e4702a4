// `embed_migrations!` reads migrations/ at compile time, and a proc macro cannot tell
// cargo which files it read: without this, a new migration would not reach the binary
// until something else made the crate rebuild.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    // Naming a path turns off cargo's default "any file of the package" rule.
    println!("cargo:rerun-if-changed=Cargo.toml");
}

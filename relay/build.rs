//! The web client in `web/` is embedded into the binary; rebuild when any file there
//! changes or appears (cargo only watches files it has seen before).

fn main() {
    println!("cargo:rerun-if-changed=web");
}

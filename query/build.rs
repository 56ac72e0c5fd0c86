//! The web UI's built files are embedded by `include_dir!` (`src/ui.rs`),
//! which cargo does not track on stable Rust: a change under `ui/dist`
//! (a rebuild of the UI) must rebuild this crate.

fn main() {
    println!("cargo:rerun-if-changed=../ui/dist");
    println!("cargo:rerun-if-changed=build.rs");
}

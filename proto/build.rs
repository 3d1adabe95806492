//! Compiles `strata/v1/*.proto` into Rust and writes the descriptor set that
//! gRPC reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = ["strata/v1/control.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("strata_descriptor.bin"))
        .compile_protos(&protos, &["."])?;
    Ok(())
}

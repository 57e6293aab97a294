//! Runs one target's checks on files, without libFuzzer, to reproduce a crash under a
//! debugger or with a backtrace:
//!
//! ```sh
//! RUST_BACKTRACE=1 cargo run -p outpost-fuzz --example replay -- TARGET FILE...
//! ```

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let target = args.next().ok_or_else(|| anyhow::anyhow!("usage: replay TARGET FILE..."))?;
    for path in args {
        let data = std::fs::read(&path)?;
        outpost_fuzz::check(&target, &data)
            .ok_or_else(|| anyhow::anyhow!("unknown target {target}; one of {:?}", outpost_fuzz::TARGETS))?;
        println!("{target}: {path}: ok");
    }
    Ok(())
}

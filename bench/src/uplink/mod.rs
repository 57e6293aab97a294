//! The uplink benchmarks (`--phases uplink`): real `outpost-relay` and `outpost-cloud`
//! processes whose QUIC link goes through the userspace link emulator
//! (`outpost_tests::linkemu`).
//!
//! * [`mix`]: uplink bytes per message on a realistic mix, live and as a backlog (3G);
//! * [`drain`]: time to drain a large backlog over 3G and EDGE against a bare QUIC
//!   transfer of the same bytes through the same emulator ([`quic_base`]), and the
//!   latency of emergencies sent while it drains; the same on the link's TCP path (UDP
//!   dropped) against a plain TCP transfer through the same shaped forwarder
//!   ([`tcp_base`]).
//!
//! With `--link-model`, each drain is followed by [`model`]: the link's windowing of
//! batches replayed on bare QUIC, with and without quinn's fair stream scheduling.
//!
//! What the phones and the doctor do is in [`village`]; setup shared by both in
//! [`world`]; the Markdown section in [`report`].

pub mod drain;
pub mod mix;
pub mod model;
pub mod quic_base;
pub mod report;
pub mod tcp_base;
pub mod village;
pub mod world;

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use outpost_tests::linkemu::Preset;

use crate::Args;

/// Everything the uplink phase measured.
pub struct UplinkRun {
    pub mix: Vec<(mix::MixResult, mix::MixResult)>,
    pub mix_spec: mix::MixSpec,
    /// Every drain: per preset, repetitions in turn, each over every transport in turn.
    pub drains: Vec<(String, drain::DrainSpec, drain::DrainResult)>,
    pub elapsed: Duration,
}

/// Seed of the corpus; repetitions of the mix use consecutive seeds.
pub(crate) const SEED: u64 = 7;

pub async fn run(args: &Args, tmp: &Path) -> anyhow::Result<UplinkRun> {
    let started = tokio::time::Instant::now();
    let mut presets = Vec::new();
    for name in &args.presets {
        match Preset::by_name(name) {
            Some(p) => presets.push((name.clone(), p)),
            None => bail!("unknown preset {name:?} (known: 3g, edge, 2g, clear)"),
        }
    }
    let mix_spec = mix::MixSpec {
        preset: Preset::THREE_G,
        messages: args.mix_messages.unwrap_or(if args.quick { 200 } else { 1000 }),
        posts_every: args.posts_every.max(1),
        rate: args.trickle_rate,
        seed: SEED,
        keep: args.keep,
    };
    let mut mixes = Vec::new();
    let reps = args.mix_reps.unwrap_or(if args.quick { 1 } else { 3 });
    for r in 0..reps {
        eprintln!("uplink bytes per message, repetition {} of {reps} (3G)", r + 1);
        let spec = mix::MixSpec { seed: SEED + r as u64, ..mix_spec };
        let live = mix::run(&tmp.join(format!("mix-live-{r}")), spec, mix::Mode::Live).await?;
        let backlog = mix::run(&tmp.join(format!("mix-backlog-{r}")), spec, mix::Mode::Backlog).await?;
        mixes.push((live, backlog));
    }
    let mut drains = Vec::new();
    let drain_reps = args.drain_reps.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let mut transports = args.transports.clone();
    transports.dedup();
    for (name, preset) in presets {
        let spec = drain::DrainSpec {
            preset,
            transport: world::Transport::Quic,
            messages: args.drain_messages.unwrap_or(if args.quick { 5_000 } else { 100_000 }),
            emergencies: args.emergencies.unwrap_or(if args.quick { 5 } else { 30 }),
            interval: Duration::from_millis(args.emergency_interval_ms.max(1)),
            seed: SEED,
            keep: args.keep,
            model: args.link_model,
            idle_replay: args.idle_replay,
        };
        // Transports alternate within a repetition, so a busy spell of the machine falls
        // on both rather than on one.
        for r in 0..drain_reps {
            for &transport in &transports {
                let t = transport.label();
                eprintln!(
                    "uplink drain of {} messages over {name} on {t}, repetition {} of {drain_reps}",
                    spec.messages,
                    r + 1
                );
                let spec = drain::DrainSpec { transport, ..spec };
                let result = drain::run(&tmp.join(format!("drain-{name}-{t}-{r}")), spec).await?;
                drains.push((name.clone(), spec, result));
            }
        }
    }
    Ok(UplinkRun { mix: mixes, mix_spec, drains, elapsed: started.elapsed() })
}

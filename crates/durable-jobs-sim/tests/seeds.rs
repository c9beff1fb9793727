//! Runs the simulation over many seeds (see the crate docs for the environment variables
//! that choose them); a single seed with `SIM_SEED` prints its trace.

use durable_jobs_sim::config::RunOptions;
use durable_jobs_sim::run;

#[test]
fn seeds_keep_every_invariant() {
    let options = RunOptions::from_env();
    if let Some(seed) = RunOptions::single_seed() {
        run_single(seed, &options);
        return;
    }
    let report = run::run_seeds(&options);
    println!(
        "{} seeds, {} steps, {} executions in {:.1?}: {:.0} seeds/s, {:.0} steps/s",
        report.seeds,
        report.steps,
        report.executions,
        report.elapsed,
        report.seeds_per_second(),
        report.steps_per_second()
    );
    for f in &report.failures {
        println!("seed {}: step {}: {}", f.seed, f.step, f.violation);
    }
    if let Some(first) = report.failures.first() {
        let seeds: Vec<u64> = report.failures.iter().map(|f| f.seed).collect();
        panic!("{} seeds failed: {seeds:?}\n\n{first}", seeds.len());
    }
}

fn run_single(seed: u64, options: &RunOptions) {
    let Err(failure) = run::run_seed(seed, options.steps, options.avoid) else {
        println!("seed {seed}: every invariant held");
        return;
    };
    if options.shrink {
        let ops = run::shrink(&failure, options.avoid);
        println!(
            "seed {seed} fails the same way with these {} operations:",
            ops.len()
        );
        for op in &ops {
            println!("  {op}");
        }
        if let Err(short) = run::replay(seed, &ops, options.avoid) {
            println!("\n{short}");
        }
    }
    panic!("{failure}");
}

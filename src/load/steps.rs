//! Stepped publish rates (`--publish-rate A,B,C`): after one connect phase, each rate
//! runs for `--duration`, then publishing pauses until what is in flight has arrived
//! (as after the last step), so that each step's deliveries and latencies are its own:
//! one connect phase of a million gives the whole row. One rate, or none, is one step,
//! as before steps existed.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::report::{Percentiles, Step};
use super::worker::{PHASE_RUN, Plan, Shared, Stats};
use super::{LoadConfig, Progress, drain_phase, run_phase, sysinfo, wait_for_deliveries};

/// What the coordinator saw of one step.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mark {
    /// Publishing time, seconds.
    secs: f64,
    /// The drain after it, seconds.
    drain_secs: f64,
    /// Publishes and deliveries counted at its start and at the end of its drain.
    published: (u64, u64),
    delivered: (u64, u64),
    /// CPU time of the server and of the load generator over the step and its drain.
    server_cpu_secs: Option<f64>,
    load_cpu_secs: Option<f64>,
}

/// Runs the steps of the run phase, each followed by its drain (the last one's is the
/// drain phase); stops early when a worker failed.
pub(super) fn run(
    cfg: &LoadConfig,
    plan: &Plan,
    shared: &Shared,
    server_pid: Option<u32>,
    progress: &mut Progress,
) -> Vec<Mark> {
    let steps = plan.steps();
    let counters = || {
        (
            shared.published.load(Ordering::Relaxed),
            shared.delivered.load(Ordering::Relaxed),
        )
    };
    let cpu = || {
        (
            server_pid.and_then(sysinfo::cpu_secs),
            sysinfo::cpu_secs(std::process::id()),
        )
    };
    let mut marks = Vec::with_capacity(steps);
    for step in 0..steps {
        let (p0, d0) = counters();
        let (server0, load0) = cpu();
        let t = Instant::now();
        shared.step.store(step, Ordering::Release);
        shared.paused.store(false, Ordering::Release);
        run_phase(cfg, shared, t, progress);
        let secs = t.elapsed().as_secs_f64();
        let drain = Instant::now();
        let last = step + 1 == steps || shared.phase.load(Ordering::Acquire) != PHASE_RUN;
        if last {
            drain_phase(cfg, plan, shared);
        } else {
            shared.paused.store(true, Ordering::Release);
            wait_for_deliveries(cfg, plan, shared);
        }
        let (p1, d1) = counters();
        let (server1, load1) = cpu();
        marks.push(Mark {
            secs,
            drain_secs: drain.elapsed().as_secs_f64(),
            published: (p0, p1),
            delivered: (d0, d1),
            server_cpu_secs: server0.zip(server1).map(|(a, b)| b - a),
            load_cpu_secs: load0.zip(load1).map(|(a, b)| b - a),
        });
        if last {
            break;
        }
    }
    marks
}

/// The report's steps, from the coordinator's marks and the workers' histograms.
pub(super) fn report(plan: &Plan, marks: &[Mark], stats: &Stats) -> Vec<Step> {
    marks
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let published = m.published.1 - m.published.0;
            let delivered = m.delivered.1 - m.delivered.0;
            let subscribers = plan.connections as u64;
            let expected = plan.topics.expected(m.published.1, subscribers)
                - plan.topics.expected(m.published.0, subscribers);
            Step {
                publish_rate: plan.publish_rates.get(i).copied(),
                secs: m.secs,
                drain_secs: m.drain_secs,
                published,
                published_per_sec: published as f64 / m.secs.max(1e-9),
                delivered,
                received_per_sec: delivered as f64 / (m.secs + m.drain_secs).max(1e-9),
                latency_us: stats
                    .step_latency_us
                    .get(i)
                    .map(Percentiles::of)
                    .unwrap_or_default(),
                missing: expected.saturating_sub(delivered),
                server_cpu_secs: m.server_cpu_secs,
                load_cpu_secs: m.load_cpu_secs,
            }
        })
        .collect()
}

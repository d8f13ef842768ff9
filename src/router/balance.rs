//! Load-balancing strategies: the order in which one priority tier's deployments are tried.

use std::sync::Arc;

use super::health::DeploymentHealth;
use crate::config::{DeploymentSpec, Strategy};

pub type Member = (Arc<DeploymentSpec>, Arc<DeploymentHealth>);

/// Orders `tier` (deployments of equal priority, all currently available) for one request.
pub fn order(strategy: Strategy, mut tier: Vec<Member>, rng: &mut fastrand::Rng) -> Vec<Member> {
    match strategy {
        Strategy::Priority => tier,
        Strategy::Cheapest => {
            rng.shuffle(&mut tier);
            tier.sort_by_key(|(d, _)| d.sort_price);
            tier
        }
        Strategy::Weighted => weighted_shuffle(tier, rng),
        Strategy::LeastBusy => {
            rng.shuffle(&mut tier);
            tier.sort_by_key(|(_, h)| h.in_flight());
            tier
        }
        Strategy::Latency => {
            // Power of two choices over peak-EWMA cost: pick two at random, lead with the cheaper.
            rng.shuffle(&mut tier);
            if tier.len() >= 2 && cost(&tier[1]) < cost(&tier[0]) {
                tier.swap(0, 1);
            }
            let first = tier.remove(0);
            tier.sort_by(|a, b| cost(a).total_cmp(&cost(b)));
            tier.insert(0, first);
            tier
        }
    }
}

fn cost((_, health): &Member) -> f64 {
    health.latency_ms().max(0.001) * f64::from(health.in_flight() + 1)
}

/// A random order where each next pick is drawn in proportion to weight (zero weights last).
fn weighted_shuffle(mut pool: Vec<Member>, rng: &mut fastrand::Rng) -> Vec<Member> {
    let mut out = Vec::with_capacity(pool.len());
    while !pool.is_empty() {
        let total: f64 = pool.iter().map(|(d, _)| d.weight).sum();
        let index = if total <= 0.0 {
            0
        } else {
            let mut target = rng.f64() * total;
            pool.iter()
                .position(|(d, _)| {
                    target -= d.weight;
                    target < 0.0
                })
                .unwrap_or(pool.len() - 1)
        };
        out.push(pool.remove(index));
    }
    out
}

//! Gumbel root search (Danihelka et al., "Policy improvement by planning with Gumbel",
//! ICLR 2022), the root rule [`super::RootRule::Gumbel`]:
//!
//! - Each search draws Gumbel noise `g` for the root's moves (self-play: `root_noise` on;
//!   otherwise `g = 0`, a deterministic search).
//! - The search's `n` simulations are shared by sequential halving: the `m = min(n,
//!   gumbel_considered)` moves with the largest `g + logits` get equal visits, then the
//!   better half by `g + logits + sigma(q)` does, and so on down to two. Which move a
//!   descent takes is decided by a fixed schedule of visit counts ([`halving_schedule`]):
//!   the k-th simulation goes to the best-scoring move that has exactly `schedule[k]`
//!   visits, so the schedule needs no state beyond the counts.
//! - The move played is the one with the most visits and, among those, the largest
//!   `g + logits + sigma(q)`.
//! - The policy target is `softmax(logits + sigma(completed q))`: a visited move keeps its
//!   Q, an unvisited one takes the mixed value `v_mix` (the network's value at the root
//!   mixed with the prior-weighted Q of the visited moves).
//!
//! `sigma(q) = (c_visit + max_b N(b)) * c_scale * q`, with the completed Q rescaled to
//! [0, 1] by its minimum and maximum over the root's moves (mctx's `qtransforms`).
//! Logits are the logarithms of the priors: they differ from the network's logits over
//! the legal moves by a constant, which no softmax or argmax here sees.
//!
//! Below the root every node is searched by PUCT, with the moves-left utility where it is
//! on ([`super::moves_left_utility`]). The root's own choice leaves the utility out: the
//! schedule picks a root move by `g + logits + sigma(q)` alone, and so does the move
//! played and the policy target.

use rand::Rng;

/// What the root rule reads of one root move.
#[derive(Clone, Copy, Debug)]
pub struct RootMove {
    pub prior: f32,
    /// Visits backed up, over the move's whole life (a reused subtree's included).
    pub visits: u32,
    /// Visits of this search, counting those in flight.
    pub this_search: u32,
    /// Q for the side to move at the root (meaningful when `visits > 0`), or the exact
    /// value when the move is decided.
    pub q: f32,
    /// Whether the search may play it (UCI `searchmoves`).
    pub allowed: bool,
}

/// The visit count the k-th simulation's move must have, for `n` simulations shared
/// among `m` moves (mctx's `get_sequence_of_considered_visits`): each phase gives every
/// move still considered `max(1, n / (ceil(log2 m) * considered))` visits, then halves the
/// moves considered, down to two.
pub fn halving_schedule(m: usize, n: usize) -> Vec<u32> {
    if m <= 1 {
        return (0..n as u32).collect();
    }
    let log2m = (m as f64).log2().ceil().max(1.0) as usize;
    let mut schedule = Vec::with_capacity(n);
    let mut visits = vec![0u32; m];
    let mut considered = m;
    while schedule.len() < n {
        let extra = (n / (log2m * considered)).max(1);
        for _ in 0..extra {
            schedule.extend_from_slice(&visits[..considered]);
            for v in &mut visits[..considered] {
                *v += 1;
            }
        }
        considered = (considered / 2).max(2);
    }
    schedule.truncate(n);
    schedule
}

/// A standard Gumbel sample.
pub fn gumbel_sample<R: Rng>(rng: &mut R) -> f32 {
    let u = rng.random::<f64>().clamp(1e-12, 1.0 - 1e-12);
    (-(-u.ln()).ln()) as f32
}

/// The mixed value: the network's value of the root `raw` mixed with the Q of the
/// visited moves, weighted by their priors (mctx's `_compute_mixed_value`).
pub fn mixed_value(moves: &[RootMove], raw: f32) -> f32 {
    let visits: f64 = moves.iter().map(|m| m.visits as f64).sum();
    let mass: f64 = moves
        .iter()
        .filter(|m| m.visits > 0)
        .map(|m| m.prior.max(f32::MIN_POSITIVE) as f64)
        .sum();
    if visits == 0.0 || mass <= 0.0 {
        return raw;
    }
    let weighted: f64 = moves
        .iter()
        .filter(|m| m.visits > 0)
        .map(|m| m.prior.max(f32::MIN_POSITIVE) as f64 * m.q as f64)
        .sum::<f64>()
        / mass;
    ((raw as f64 + visits * weighted) / (visits + 1.0)) as f32
}

/// `sigma(completed q)` of every move: the visited moves' Q, the mixed value for the
/// others, rescaled to [0, 1] over the moves and scaled by `(c_visit + max visits) *
/// c_scale`.
pub fn sigma_completed_q(moves: &[RootMove], raw: f32, c_visit: f32, c_scale: f32) -> Vec<f32> {
    let v_mix = mixed_value(moves, raw);
    let completed: Vec<f32> = moves
        .iter()
        .map(|m| if m.visits > 0 { m.q } else { v_mix })
        .collect();
    let lo = completed.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = completed.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let span = (hi - lo).max(1e-8);
    let max_visits = moves.iter().map(|m| m.visits).max().unwrap_or(0) as f32;
    let scale = (c_visit + max_visits) * c_scale;
    completed.iter().map(|q| scale * (q - lo) / span).collect()
}

fn logit(prior: f32) -> f32 {
    prior.max(1e-30).ln()
}

/// The root's Gumbel state for one search.
#[derive(Clone, Debug, Default)]
pub struct GumbelRoot {
    /// Gumbel noise per root move (in the root's child order); zeros when off.
    pub noise: Vec<f32>,
    /// The visit count each simulation's move must have ([`halving_schedule`]).
    pub schedule: Vec<u32>,
    /// Each move's visits (in flight included) before this search: a reused subtree's.
    pub base: Vec<u32>,
}

impl GumbelRoot {
    /// The state for a root with `moves` (their `this_search` visits so far become the
    /// baseline), `simulations` to share among them, at most `considered` moves, noise
    /// drawn from `rng` when given.
    pub fn new<R: Rng>(
        moves: &[RootMove],
        simulations: u32,
        considered: u32,
        rng: Option<&mut R>,
    ) -> GumbelRoot {
        let noise = match rng {
            Some(rng) => moves.iter().map(|_| gumbel_sample(rng)).collect(),
            None => vec![0.0; moves.len()],
        };
        let allowed = moves.iter().filter(|m| m.allowed).count();
        let m = (considered.max(1) as usize)
            .min(allowed)
            .min(simulations.max(1) as usize);
        GumbelRoot {
            noise,
            schedule: halving_schedule(m, simulations as usize),
            base: moves.iter().map(|m| m.this_search).collect(),
        }
    }

    fn score(&self, k: usize, moves: &[RootMove], sigma: &[f32]) -> f32 {
        self.noise.get(k).copied().unwrap_or(0.0) + logit(moves[k].prior) + sigma[k]
    }

    /// The move (index into `moves`) the next descent takes: the best-scoring allowed
    /// move with exactly the schedule's visit count for this simulation. Past the end of
    /// the schedule, or when no move has that count, the best-scoring move among those
    /// with the count nearest to it.
    pub fn select(&self, moves: &[RootMove], sigma: &[f32]) -> usize {
        let done: u32 = moves
            .iter()
            .filter(|m| m.allowed)
            .map(|m| m.this_search)
            .sum();
        let target = match self.schedule.get(done as usize) {
            Some(&t) => t,
            // The budget is spent (a search run on past it): keep visiting the leaders.
            None => moves
                .iter()
                .filter(|m| m.allowed)
                .map(|m| m.this_search)
                .max()
                .unwrap_or(0),
        };
        let mut best = 0;
        let mut best_key = (u32::MAX, f32::NEG_INFINITY);
        for (k, m) in moves.iter().enumerate() {
            if !m.allowed {
                continue;
            }
            let key = (m.this_search.abs_diff(target), self.score(k, moves, sigma));
            if key.0 < best_key.0 || (key.0 == best_key.0 && key.1 > best_key.1) {
                best_key = key;
                best = k;
            }
        }
        best
    }

    /// The move a finished search plays: among the allowed moves with the most visits in
    /// this search, the one with the largest `g + logits + sigma(q)`.
    pub fn choose(&self, moves: &[RootMove], sigma: &[f32]) -> Option<usize> {
        let most = moves
            .iter()
            .filter(|m| m.allowed)
            .map(|m| m.this_search)
            .max()?;
        (0..moves.len())
            .filter(|&k| moves[k].allowed && moves[k].this_search == most)
            .max_by(|&a, &b| {
                self.score(a, moves, sigma)
                    .total_cmp(&self.score(b, moves, sigma))
            })
    }
}

/// The improved policy `softmax(logits + sigma(completed q))` over the allowed moves (0
/// for the others).
pub fn improved_policy(moves: &[RootMove], sigma: &[f32]) -> Vec<f32> {
    let z: Vec<f32> = moves
        .iter()
        .zip(sigma)
        .map(|(m, s)| {
            if m.allowed {
                logit(m.prior) + s
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    let top = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !top.is_finite() {
        return vec![0.0; moves.len()];
    }
    let e: Vec<f64> = z.iter().map(|&x| ((x - top) as f64).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|&x| (x / sum) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    fn mv(prior: f32, visits: u32, q: f32) -> RootMove {
        RootMove {
            prior,
            visits,
            this_search: visits,
            q,
            allowed: true,
        }
    }

    #[test]
    fn the_schedule_halves_the_moves_considered() {
        // 4 moves, 8 simulations: n / (log2 m * considered) = 1 visit each for the 4, then
        // 8 / (2 * 2) = 2 more each for the best 2.
        assert_eq!(halving_schedule(4, 8), vec![0, 0, 0, 0, 1, 1, 2, 2]);
        // 16 moves, 32 simulations: 16 first visits, then 8 second visits (32/(4*8) = 1),
        // then 4 moves get 32/(4*4)=2 more each, and two moves take the rest.
        let s = halving_schedule(16, 32);
        assert_eq!(s.len(), 32);
        assert!(s[..16].iter().all(|&v| v == 0));
        assert!(s[16..24].iter().all(|&v| v == 1));
        assert_eq!(&s[24..32], &[2, 2, 2, 2, 3, 3, 3, 3]);
        // One move: its visits count up.
        assert_eq!(halving_schedule(1, 4), vec![0, 1, 2, 3]);
        // Every simulation is scheduled, and a count appears only after the one below it
        // was given to as many moves.
        for (m, n) in [(16, 8), (16, 64), (5, 50), (2, 7), (16, 800)] {
            let s = halving_schedule(m, n);
            assert_eq!(s.len(), n);
            let mut seen = vec![0usize; n + 1];
            for &v in &s {
                if v > 0 {
                    assert!(
                        seen[v as usize - 1] > seen[v as usize],
                        "m {m} n {n}: {s:?}"
                    );
                }
                seen[v as usize] += 1;
            }
        }
    }

    #[test]
    fn the_mixed_value_weights_visited_moves_by_their_priors() {
        // No visits: the network's value.
        assert_eq!(mixed_value(&[mv(0.5, 0, 0.0), mv(0.5, 0, 0.0)], 0.3), 0.3);
        // Two visits on a move of prior 0.2 with Q 0.5 and one on prior 0.6 with Q -0.1:
        // weighted Q (0.2*0.5 + 0.6*-0.1)/0.8 = 0.05; (0.3 + 3*0.05)/4 = 0.1125.
        let moves = [mv(0.2, 2, 0.5), mv(0.6, 1, -0.1), mv(0.2, 0, 0.9)];
        assert!((mixed_value(&moves, 0.3) - 0.1125).abs() < 1e-6);
    }

    #[test]
    fn sigma_is_rescaled_q_times_the_visit_scale() {
        let moves = [mv(0.2, 2, 0.5), mv(0.6, 1, -0.1), mv(0.2, 0, 0.9)];
        let s = sigma_completed_q(&moves, 0.3, 50.0, 1.0);
        // Completed: 0.5, -0.1, v_mix 0.1125; lo -0.1, hi 0.5; scale 50 + 2.
        assert!((s[0] - 52.0).abs() < 1e-4);
        assert!(s[1].abs() < 1e-6);
        assert!((s[2] - 52.0 * (0.2125 / 0.6)).abs() < 1e-3);
        let s = sigma_completed_q(&moves, 0.3, 50.0, 0.1);
        assert!((s[0] - 5.2).abs() < 1e-4);
    }

    #[test]
    fn the_improved_policy_moves_mass_to_the_better_q() {
        let moves = [mv(0.5, 4, -0.2), mv(0.5, 4, 0.4)];
        let s = sigma_completed_q(&moves, 0.0, 50.0, 1.0);
        let p = improved_policy(&moves, &s);
        assert!((p[0] + p[1] - 1.0).abs() < 1e-6);
        assert!(p[1] > 0.99, "{p:?}");
        // Equal Q: the priors.
        let moves = [mv(0.25, 4, 0.1), mv(0.75, 4, 0.1)];
        let p = improved_policy(&moves, &sigma_completed_q(&moves, 0.0, 50.0, 1.0));
        assert!((p[0] - 0.25).abs() < 1e-5 && (p[1] - 0.75).abs() < 1e-5);
        // A move the search may not play gets nothing.
        let mut moves = [mv(0.5, 0, 0.0), mv(0.5, 0, 0.0)];
        moves[0].allowed = false;
        assert_eq!(improved_policy(&moves, &[0.0, 0.0]), vec![0.0, 1.0]);
    }

    #[test]
    fn selection_follows_the_schedule_and_the_choice_takes_the_most_visited() {
        let mut moves: Vec<RootMove> = [0.4, 0.3, 0.2, 0.1]
            .iter()
            .map(|&p| mv(p, 0, 0.0))
            .collect();
        let root = GumbelRoot::new::<StdRng>(&moves, 8, 16, None);
        assert_eq!(root.schedule, vec![0, 0, 0, 0, 1, 1, 2, 2]);
        // Without noise and with equal Q the first pass goes by prior, one visit each.
        let mut order = Vec::new();
        for k in 0..4 {
            let s = sigma_completed_q(&moves, 0.0, 50.0, 1.0);
            let c = root.select(&moves, &s);
            order.push(c);
            moves[c].this_search += 1;
            moves[c].visits += 1;
            // The third-best move turns out best, the others poor.
            moves[c].q = if c == 2 { 0.8 } else { -0.5 + 0.1 * k as f32 };
        }
        assert_eq!(order, vec![0, 1, 2, 3]);
        // Then the two best by prior + sigma(q) get the second visits: move 2 (best Q),
        // and the best of the rest.
        let s = sigma_completed_q(&moves, 0.0, 50.0, 1.0);
        let c = root.select(&moves, &s);
        assert_eq!(c, 2);
        moves[c].this_search += 1;
        moves[c].visits += 1;
        let s = sigma_completed_q(&moves, 0.0, 50.0, 1.0);
        let second = root.select(&moves, &s);
        assert_ne!(second, 2);
        moves[second].this_search += 1;
        moves[second].visits += 1;
        // Move 2 survives with the most visits and is played.
        for _ in 0..2 {
            let s = sigma_completed_q(&moves, 0.0, 50.0, 1.0);
            let c = root.select(&moves, &s);
            assert!(c == 2 || c == second);
            moves[c].this_search += 1;
            moves[c].visits += 1;
        }
        let s = sigma_completed_q(&moves, 0.0, 50.0, 1.0);
        assert_eq!(root.choose(&moves, &s), Some(2));
    }

    #[test]
    fn noise_changes_which_moves_are_considered() {
        // With 2 of 8 moves considered, the noise picks different pairs over seeds; the
        // prior alone always picks the same pair.
        let moves: Vec<RootMove> = (0..8).map(|k| mv(0.2 - 0.02 * k as f32, 0, 0.0)).collect();
        let s = vec![0.0; 8];
        let plain = GumbelRoot::new::<StdRng>(&moves, 2, 2, None);
        assert_eq!(plain.select(&moves, &s), 0);
        let mut firsts = std::collections::HashSet::new();
        for seed in 0..40 {
            let mut rng = StdRng::seed_from_u64(seed);
            let g = GumbelRoot::new(&moves, 2, 2, Some(&mut rng));
            firsts.insert(g.select(&moves, &s));
        }
        assert!(firsts.len() >= 4, "{firsts:?}");
    }
}

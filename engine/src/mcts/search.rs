//! The search loop: `gather` descends the tree up to a batch's worth of times (virtual
//! loss steering each descent away from leaves already in flight), `apply` expands the
//! evaluated leaves and backs their values up. The driver ([`super::driver`]) calls the
//! evaluator in between, so one call can serve many searches (self-play) or one (the UCI
//! engine). The search keeps no evaluation cache: whoever owns the evaluator puts a
//! [`super::CachedEvaluator`] in front of it.
//!
//! How the root's children are chosen, which move is played and what the policy target
//! is are the root rule's ([`RootRule`]: PUCT, or Gumbel with sequential halving, see
//! [`super::gumbel`]); below the root every node uses PUCT.
//!
//! Plies left (lc0's moves-left utility): every node keeps M, the mean plies to the game's
//! end over the visits backed up through it, from its own position
//! ([`Node::plies_left`]). Where the evaluator gives the moves-left head's estimates and
//! `moves_left_slope` is not 0, PUCT adds [`moves_left_utility`] to a visited child's
//! score at a node whose |Q| is above `moves_left_threshold`: the side that is winning
//! prefers the child with the shorter game ahead, the side that is losing the longer
//! one. A search whose evaluator gives no estimates (a network without the head) selects
//! exactly as it would without the utility.

use super::driver::{Driver, Limits};
use super::evaluator::{apply_policy_temperature, EvalBatch, Evaluator};
use super::gumbel::{self, GumbelRoot, RootMove};
use super::node::{Node, NodeState, Tree, MAX_TREE_NODES, MIN_TREE_NODES, NONE};
use super::params::SearchParams;
use crate::game::{is_mating_move, position_hash, rules_outcome, Game};
use crate::phase_times::{lap, PhaseTimes};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, Gamma};
use shakmaty::{zobrist::Zobrist64, Chess, EnPassantMode, Move, Position};
use std::time::Instant;

/// Counters of what the descents found.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct SearchStats {
    /// Descents that ended on a leaf sent to the evaluator.
    pub leaves: u64,
    /// Descents that ended on a leaf already in the batch (not re-evaluated).
    pub collisions: u64,
    /// Descents that ended on a position decided by the rules.
    pub terminals: u64,
    /// Deepest descent, in plies from the root.
    pub max_depth: u32,
    /// Sum of descent depths (for the mean depth).
    pub depth_sum: u64,
    /// Leaves left unexpanded because the tree was at its node bound.
    pub not_expanded: u64,
}

/// A root child's statistics, for move choice and reporting.
#[derive(Clone, Copy, Debug)]
pub struct ChildStats {
    pub mv: Move,
    pub visits: u32,
    /// Q for the side to move at the root.
    pub q: f32,
    pub prior: f32,
    /// +1 when the move wins by force for the side to move at the root, -1 when it loses
    /// by force, 0 otherwise (with the solver on).
    pub decided: i8,
    /// Plies from the root to the checkmate that decides the move (when decided).
    pub mate_plies: u16,
}

/// A root move as PUCT weighs it for the next descent (lc0's verbose move stats): the
/// move is chosen by the largest `q + u + m`.
#[derive(Clone, Copy, Debug)]
pub struct PuctTerms {
    pub mv: Move,
    pub visits: u32,
    /// Descents through the move not yet backed up (0 between searches).
    pub in_flight: u32,
    /// The prior the search uses (at the policy temperature, with any root noise).
    pub prior: f32,
    /// Q for the side to move at the root as the selection sees it: first-play urgency
    /// for an unvisited move, the exact value of a decided one.
    pub q: f32,
    /// The exploration term `cpuct(N) * sqrt(N) * prior / (1 + n)`, N the root's visits
    /// and n the move's.
    pub u: f32,
    /// The moves-left utility ([`moves_left_utility`]; 0 when it does not apply).
    pub m: f32,
    /// The move's plies left (its M, from the position after it) when the evaluator gives
    /// moves-left estimates and the move was visited or is decided.
    pub plies_left: Option<f32>,
    /// As [`ChildStats::decided`].
    pub decided: i8,
}

/// The terms of PUCT at a node that every child shares.
struct Puct {
    /// `cpuct(N) * sqrt(N)`.
    u_scale: f32,
    /// First-play urgency: the value of an unvisited child.
    fpu: f32,
    /// The node's Q and plies left when the moves-left utility is on here (the evaluator
    /// gives estimates and the slope is not 0).
    moves_left: Option<MovesLeftParent>,
}

/// What the moves-left utility reads of the node whose children are weighed.
#[derive(Clone, Copy)]
struct MovesLeftParent {
    /// Q of the node (only |Q| counts).
    q: f32,
    /// M of the node, in plies.
    plies_left: f32,
}

/// lc0's moves-left utility (its `MovesLeft*` options): what PUCT adds to a child's
/// score to prefer a shorter game when winning and a longer one when losing.
///
/// `parent_q` is the Q of the node whose children are weighed (from either side: only
/// |Q| counts), `q` the child's Q for the player choosing it, and `plies_difference` the
/// child's M minus the node's (both in plies, each from its own position). Below the
/// threshold (|parent_q| <= `moves_left_threshold`) it is 0; above it,
///
/// `clamp(slope * plies_difference, -max_effect, max_effect) * sign(-q)
///  * (constant + scaled * q' + quadratic * q'^2)`,
///
/// with `q' = max(0, |q| - threshold) / (1 - threshold)` (for a threshold strictly
/// between 0 and 1; `q' = |q|` otherwise), so that the effect grows smoothly from 0 at
/// the threshold. A winning chooser (q > 0) gains from a child with fewer plies left, a losing
/// one from a child with more.
pub fn moves_left_utility(p: &SearchParams, parent_q: f32, q: f32, plies_difference: f32) -> f32 {
    if parent_q.abs() <= p.moves_left_threshold {
        return 0.0;
    }
    let cap = p.moves_left_max_effect.max(0.0);
    let effect = (p.moves_left_slope * plies_difference).clamp(-cap, cap);
    let sign = if q > 0.0 { -1.0 } else { 1.0 };
    let t = p.moves_left_threshold;
    let q = if t > 0.0 && t < 1.0 {
        (q.abs() - t).max(0.0) / (1.0 - t)
    } else {
        q.abs()
    };
    effect
        * sign
        * (p.moves_left_constant_factor
            + p.moves_left_scaled_factor * q
            + p.moves_left_quadratic_factor * q * q)
}

/// Root visits after which a search takes no more (a `go infinite` at its node bound
/// revisits its leaves for as long as it is left running).
pub const MAX_ROOT_VISITS: u32 = u32::MAX / 2;

enum Descent {
    Leaf,
    Terminal,
    Collision,
}

/// How the root's children are chosen for descents, which move a finished search plays
/// and what it teaches the policy. Recorded with the search parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootRule {
    /// PUCT as everywhere in the tree; the most visited move is played (or one sampled
    /// by visits at a temperature), and the policy target is the visit distribution.
    #[default]
    Puct,
    /// Gumbel noise and sequential halving at the root ([`super::gumbel`]): the move
    /// played is the surviving one with the best `g + logits + sigma(q)` (the search's
    /// own sample; a temperature is not used), and the policy target is
    /// `softmax(logits + sigma(completed q))`. It needs the search's planned visits
    /// ([`Search::begin`]); a search without them is searched by PUCT at the root. The
    /// moves-left utility is left out at the root (below it PUCT uses it as ever).
    Gumbel,
}

impl std::str::FromStr for RootRule {
    type Err = String;
    fn from_str(s: &str) -> Result<RootRule, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "puct" => Ok(RootRule::Puct),
            "gumbel" => Ok(RootRule::Gumbel),
            _ => Err(format!("root rule {s:?}: expected puct or gumbel")),
        }
    }
}

impl std::fmt::Display for RootRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RootRule::Puct => "puct",
            RootRule::Gumbel => "gumbel",
        })
    }
}

pub struct Search {
    pub params: SearchParams,
    tree: Tree,
    /// Hashes of the game's positions before the root (for threefold repetition).
    history: Vec<u64>,
    /// Leaves of the last gather: (node, index in the batch).
    pending: Vec<(u32, usize)>,
    /// Mating moves of the last gather's leaves (solver on): (node, index of the move
    /// among its legal moves), marked as checkmates when the leaf is expanded.
    pending_mates: Vec<(u32, u16)>,
    path_hashes: Vec<u64>,
    root_noised: bool,
    /// Root moves the search may explore (UCI `searchmoves`); empty means all.
    root_moves: Vec<Move>,
    /// Draws the root's Dirichlet noise: seeded, so that a seeded game is reproducible.
    noise_rng: StdRng,
    /// Visits the current search will add, when its limits say (see [`Self::begin`]).
    planned: Option<u32>,
    /// Root visits when the current search began.
    begin_visits: u32,
    /// The network's value of the root for its side to move, when this tree evaluated it.
    root_value: Option<f32>,
    /// The Gumbel root rule's noise and schedule for the current search (made once the
    /// root is expanded).
    gumbel: Option<GumbelRoot>,
    /// The priors of the node being expanded at the policy temperature (when it is not 1).
    tempered_priors: Vec<f32>,
    /// The evaluator gave this tree's leaves moves-left estimates (a network with the
    /// head), so the nodes' plies left mean what they say.
    plies_left_known: bool,
    pub stats: SearchStats,
}

impl Search {
    pub fn new(game: &Game, params: SearchParams) -> Search {
        let mut s = Search {
            tree: Tree::new(game.position().clone(), game.hash()),
            history: Vec::new(),
            pending: Vec::new(),
            pending_mates: Vec::new(),
            path_hashes: Vec::new(),
            root_noised: false,
            root_moves: Vec::new(),
            noise_rng: StdRng::seed_from_u64(0),
            planned: None,
            begin_visits: 0,
            root_value: None,
            gumbel: None,
            tempered_priors: Vec::new(),
            plies_left_known: false,
            stats: SearchStats::default(),
            params,
        };
        s.history = game.history()[..game.history().len() - 1].to_vec();
        s
    }

    /// Seeds the generator of the root's Dirichlet noise (0 until this is called).
    pub fn seed_noise(&mut self, seed: u64) {
        self.noise_rng = StdRng::seed_from_u64(seed);
    }

    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// How full the tree is against its node bound, in permille.
    pub fn tree_permille(&self) -> u32 {
        let limit = self.params.max_nodes.clamp(MIN_TREE_NODES, MAX_TREE_NODES);
        (self.tree.nodes.len() as u64 * 1000 / limit as u64).min(1000) as u32
    }

    /// A search of this root begins: `planned` is the visits it will add if its limits
    /// say (the driver calls this before the first round; a root rule that plans its
    /// simulations reads it).
    pub fn begin(&mut self, planned: Option<u32>) {
        self.planned = planned;
        self.begin_visits = self.tree.root().visits;
        self.gumbel = None;
    }

    /// The visits the current search plans to add ([`Self::begin`]).
    pub fn planned_playouts(&self) -> Option<u32> {
        self.planned
    }

    pub fn root_position(&self) -> &Chess {
        &self.tree.root_position
    }

    pub fn root_visits(&self) -> u32 {
        self.tree.root().visits
    }

    /// Moves the root to `game`'s current position. If that is the old root plus one
    /// played move whose child exists, the child's subtree is kept (tree reuse);
    /// otherwise the tree starts afresh.
    pub fn advance_to(&mut self, game: &Game) -> bool {
        self.history = game.history()[..game.history().len() - 1].to_vec();
        self.root_noised = false;
        self.root_moves.clear();
        self.pending.clear();
        self.pending_mates.clear();
        self.root_value = None;
        self.gumbel = None;
        let reused = match game.moves().last() {
            Some(&mv)
                if game.history().len() >= 2
                    && game.history()[game.history().len() - 2] == self.tree.root_hash =>
            {
                self.tree.reuse(mv, game.position().clone(), game.hash())
            }
            _ => false,
        };
        if !reused {
            self.tree = Tree::new(game.position().clone(), game.hash());
            self.plies_left_known = false;
        }
        reused
    }

    /// Limits the root moves the search explores, reports and plays (UCI `searchmoves`);
    /// an empty list, or one with no legal move of the root, allows every move. Cleared
    /// when the root moves.
    pub fn restrict_root(&mut self, moves: &[Move]) {
        let legal = self.tree.root_position.legal_moves();
        self.root_moves = Vec::new();
        for m in moves {
            if legal.contains(m) && !self.root_moves.contains(m) {
                self.root_moves.push(*m);
            }
        }
    }

    /// The root moves the search may play: those of [`Self::restrict_root`], or every
    /// legal move.
    /// Whether root child `c` may be searched and played (`searchmoves`: all when none
    /// were given).
    fn allowed_at_root(&self, c: &Node) -> bool {
        self.root_moves.is_empty() || c.mv.is_some_and(|m| self.root_moves.contains(&m))
    }

    pub fn allowed_root_moves(&self) -> Vec<Move> {
        if self.root_moves.is_empty() {
            self.tree.root_position.legal_moves().into_iter().collect()
        } else {
            self.root_moves.clone()
        }
    }

    /// Drops the tree and starts again at `game`'s position.
    pub fn reset_tree(&mut self, game: &Game) {
        self.history = game.history()[..game.history().len() - 1].to_vec();
        self.root_noised = false;
        self.root_moves.clear();
        self.pending.clear();
        self.pending_mates.clear();
        self.root_value = None;
        self.gumbel = None;
        self.plies_left_known = false;
        self.tree = Tree::new(game.position().clone(), game.hash());
    }

    /// Makes up to `want` descents that end in a visit: leaves needing the evaluator go
    /// into `batch`, terminal leaves are backed up at once. Collisions do not count.
    /// Returns the leaves added to `batch`.
    pub fn gather(&mut self, want: usize, batch: &mut EvalBatch, timing: &mut PhaseTimes) -> usize {
        let expanded = self.tree.root().state == NodeState::Expanded;
        match self.params.root_rule {
            RootRule::Puct if self.params.root_noise && !self.root_noised && expanded => {
                let mut rng = std::mem::replace(&mut self.noise_rng, StdRng::seed_from_u64(0));
                self.add_root_noise(&mut rng);
                self.noise_rng = rng;
            }
            RootRule::Gumbel if self.gumbel.is_none() && expanded => self.prepare_gumbel(),
            _ => {}
        }
        // Visits stay far from u32's end, whatever a search at its node bound runs for.
        if self.tree.root().visits >= MAX_ROOT_VISITS {
            return 0;
        }
        let mut added = 0;
        let mut visits = 0;
        let mut collisions = 0;
        let mut attempts = 0;
        while visits < want && collisions <= self.params.max_collisions && attempts < 4 * want + 16
        {
            attempts += 1;
            match self.descend(batch, timing) {
                Descent::Leaf => {
                    added += 1;
                    visits += 1;
                }
                Descent::Collision => collisions += 1,
                Descent::Terminal => {
                    visits += 1;
                    // A decided root has nothing left to search.
                    if matches!(self.tree.root().state, NodeState::Terminal(_)) {
                        break;
                    }
                }
            }
        }
        added
    }

    fn descend(&mut self, batch: &mut EvalBatch, timing: &mut PhaseTimes) -> Descent {
        let t0 = Instant::now();
        let mut pos = self.tree.root_position.clone();
        let mut hash = self.tree.root_hash;
        self.path_hashes.clear();
        let mut idx = 0usize;
        let mut depth = 0u32;
        loop {
            self.tree.nodes[idx].in_flight += 1;
            let node = &self.tree.nodes[idx];
            // The exact value and plies left of a position the rules end, and below the
            // root of a node the solver proved, which is as exact as a terminal one.
            let exact = match node.state {
                NodeState::Terminal(v) => Some((f32::from(v), 0.0)),
                NodeState::Expanded if idx != 0 && node.proven != 0 => {
                    Some((f32::from(node.proven), f32::from(node.proven_plies)))
                }
                _ => None,
            };
            match (node.state, exact) {
                (_, Some((v, plies))) => {
                    lap(&mut timing.select, t0);
                    self.note_depth(depth);
                    self.stats.terminals += 1;
                    self.backup(idx, v, plies);
                    return Descent::Terminal;
                }
                (NodeState::Expanded, None) => {
                    let child = if idx == 0 {
                        self.select_root_child()
                    } else {
                        self.select_child(idx)
                    };
                    let mv = self.tree.nodes[child]
                        .mv
                        .expect("non-root nodes carry their move");
                    let next = pos.update_zobrist_hash::<Zobrist64>(
                        Zobrist64(hash),
                        mv,
                        EnPassantMode::Legal,
                    );
                    pos.play_unchecked(mv);
                    self.path_hashes.push(hash);
                    hash = next.map(|z| z.0).unwrap_or_else(|| position_hash(&pos));
                    idx = child;
                    depth += 1;
                }
                (NodeState::Pending, _) => {
                    self.revert(idx);
                    self.stats.collisions += 1;
                    lap(&mut timing.select, t0);
                    return Descent::Collision;
                }
                (NodeState::Terminal(_), None) => unreachable!("a terminal node is exact"),
                (NodeState::Unexpanded, _) => {
                    let t1 = lap(&mut timing.select, t0);
                    let moves = pos.legal_moves();
                    // Inside the tree a position seen once before on the path is a draw
                    // (lc0's rule); against the game history it takes two earlier ones.
                    let occurrences = if idx == 0 {
                        0
                    } else if self.params.tree_twofold_draw && self.path_hashes.contains(&hash) {
                        2
                    } else {
                        self.path_hashes.iter().filter(|&&h| h == hash).count()
                            + self.history.iter().filter(|&&h| h == hash).count()
                    };
                    let outcome = rules_outcome(&pos, !moves.is_empty(), occurrences);
                    let t2 = lap(&mut timing.movegen, t1);
                    self.note_depth(depth);
                    if let Some(o) = outcome {
                        let v = o.value_for(pos.turn());
                        // value_for is exactly 1, 0 or -1.
                        self.tree.nodes[idx].state = NodeState::Terminal(v as i8);
                        self.stats.terminals += 1;
                        self.backup(idx, v, 0.0);
                        if v != 0.0 && self.params.solver {
                            self.propagate_proof(idx);
                        }
                        lap(&mut timing.backup, t2);
                        return Descent::Terminal;
                    }
                    if self.params.solver {
                        for (k, &mv) in moves.iter().enumerate() {
                            if is_mating_move(&pos, mv) {
                                self.pending_mates.push((idx as u32, k as u16));
                            }
                        }
                    }
                    self.tree.nodes[idx].state = NodeState::Pending;
                    let bi = batch.push(&pos, &moves);
                    self.pending.push((idx as u32, bi));
                    self.stats.leaves += 1;
                    lap(&mut timing.movegen, t2);
                    return Descent::Leaf;
                }
            }
        }
    }

    fn note_depth(&mut self, depth: u32) {
        self.stats.max_depth = self.stats.max_depth.max(depth);
        self.stats.depth_sum += depth as u64;
    }

    /// The root child a descent takes, by the root rule.
    fn select_root_child(&self) -> usize {
        match (&self.params.root_rule, &self.gumbel) {
            (RootRule::Gumbel, Some(g)) => {
                let moves = self.gumbel_moves(g);
                let k = g.select(&moves, &self.gumbel_sigma(&moves));
                self.tree.root().first_child as usize + k
            }
            _ => self.select_child(0),
        }
    }

    /// Draws the root's Gumbel noise (self-play: `root_noise`) and the schedule of this
    /// search's simulations, once the root is expanded; without planned visits the
    /// root is searched by PUCT.
    fn prepare_gumbel(&mut self) {
        let Some(planned) = self.planned else {
            return;
        };
        // A fresh root's own evaluation was the search's first visit.
        let spent = self.tree.root().visits.saturating_sub(self.begin_visits);
        let simulations = planned.saturating_sub(spent);
        let base = GumbelRoot::default();
        let moves = self.gumbel_moves(&base);
        let mut rng = std::mem::replace(&mut self.noise_rng, StdRng::seed_from_u64(0));
        let noise = self.params.root_noise.then_some(&mut rng);
        let g = GumbelRoot::new(&moves, simulations, self.params.gumbel_considered, noise);
        self.noise_rng = rng;
        self.root_noised = true;
        self.gumbel = Some(g);
    }

    /// The root's moves as the Gumbel rule reads them, this search's visits counted from
    /// `g`'s baseline.
    fn gumbel_moves(&self, g: &GumbelRoot) -> Vec<RootMove> {
        let root = self.tree.root();
        self.tree.nodes[root.children()]
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let n = c.visits + c.in_flight as u32;
                RootMove {
                    prior: c.prior,
                    visits: c.visits,
                    this_search: n.saturating_sub(g.base.get(k).copied().unwrap_or(0)),
                    q: match c.decided().filter(|_| self.params.solver) {
                        Some(d) => -(d as f32),
                        None => c.q(),
                    },
                    allowed: self.allowed_at_root(c),
                }
            })
            .collect()
    }

    /// `sigma(completed q)` of the root's moves.
    fn gumbel_sigma(&self, moves: &[RootMove]) -> Vec<f32> {
        let raw = self.root_value.unwrap_or_else(|| self.root_q());
        let p = &self.params;
        gumbel::sigma_completed_q(moves, raw, p.gumbel_c_visit, p.gumbel_c_scale)
    }

    /// The terms of PUCT at `idx` that every child shares.
    fn puct_at(&self, idx: usize) -> Puct {
        let p = &self.params;
        let node = &self.tree.nodes[idx];
        let parent_n = (node.visits + node.in_flight as u32).max(1) as f32;
        let u_scale = p.cpuct_at(parent_n) * parent_n.sqrt();
        // The node's own value is from its mover's view; the chooser here is the opponent.
        let parent_q = if node.visits > 0 {
            -node.value_sum / node.visits as f32
        } else {
            0.0
        };
        let visited_policy: f32 = self.tree.nodes[node.children()]
            .iter()
            .filter(|c| c.visits + c.in_flight as u32 > 0)
            .map(|c| c.prior)
            .sum();
        let reduction = match (idx, p.fpu_reduction_root) {
            (0, Some(r)) => r,
            _ => p.fpu_reduction,
        };
        let moves_left = (self.plies_left_known && p.moves_left_slope != 0.0 && node.visits > 0)
            .then_some(MovesLeftParent {
                q: parent_q,
                plies_left: node.plies_left,
            });
        Puct {
            u_scale,
            fpu: parent_q - reduction * visited_policy.sqrt(),
            moves_left,
        }
    }

    /// Child `c`'s Q for the player choosing it and its plies left, as the moves-left
    /// utility reads them: exact when decided (the plies to the deciding checkmate), the
    /// backed-up means when visited, none when unvisited (lc0 gives those no utility).
    fn moves_left_of(&self, c: &Node) -> Option<(f32, f32)> {
        match c.decided_in().filter(|_| self.params.solver) {
            Some((d, plies)) => Some((-f32::from(d), f32::from(plies))),
            None if c.visits == 0 => None,
            None => Some((c.q(), c.plies_left)),
        }
    }

    /// The moves-left utility of child `c` under `parent`.
    #[inline]
    fn moves_left_term(&self, c: &Node, parent: MovesLeftParent) -> f32 {
        match self.moves_left_of(c) {
            Some((q, plies)) => {
                moves_left_utility(&self.params, parent.q, q, plies - parent.plies_left)
            }
            None => 0.0,
        }
    }

    /// PUCT's Q of child `c` for the player choosing it: exact when decided, first-play
    /// urgency `fpu` when unvisited, virtual loss counted for the descents in flight.
    #[inline]
    fn selection_q(&self, c: &Node, fpu: f32) -> f32 {
        let n = c.visits + c.in_flight as u32;
        if let Some(d) = c.decided().filter(|_| self.params.solver) {
            // A decided child is worth exactly its value to the chooser.
            -(d as f32)
        } else if n == 0 {
            fpu
        } else {
            (c.value_sum - c.in_flight as f32 * self.params.virtual_loss) / n as f32
        }
    }

    /// PUCT with virtual loss, first-play urgency and the moves-left utility; returns the
    /// chosen child's index.
    fn select_child(&self, idx: usize) -> usize {
        let puct = self.puct_at(idx);
        let node = &self.tree.nodes[idx];
        let children = &self.tree.nodes[node.children()];
        let mut best = 0;
        let mut best_score = f32::NEG_INFINITY;
        for (k, c) in children.iter().enumerate() {
            if idx == 0 && !self.allowed_at_root(c) {
                continue;
            }
            let n = c.visits + c.in_flight as u32;
            let mut score = self.selection_q(c, puct.fpu) + puct.u_scale * c.prior / (1 + n) as f32;
            if let Some(parent) = puct.moves_left {
                score += self.moves_left_term(c, parent);
            }
            if score > best_score {
                best_score = score;
                best = k;
            }
        }
        node.first_child as usize + best
    }

    /// Gives `idx` its children, their priors at the policy temperature; false, leaving it
    /// a leaf, when the tree is at its bound.
    fn expand(&mut self, idx: usize, moves: &[Move], priors: &[f32]) -> bool {
        if !self.tree.make_room(moves.len(), self.params.max_nodes) {
            self.tree.nodes[idx].state = NodeState::Unexpanded;
            self.stats.not_expanded += 1;
            return false;
        }
        let priors = if self.params.policy_temperature == 1.0 {
            priors
        } else {
            self.tempered_priors.clear();
            self.tempered_priors.extend_from_slice(priors);
            apply_policy_temperature(&mut self.tempered_priors, self.params.policy_temperature);
            &self.tempered_priors
        };
        let first = self.tree.nodes.len();
        for (mv, &prior) in moves.iter().zip(priors) {
            self.tree
                .nodes
                .push(Node::new(Some(*mv), idx as u32, prior));
        }
        let n = &mut self.tree.nodes[idx];
        n.first_child = first as u32;
        n.num_children = moves.len() as u16;
        n.state = NodeState::Expanded;
        true
    }

    /// Marks the expanded nodes' mating moves from `pending_mates[from..]` as checkmates
    /// (so the solver proves their parents won before any visit) and drops those entries.
    fn mark_mates(&mut self, from: usize) {
        for k in from..self.pending_mates.len() {
            let (idx, m) = self.pending_mates[k];
            let node = &self.tree.nodes[idx as usize];
            if node.state != NodeState::Expanded || m >= node.num_children {
                continue;
            }
            let child = node.first_child as usize + m as usize;
            self.tree.nodes[child].state = NodeState::Terminal(-1);
            self.propagate_proof(child);
        }
        self.pending_mates.truncate(from);
    }

    /// After `idx` was decided: its parent is a proven win when one of its children is
    /// a loss for the side to move there (in the fewest plies over such children), and a
    /// proven loss when all of them are wins (in the most plies); a parent whose verdict
    /// or distance changed is passed on upwards. The root is marked too (for move
    /// choice) but still searched.
    fn propagate_proof(&mut self, idx: usize) {
        let mut cur = self.tree.nodes[idx].parent;
        while cur != NONE {
            let node = &self.tree.nodes[cur as usize];
            let children = &self.tree.nodes[node.children()];
            let mut fastest_win: Option<u16> = None;
            let mut all_lost = !children.is_empty();
            let mut slowest_loss = 0u16;
            for c in children {
                match c.decided_in() {
                    Some((-1, p)) => {
                        let p = p.saturating_add(1);
                        fastest_win = Some(fastest_win.map_or(p, |w| w.min(p)));
                    }
                    Some((_, p)) => slowest_loss = slowest_loss.max(p.saturating_add(1)),
                    None => all_lost = false,
                }
            }
            let verdict = match (fastest_win, all_lost) {
                (Some(p), _) => (1, p),
                (None, true) => (-1, slowest_loss),
                (None, false) => return,
            };
            if (node.proven, node.proven_plies) == verdict {
                return;
            }
            let parent = node.parent;
            let n = &mut self.tree.nodes[cur as usize];
            (n.proven, n.proven_plies) = verdict;
            cur = parent;
        }
    }

    /// Adds `value` (for the side to move at `idx`) up the path, alternating sign, and
    /// `plies` (the plies left from `idx`'s position) into each node's mean plies left,
    /// one more for every ply walked up; removes this descent's virtual loss.
    fn backup(&mut self, idx: usize, value: f32, plies: f32) {
        let mut cur = idx as u32;
        let mut v = -value;
        let mut m = plies;
        while cur != NONE {
            let n = &mut self.tree.nodes[cur as usize];
            n.visits += 1;
            n.value_sum += v;
            n.plies_left += (m - n.plies_left) / n.visits as f32;
            n.in_flight -= 1;
            v = -v;
            m += 1.0;
            cur = n.parent;
        }
    }

    fn revert(&mut self, idx: usize) {
        let mut cur = idx as u32;
        while cur != NONE {
            let n = &mut self.tree.nodes[cur as usize];
            n.in_flight -= 1;
            cur = n.parent;
        }
    }

    /// Expands the leaves of the last gather from `batch` (their indices shifted by
    /// `offset` when the batch was merged with others) and backs their values up.
    pub fn apply(&mut self, batch: &EvalBatch, offset: usize, timing: &mut PhaseTimes) {
        let t0 = Instant::now();
        let pending = std::mem::take(&mut self.pending);
        for &(idx, bi) in &pending {
            let i = bi + offset;
            let wdl = batch.wdl(i);
            if idx == 0 {
                self.root_value = Some(wdl[0] - wdl[2]);
            }
            self.expand(idx as usize, batch.moves(i), batch.priors(i));
            let plies = batch.moves_left(i);
            self.plies_left_known |= plies.is_some();
            self.backup(idx as usize, wdl[0] - wdl[2], plies.unwrap_or(0.0));
        }
        self.pending = pending;
        self.pending.clear();
        self.mark_mates(0);
        lap(&mut timing.backup, t0);
    }

    /// Runs the driver until the root has `visits` visits (or nothing is left to
    /// search).
    pub fn run_until_visits(
        &mut self,
        evaluator: &mut dyn Evaluator,
        visits: u32,
        timing: &mut PhaseTimes,
    ) -> anyhow::Result<()> {
        Driver::new(self, Limits::visits(visits)).run(self, evaluator, timing, &mut ())
    }

    /// Mixes Dirichlet noise into the root priors.
    pub fn add_root_noise<R: Rng>(&mut self, rng: &mut R) {
        self.root_noised = true;
        let range = self.tree.root().children();
        if range.len() < 2 {
            return;
        }
        let gamma = Gamma::new(self.params.dirichlet_alpha as f64, 1.0).expect("alpha > 0");
        let noise: Vec<f64> = range.clone().map(|_| gamma.sample(rng)).collect();
        let sum: f64 = noise.iter().sum::<f64>().max(1e-12);
        let eps = self.params.dirichlet_epsilon;
        for (c, n) in range.zip(noise) {
            let node = &mut self.tree.nodes[c];
            node.prior = (1.0 - eps) * node.prior + eps * (n / sum) as f32;
        }
    }

    /// Statistics of the root's children, in move-generation order.
    pub fn root_children(&self) -> Vec<ChildStats> {
        let root = self.tree.root();
        self.tree.nodes[root.children()]
            .iter()
            .filter(|c| self.allowed_at_root(c))
            .map(|c| {
                let decided = c.decided_in().filter(|_| self.params.solver);
                ChildStats {
                    mv: c.mv.expect("child move"),
                    visits: c.visits,
                    q: c.q(),
                    prior: c.prior,
                    decided: decided.map_or(0, |(d, _)| -d),
                    mate_plies: decided.map_or(0, |(_, p)| p + 1),
                }
            })
            .collect()
    }

    /// The allowed root moves with the terms of PUCT for the next descent, in
    /// move-generation order (under the Gumbel root rule, what PUCT would weigh).
    pub fn root_puct_terms(&self) -> Vec<PuctTerms> {
        let puct = self.puct_at(0);
        let root = self.tree.root();
        self.tree.nodes[root.children()]
            .iter()
            .filter(|c| self.allowed_at_root(c))
            .map(|c| {
                let n = c.visits + c.in_flight as u32;
                PuctTerms {
                    mv: c.mv.expect("child move"),
                    visits: c.visits,
                    in_flight: c.in_flight as u32,
                    prior: c.prior,
                    q: self.selection_q(c, puct.fpu),
                    u: puct.u_scale * c.prior / (1 + n) as f32,
                    m: puct
                        .moves_left
                        .map_or(0.0, |parent| self.moves_left_term(c, parent)),
                    plies_left: self
                        .moves_left_of(c)
                        .filter(|_| self.plies_left_known)
                        .map(|(_, plies)| plies),
                    decided: c.decided().filter(|_| self.params.solver).map_or(0, |d| -d),
                }
            })
            .collect()
    }

    /// The most visited root move (ties broken by Q, then prior).
    pub fn best_move(&self) -> Option<Move> {
        self.ranked_children().first().map(|c| c.mv)
    }

    /// Root children from best to worst: moves that win by force (a mate the tree
    /// proves, the fastest first), then by visits, with moves that lose by force last
    /// (the slowest first).
    pub fn ranked_children(&self) -> Vec<ChildStats> {
        let mut c = self.root_children();
        c.sort_by(|a, b| {
            b.decided
                .cmp(&a.decided)
                .then(match a.decided {
                    1 => a.mate_plies.cmp(&b.mate_plies),
                    -1 => b.mate_plies.cmp(&a.mate_plies),
                    _ => std::cmp::Ordering::Equal,
                })
                .then(b.visits.cmp(&a.visits))
                .then(b.q.partial_cmp(&a.q).unwrap_or(std::cmp::Ordering::Equal))
                .then(
                    b.prior
                        .partial_cmp(&a.prior)
                        .unwrap_or(std::cmp::Ordering::Equal),
                )
        });
        c
    }

    /// The move a finished search plays, by its root rule. PUCT: the most visited at
    /// temperature 0, else sampled with probability proportional to
    /// visits^(1/temperature).
    /// Gumbel: a move the tree proves a win (the fastest), else the surviving move with
    /// the best `g + logits + sigma(q)`, whatever the temperature.
    pub fn choose_move<R: Rng>(&self, temperature: f32, rng: &mut R) -> Option<Move> {
        match (&self.params.root_rule, &self.gumbel) {
            (RootRule::Gumbel, Some(g)) => {
                let ranked = self.ranked_children();
                if ranked.first().is_some_and(|c| c.decided == 1) {
                    return ranked.first().map(|c| c.mv);
                }
                let moves = self.gumbel_moves(g);
                let k = g.choose(&moves, &self.gumbel_sigma(&moves))?;
                self.tree.nodes[self.tree.root().first_child as usize + k].mv
            }
            (RootRule::Gumbel, None) => self.best_move(),
            (RootRule::Puct, _) => self.sample_by_visits(temperature, rng),
        }
    }

    /// What a finished search teaches the policy, by its root rule, over the root's
    /// allowed moves (PUCT: the visit distribution; Gumbel: `softmax(logits +
    /// sigma(completed q))`).
    pub fn policy_target(&self) -> Vec<(Move, f32)> {
        match (&self.params.root_rule, &self.gumbel) {
            (RootRule::Gumbel, Some(g)) if self.tree.root().visits > 0 => {
                let moves = self.gumbel_moves(g);
                let policy = gumbel::improved_policy(&moves, &self.gumbel_sigma(&moves));
                let root = self.tree.root();
                self.tree.nodes[root.children()]
                    .iter()
                    .zip(moves.iter().zip(policy))
                    .filter(|(_, (m, _))| m.allowed)
                    .map(|(c, (_, p))| (c.mv.expect("child move"), p))
                    .collect()
            }
            _ => self.visit_distribution(),
        }
    }

    fn sample_by_visits<R: Rng>(&self, temperature: f32, rng: &mut R) -> Option<Move> {
        if temperature <= 1e-3 {
            return self.best_move();
        }
        let children = self.root_children();
        let weights: Vec<f64> = children
            .iter()
            .map(|c| (c.visits as f64).powf(1.0 / temperature as f64))
            .collect();
        let total: f64 = weights.iter().sum();
        if !total.is_finite() || total <= 0.0 {
            return self.best_move();
        }
        let mut r = rng.random::<f64>() * total;
        for (c, w) in children.iter().zip(&weights) {
            if r < *w {
                return Some(c.mv);
            }
            r -= w;
        }
        children.last().map(|c| c.mv)
    }

    /// Visit distribution over the root's legal moves (sums to 1 when any were visited).
    pub fn visit_distribution(&self) -> Vec<(Move, f32)> {
        let children = self.root_children();
        let total: u32 = children.iter().map(|c| c.visits).sum();
        children
            .iter()
            .map(|c| {
                (
                    c.mv,
                    if total > 0 {
                        c.visits as f32 / total as f32
                    } else {
                        0.0
                    },
                )
            })
            .collect()
    }

    /// Q of the root for its side to move.
    pub fn root_q(&self) -> f32 {
        -self.tree.root().q()
    }

    /// Whether the evaluator gave this tree's leaves moves-left estimates (a network with
    /// the moves-left head): only then do the nodes' plies left estimate the game's length.
    pub fn plies_left_known(&self) -> bool {
        self.plies_left_known
    }

    /// The root's plies left (its M) when the evaluator gives moves-left estimates.
    pub fn root_plies_left(&self) -> Option<f32> {
        self.plies_left_known.then(|| self.tree.root().plies_left)
    }

    /// Exact value of the root if the rules decide it.
    pub fn root_terminal(&self) -> Option<f32> {
        match self.tree.root().state {
            NodeState::Terminal(v) => Some(f32::from(v)),
            _ => None,
        }
    }

    /// The line of most-visited moves from `first` (or the best root move).
    pub fn principal_variation(&self, first: Option<Move>) -> Vec<Move> {
        let mut pv = Vec::new();
        let root = self.tree.root();
        let mut idx = match first {
            Some(m) => root.children().find(|&c| self.tree.nodes[c].mv == Some(m)),
            None => root.children().max_by_key(|&c| self.tree.nodes[c].visits),
        };
        while let Some(i) = idx {
            let n = &self.tree.nodes[i];
            if n.visits == 0 {
                break;
            }
            pv.push(n.mv.expect("child move"));
            idx = n
                .children()
                .filter(|&c| self.tree.nodes[c].visits > 0)
                .max_by_key(|&c| self.tree.nodes[c].visits);
        }
        pv
    }

    /// Plies to a forced mate along the principal line, if the tree proves one: positive
    /// when the side to move at the root mates, negative when it is mated.
    pub fn proven_mate(&self, first: Option<Move>) -> Option<i32> {
        self.proven(0, first, 0)
            .and_then(|(v, plies)| if v != 0 { Some(v * plies as i32) } else { None })
    }

    /// (sign for the side to move at `idx`, plies) of a proven win/loss, by exhaustive
    /// check of the expanded tree to a small depth.
    fn proven(&self, idx: usize, first: Option<Move>, depth: u32) -> Option<(i32, u32)> {
        let n = &self.tree.nodes[idx];
        match n.state {
            NodeState::Terminal(v) if v < 0 => return Some((-1, 0)),
            NodeState::Terminal(_) => return None,
            NodeState::Expanded if depth < 9 => {}
            _ => return None,
        }
        let mut best_win: Option<u32> = None;
        let mut all_lose = true;
        let mut slowest_loss = 0;
        for c in n.children() {
            if let Some(m) = first {
                if self.tree.nodes[c].mv != Some(m) && depth == 0 {
                    continue;
                }
            }
            match self.proven(c, None, depth + 1) {
                Some((-1, p)) => best_win = Some(best_win.map_or(p + 1, |b: u32| b.min(p + 1))),
                Some((1, p)) => slowest_loss = slowest_loss.max(p + 1),
                _ => all_lose = false,
            }
        }
        if let Some(p) = best_win {
            return Some((1, p));
        }
        if all_lose && first.is_none() {
            return Some((-1, slowest_loss));
        }
        None
    }

    /// Mean depth of the descents so far.
    pub fn mean_depth(&self) -> f32 {
        let d = self.stats.leaves + self.stats.terminals;
        if d == 0 {
            0.0
        } else {
            self.stats.depth_sum as f32 / d as f32
        }
    }
}

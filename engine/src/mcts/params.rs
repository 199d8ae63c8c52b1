//! Every search tunable with its default and one line on what it does. A UCI option
//! or a trainer flag maps onto one field here.

use super::search::RootRule;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SearchParams {
    /// Exploration constant at the start; PUCT's weight on the prior.
    pub cpuct: f32,
    /// Visits at which cpuct has grown by `cpuct_factor * ln 2` (lc0's CPuctBase).
    pub cpuct_base: f32,
    /// How fast cpuct grows with the parent's visits (lc0's CPuctFactor).
    pub cpuct_factor: f32,
    /// First-play urgency: an unvisited child is valued at the parent's Q minus this
    /// times the square root of the prior mass already visited.
    pub fpu_reduction: f32,
    /// Value counted for each visit in flight, as a loss for the player choosing it.
    pub virtual_loss: f32,
    /// Most leaves gathered into one evaluator call.
    pub max_batch: usize,
    /// Collisions (descents ending on a leaf already in the batch) tolerated per gather
    /// before the batch is sent as it is.
    pub max_collisions: usize,
    /// Dirichlet noise mixed into the root priors (self-play only).
    pub root_noise: bool,
    pub dirichlet_alpha: f32,
    pub dirichlet_epsilon: f32,
    /// Positions in the evaluation cache that the evaluator's owner puts in front of it
    /// ([`super::CachedEvaluator`]; 0: none). The search itself keeps no cache.
    pub cache_entries: usize,
    /// Inside the tree, a position that repeats one on its path is a draw (lc0's rule
    /// for play); against the game's history it always takes two earlier occurrences.
    #[serde(default = "yes")]
    pub tree_twofold_draw: bool,
    /// First-play urgency reduction at the root (`None`: `fpu_reduction`). Self-play
    /// uses 0: every root move starts at the root's value, so noise can lift any of them.
    #[serde(default)]
    pub fpu_reduction_root: Option<f32>,
    /// MCTS-solver: when a node is expanded its mating moves are marked as checkmates
    /// (whatever their prior), a checkmate proves its parent won, a node whose moves
    /// all lead to proven wins for the opponent is proven lost; proven nodes are valued
    /// exactly, and the fastest proven win at the root is played.
    #[serde(default = "yes")]
    pub solver: bool,
    /// Nodes the tree may hold (its memory bound; see [`super::node::nodes_for_mb`]). At
    /// the bound the search expands nothing more and goes on refining the lines it has:
    /// a leaf it reaches is evaluated (or found in the cache) and backed up again.
    #[serde(default = "default_max_nodes")]
    pub max_nodes: usize,
    /// How the root's children are chosen, the move played and the policy target.
    #[serde(default)]
    pub root_rule: RootRule,
    /// Gumbel root rule: the most root moves sequential halving starts from (m).
    #[serde(default = "gumbel_considered")]
    pub gumbel_considered: u32,
    /// Gumbel root rule: `c_visit` of `sigma(q) = (c_visit + max N) * c_scale * q`.
    #[serde(default = "gumbel_c_visit")]
    pub gumbel_c_visit: f32,
    /// Gumbel root rule: `c_scale` of the same.
    #[serde(default = "gumbel_c_scale")]
    pub gumbel_c_scale: f32,
    /// Temperature T of the priors a node's children get at expansion: softmax(logits / T)
    /// over its legal moves (lc0's PolicyTemperature). T > 1 flattens the network's
    /// policy, T < 1 sharpens it, 1 takes it as it is. Applied after the evaluation
    /// cache, which keeps the network's own priors.
    #[serde(default = "policy_temperature")]
    pub policy_temperature: f32,
    /// Moves-left utility (lc0's MovesLeftSlope): score per ply of difference between a
    /// child's plies left and its parent's, so that a winning side prefers the shorter
    /// line and a losing side the longer one ([`super::moves_left_utility`]). It applies
    /// only where the evaluator gives moves-left estimates (a network with the head); 0
    /// turns it off.
    #[serde(default = "moves_left_slope")]
    pub moves_left_slope: f32,
    /// Moves-left utility: the largest `|slope * plies difference|` (lc0's
    /// MovesLeftMaxEffect).
    #[serde(default = "moves_left_max_effect")]
    pub moves_left_max_effect: f32,
    /// Moves-left utility: it applies at a node whose |Q| is above this (lc0's
    /// MovesLeftThreshold); a child's |Q| is rescaled from it to 1.
    #[serde(default = "moves_left_threshold")]
    pub moves_left_threshold: f32,
    /// Moves-left utility: the effect's weight at the threshold (lc0's
    /// MovesLeftConstantFactor).
    #[serde(default)]
    pub moves_left_constant_factor: f32,
    /// Moves-left utility: its weight's term linear in the rescaled |Q| (lc0's
    /// MovesLeftScaledFactor).
    #[serde(default = "moves_left_scaled_factor")]
    pub moves_left_scaled_factor: f32,
    /// Moves-left utility: its weight's term in the rescaled Q squared (lc0's
    /// MovesLeftQuadraticFactor).
    #[serde(default = "moves_left_quadratic_factor")]
    pub moves_left_quadratic_factor: f32,
}

/// The paper's values for chess and Go (mctx's default `c_scale` 0.1 was for Atari).
fn gumbel_considered() -> u32 {
    16
}

fn gumbel_c_visit() -> f32 {
    50.0
}

fn gumbel_c_scale() -> f32 {
    1.0
}

fn policy_temperature() -> f32 {
    1.0
}

/// lc0's defaults of the moves-left utility: at |Q| = 1 the weight is 1.6521 - 0.6521 = 1,
/// and 0.0345 caps the effect at about 13 plies of difference.
fn moves_left_slope() -> f32 {
    0.0027
}

fn moves_left_max_effect() -> f32 {
    0.0345
}

fn moves_left_threshold() -> f32 {
    0.8
}

fn moves_left_scaled_factor() -> f32 {
    1.6521
}

fn moves_left_quadratic_factor() -> f32 {
    -0.6521
}

/// The evaluation cache's size unless its owner sets another (UCI `NNCacheSize`).
pub const DEFAULT_CACHE_ENTRIES: usize = 200_000;

fn yes() -> bool {
    true
}

/// Memory of a tree unless its owner bounds it otherwise: the UCI engine's `RamLimitMb`
/// default.
pub const DEFAULT_TREE_MB: usize = 1024;

fn default_max_nodes() -> usize {
    super::node::nodes_for_mb(DEFAULT_TREE_MB)
}

/// Nodes of a tree allowed per visit a move, for trees searched to a known number of
/// visits (self-play, matches): an expansion adds about 35 nodes in the middlegame, and a
/// reused subtree keeps up to the last move's visits, so the bound is rarely reached.
pub const TREE_NODES_PER_VISIT: usize = 128;

/// The log line stating the memory bound of `trees` trees searched `visits` visits a move.
pub fn describe_tree_bound(visits: u64, trees: usize) -> String {
    let nodes = tree_nodes_for_visits(visits);
    let mb = |n: usize| n as f64 * super::node::NODE_BYTES as f64 / (1u64 << 20) as f64;
    format!(
        "search trees: at most {nodes} nodes ({:.2} MB) each at {visits} visits a move; {trees} in flight: at most {:.1} MB",
        mb(nodes),
        mb(nodes * trees)
    )
}

/// The node bound of a tree searched `visits` visits a move.
pub fn tree_nodes_for_visits(visits: u64) -> usize {
    (visits as usize)
        .saturating_mul(TREE_NODES_PER_VISIT)
        .clamp(super::node::MIN_TREE_NODES, default_max_nodes())
}

impl Default for SearchParams {
    fn default() -> Self {
        SearchParams {
            cpuct: 1.745,
            cpuct_base: 38739.0,
            cpuct_factor: 3.894,
            fpu_reduction: 0.33,
            virtual_loss: 1.0,
            max_batch: 256,
            max_collisions: 64,
            root_noise: false,
            dirichlet_alpha: 0.3,
            dirichlet_epsilon: 0.25,
            cache_entries: DEFAULT_CACHE_ENTRIES,
            tree_twofold_draw: true,
            fpu_reduction_root: None,
            solver: true,
            max_nodes: default_max_nodes(),
            root_rule: RootRule::Puct,
            gumbel_considered: gumbel_considered(),
            gumbel_c_visit: gumbel_c_visit(),
            gumbel_c_scale: gumbel_c_scale(),
            policy_temperature: policy_temperature(),
            moves_left_slope: moves_left_slope(),
            moves_left_max_effect: moves_left_max_effect(),
            moves_left_threshold: moves_left_threshold(),
            moves_left_constant_factor: 0.0,
            moves_left_scaled_factor: moves_left_scaled_factor(),
            moves_left_quadratic_factor: moves_left_quadratic_factor(),
        }
    }
}

impl SearchParams {
    /// Defaults for self-play: root noise on; the solver and the moves-left utility off.
    pub fn self_play() -> Self {
        SearchParams {
            root_noise: true,
            tree_twofold_draw: false,
            fpu_reduction_root: Some(0.0),
            // Self-play keeps the plain search: the presets were measured without it.
            solver: false,
            // Off unless a run asks for it (`--moves-left-slope`), for the same reason.
            moves_left_slope: 0.0,
            ..Self::default()
        }
    }

    /// Defaults for matches at a node limit: each game adds 16 leaves to a round's batch,
    /// so that many games in flight fill one network call.
    pub fn for_matches() -> Self {
        SearchParams {
            max_batch: 16,
            ..Self::default()
        }
    }

    /// cpuct after `parent_visits` visits.
    #[inline]
    pub fn cpuct_at(&self, parent_visits: f32) -> f32 {
        self.cpuct + self.cpuct_factor * ((parent_visits + self.cpuct_base) / self.cpuct_base).ln()
    }
}

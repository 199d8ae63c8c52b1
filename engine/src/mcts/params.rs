//! Every search tunable with its default and one line on what it does. A UCI option
//! or a trainer flag maps onto one field here.

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
    /// Evaluations kept in the cache (0 disables it).
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
}

fn yes() -> bool {
    true
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
            cache_entries: 200_000,
            tree_twofold_draw: true,
            fpu_reduction_root: None,
            solver: true,
        }
    }
}

impl SearchParams {
    /// Defaults for self-play: root noise on.
    pub fn self_play() -> Self {
        SearchParams {
            root_noise: true,
            tree_twofold_draw: false,
            fpu_reduction_root: Some(0.0),
            // Self-play keeps the plain search: the presets were measured without it.
            solver: false,
            ..Self::default()
        }
    }

    /// cpuct after `parent_visits` visits.
    #[inline]
    pub fn cpuct_at(&self, parent_visits: f32) -> f32 {
        self.cpuct + self.cpuct_factor * ((parent_visits + self.cpuct_base) / self.cpuct_base).ln()
    }
}

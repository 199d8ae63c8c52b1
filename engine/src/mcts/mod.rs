//! Batched Monte-Carlo tree search: PUCT selection with virtual loss so one batch holds
//! distinct leaves, one evaluator call per batch, exact terminal values, tree reuse and
//! an evaluation cache keyed by Zobrist hash in front of the evaluator.
//!
//! `params` holds every tunable, `node` the arena, `search` the tree's descents and
//! backups, `gumbel` the Gumbel root rule (sequential halving and its policy target),
//! `driver` the one loop that runs a search to its limits, `evaluator` the
//! trait the search calls without knowing whether a network, a batching server or a
//! test double is behind it, `cache` the evaluation cache put in front of an evaluator.
//!
//! Sign convention: each node stores the visits `N` and value sum `W` of the edge that
//! leads into it, from the point of view of the player who chose that edge. A leaf value
//! `v` (side to move at the leaf) is added as `-v` to the leaf's own node, `+v` to its
//! parent, alternating up to the root. A node's plies left (M) is from its own position:
//! a leaf's estimate `m` is added as `m` to the leaf's node, `m + 1` to its parent, and so
//! on up to the root.

pub mod cache;
pub mod driver;
pub mod evaluator;
pub mod gumbel;
pub mod node;
pub mod params;
pub mod search;

pub use cache::{CachedEvaluator, EvalCache};
pub use driver::{Driver, Limits, Watch};
pub use evaluator::{EvalBatch, Evaluator, NetEvaluator, UniformEvaluator};
pub use node::{Node, NodeState, Tree};
pub use params::SearchParams;
pub use search::{moves_left_utility, ChildStats, PuctTerms, RootRule, Search, SearchStats};

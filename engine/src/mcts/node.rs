//! The tree: an arena of small nodes addressed by index. A node holds the move that leads
//! to it and the statistics of that edge; positions are not stored, the search replays
//! moves from the root. The children of a node are contiguous in the arena.

use shakmaty::{Chess, Move};

pub const NONE: u32 = u32::MAX;

/// Bytes of one node in the arena.
pub const NODE_BYTES: usize = std::mem::size_of::<Node>();

/// Most nodes an arena holds: every index stays below [`NONE`].
pub const MAX_TREE_NODES: usize = NONE as usize - 1;

/// Fewest nodes a tree bound allows: the root and the most moves a position can have.
pub const MIN_TREE_NODES: usize = 256;

/// The node bound of a tree that may use `mb` megabytes (MiB) of memory.
pub fn nodes_for_mb(mb: usize) -> usize {
    (mb.saturating_mul(1 << 20) / NODE_BYTES).clamp(MIN_TREE_NODES, MAX_TREE_NODES)
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NodeState {
    /// Not yet evaluated.
    Unexpanded,
    /// In the current batch, waiting for the evaluator.
    Pending,
    /// Children allocated.
    Expanded,
    /// Game over by the rules; the exact value for the side to move at this node: 1 won,
    /// 0 drawn, -1 lost (a byte, so that the node stays small).
    Terminal(i8),
}

#[derive(Clone, Debug)]
pub struct Node {
    /// The move into this node (`None` at the root).
    pub mv: Option<Move>,
    pub parent: u32,
    pub first_child: u32,
    pub num_children: u16,
    /// Descents through this node not yet backed up (virtual loss).
    pub in_flight: u16,
    pub visits: u32,
    pub prior: f32,
    /// Sum of backed-up values, from the view of the player who played `mv`.
    pub value_sum: f32,
    /// Mean plies left to the game's end over the visits backed up through this node,
    /// counted from this node's position: each visit adds its leaf's estimate (the
    /// moves-left head's, 0 at a position the rules end, the plies to the deciding
    /// checkmate at a proven node) plus the plies from here down to that leaf (lc0's M).
    /// Without the head a leaf's estimate is 0, so M is only the mean depth of the
    /// visits below, and the search does not read it.
    pub plies_left: f32,
    pub state: NodeState,
    /// Proven by the tree below (MCTS-solver): +1 the side to move here wins by force,
    /// -1 it loses by force, 0 not proven. Only checkmates prove anything, so a proof
    /// holds whatever the path to the node.
    pub proven: i8,
    /// Plies to the checkmate that decides this node, along the fastest win or the
    /// slowest loss (0 at a checkmated node; meaningful when decided).
    pub proven_plies: u16,
}

impl Node {
    pub fn new(mv: Option<Move>, parent: u32, prior: f32) -> Node {
        Node {
            mv,
            parent,
            first_child: NONE,
            num_children: 0,
            in_flight: 0,
            visits: 0,
            prior,
            value_sum: 0.0,
            plies_left: 0.0,
            state: NodeState::Unexpanded,
            proven: 0,
            proven_plies: 0,
        }
    }

    /// The exact value for the side to move here, when the rules or the tree decide it
    /// as a win or a loss.
    pub fn decided(&self) -> Option<i8> {
        self.decided_in().map(|(verdict, _)| verdict)
    }

    /// [`Self::decided`] with the plies to the deciding checkmate.
    pub fn decided_in(&self) -> Option<(i8, u16)> {
        match self.state {
            NodeState::Terminal(v) if v > 0 => Some((1, 0)),
            NodeState::Terminal(v) if v < 0 => Some((-1, 0)),
            _ if self.proven != 0 => Some((self.proven, self.proven_plies)),
            _ => None,
        }
    }

    /// Q of this edge for the player who chose it (0 if unvisited).
    pub fn q(&self) -> f32 {
        if self.visits == 0 {
            0.0
        } else {
            self.value_sum / self.visits as f32
        }
    }

    pub fn children(&self) -> std::ops::Range<usize> {
        if self.first_child == NONE {
            0..0
        } else {
            self.first_child as usize..self.first_child as usize + self.num_children as usize
        }
    }
}

/// The arena with the root position it grows from. The root is node 0.
#[derive(Clone, Debug)]
pub struct Tree {
    pub nodes: Vec<Node>,
    pub root_position: Chess,
    pub root_hash: u64,
}

impl Tree {
    pub fn new(root_position: Chess, root_hash: u64) -> Tree {
        Tree {
            nodes: vec![Node::new(None, NONE, 1.0)],
            root_position,
            root_hash,
        }
    }

    pub fn root(&self) -> &Node {
        &self.nodes[0]
    }

    /// Makes room for `n` more nodes if the arena stays within `limit` nodes, growing its
    /// allocation (doubling, but never past the limit); false, changing nothing, if not.
    pub fn make_room(&mut self, n: usize, limit: usize) -> bool {
        let limit = limit.clamp(MIN_TREE_NODES, MAX_TREE_NODES);
        let len = self.nodes.len();
        if len + n > limit {
            return false;
        }
        if len + n > self.nodes.capacity() {
            let capacity = (self.nodes.capacity() * 2).max(len + n).max(64).min(limit);
            self.nodes.reserve_exact(capacity - len);
        }
        true
    }

    /// Bytes the arena has allocated.
    pub fn allocated_bytes(&self) -> usize {
        self.nodes.capacity() * NODE_BYTES
    }

    /// Makes the child reached by `mv` the new root, keeping its subtree (compacted, the
    /// new root at index 0). Returns false, leaving a fresh root, if there is no such child.
    ///
    /// Draws found below the old root may rest on a repetition of a position that is now
    /// behind the root (a path-dependent verdict), so drawn nodes go back to unexpanded
    /// and are judged again against the new path when next visited; their statistics stay.
    pub fn reuse(&mut self, mv: Move, new_root: Chess, new_hash: u64) -> bool {
        let child = self.nodes[0]
            .children()
            .find(|&c| self.nodes[c].mv == Some(mv));
        let Some(child) = child else {
            *self = Tree::new(new_root, new_hash);
            return false;
        };
        let mut nodes = Vec::with_capacity(self.nodes.len() / 2 + 1);
        let mut root = self.nodes[child].clone();
        root.parent = NONE;
        root.mv = None;
        root.in_flight = 0;
        if matches!(root.state, NodeState::Pending | NodeState::Terminal(0)) {
            root.state = NodeState::Unexpanded;
        }
        nodes.push(root);
        let mut queue = std::collections::VecDeque::from([(child, 0usize)]);
        while let Some((old, new)) = queue.pop_front() {
            let range = self.nodes[old].children();
            if range.is_empty() {
                nodes[new].first_child = NONE;
                continue;
            }
            let first = nodes.len();
            nodes[new].first_child = first as u32;
            for (k, c) in range.enumerate() {
                let mut n = self.nodes[c].clone();
                n.parent = new as u32;
                n.in_flight = 0;
                if matches!(n.state, NodeState::Pending | NodeState::Terminal(0)) {
                    n.state = NodeState::Unexpanded;
                }
                nodes.push(n);
                queue.push_back((c, first + k));
            }
        }
        *self = Tree {
            nodes,
            root_position: new_root,
            root_hash: new_hash,
        };
        true
    }
}

//! Time management for a clock game: how long to think about one move, and when a
//! search may stop before its budget because the move can no longer change.
//!
//! Pure functions of the clock and the search statistics, no I/O and no clock reads, so
//! every rule is unit-tested. Units are [`Duration`]s; node counts are playouts.
//!
//! Rules (all times after the reserve is taken off the clock):
//! - `movetime T`: think exactly `T - overhead` (at least [`MIN_THINK`]).
//! - the reserve of a clock game is `MoveOverhead` plus, with an increment `I`,
//!   [`RESERVE_INCREMENTS`] increments (at most [`MAX_INCREMENT_RESERVE`]). Every move
//!   costs some time the search does not control (pipes, scheduling, the first network
//!   call); when that exceeds the increment on a busy machine the clock drifts down, and
//!   this reserve is what it drifts into. Below it the engine plays at [`MIN_THINK`], so
//!   the increment refills the clock.
//! - clock `R` with increment `I` and `movestogo M` (default horizon [`DEFAULT_HORIZON`]
//!   moves, capped there too): target `(R - reserve) / M + 3/4 * I`;
//! - the hard cap is a fraction of what is left ([`MAX_SHARE`], or [`LAST_MOVE_SHARE`]
//!   when this is the last move before the time control), and the target never exceeds
//!   it: a move never spends the clock that later moves need.
//! - a clock at or below the overhead gives [`MIN_THINK`]: the engine answers from the
//!   root evaluation rather than flag.
//! - at the target the search may go on while the move is unsettled ([`should_extend`]),
//!   up to [`extended_limit`]: twice the target, never past the hard cap. `movetime` has
//!   target = hard, so it is never extended.

use std::time::Duration;

/// Time kept back from every move for what the search does not control (the UCI
/// engine's `MoveOverhead` default, and Ember players in matches).
pub const DEFAULT_MOVE_OVERHEAD: Duration = Duration::from_millis(50);
/// Moves the remaining time is spread over when the GUI gives no `movestogo`.
pub const DEFAULT_HORIZON: u32 = 30;
/// Largest share of the remaining time (after the overhead) one move may use.
pub const MAX_SHARE: f64 = 0.25;
/// Share allowed when `movestogo` is 1 (the clock is refilled after this move).
pub const LAST_MOVE_SHARE: f64 = 0.75;
/// Time given when nothing is left: one small batch of evaluations.
pub const MIN_THINK: Duration = Duration::from_millis(1);
/// Share of the increment counted as thinking time for this move.
const INCREMENT_SHARE: f64 = 0.75;
/// Increments kept in reserve on top of the overhead (see the module doc).
pub const RESERVE_INCREMENTS: u32 = 20;
/// Cap of the increment reserve, so long time controls do not hoard time.
pub const MAX_INCREMENT_RESERVE: Duration = Duration::from_secs(1);

/// What the GUI said about the clock, for the side to move.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Clock {
    /// Time left on our clock.
    pub remaining: Duration,
    /// Our increment per move.
    pub increment: Duration,
    /// Moves until the next time control, if the GUI sent one.
    pub moves_to_go: Option<u32>,
}

/// How long to think about one move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Planned thinking time; the search stops here (or earlier, see [`can_stop_early`]).
    pub target: Duration,
    /// Never think longer than this, whatever happens.
    pub hard: Duration,
}

/// Budget for `go movetime`: the given time minus the overhead, exactly.
pub fn for_movetime(movetime: Duration, overhead: Duration) -> Budget {
    let t = movetime.saturating_sub(overhead).max(MIN_THINK);
    Budget { target: t, hard: t }
}

/// Budget for a clock game (`go wtime/btime [winc/binc] [movestogo]`).
pub fn for_clock(clock: Clock, overhead: Duration) -> Budget {
    let reserve = overhead + (clock.increment * RESERVE_INCREMENTS).min(MAX_INCREMENT_RESERVE);
    let usable = clock.remaining.saturating_sub(reserve);
    let horizon = clock
        .moves_to_go
        .unwrap_or(DEFAULT_HORIZON)
        .clamp(1, DEFAULT_HORIZON);
    let share = if horizon == 1 {
        LAST_MOVE_SHARE
    } else {
        MAX_SHARE
    };
    let hard = usable.mul_f64(share).max(MIN_THINK);
    let planned = usable / horizon + clock.increment.mul_f64(INCREMENT_SHARE);
    Budget {
        target: planned.clamp(MIN_THINK, hard),
        hard,
    }
}

/// Playouts the search is still expected to make within `budget`, at `nps`.
pub fn remaining_playouts(elapsed: Duration, budget: Duration, nps: f64) -> f64 {
    budget.saturating_sub(elapsed).as_secs_f64() * nps.max(0.0)
}

/// Smart pruning: true when the most visited root move cannot be overtaken by the
/// second in the playouts left (even if every one of them went to the second), so the
/// rest of the budget would not change the move played.
pub fn can_stop_early(
    best_visits: u32,
    second_visits: u32,
    elapsed: Duration,
    budget: Duration,
    nps: f64,
) -> bool {
    let lead = best_visits.saturating_sub(second_visits) as f64;
    lead > remaining_playouts(elapsed, budget, nps)
}

/// Share of the best move's visits the second must have for the decision to count as
/// unsettled (see [`should_extend`]).
pub const UNSETTLED_VISIT_SHARE: f64 = 0.7;

/// Time extension: at the target time, keep thinking (up to the budget's hard cap, and
/// at most one more target) when the most visited move is not the best valued one and
/// the second has nearly as many visits, i.e. the move is about to change. Qs are for
/// the side to move.
pub fn should_extend(best_visits: u32, best_q: f32, second_visits: u32, second_q: f32) -> bool {
    best_visits > 0
        && second_q > best_q
        && second_visits as f64 >= UNSETTLED_VISIT_SHARE * best_visits as f64
}

/// The latest moment a search with `budget` may stop when [`should_extend`] keeps asking
/// for more: twice the target, never past the hard cap.
pub fn extended_limit(budget: Budget) -> Duration {
    (budget.target * 2).min(budget.hard).max(budget.target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn clock(remaining: u64, increment: u64, moves_to_go: Option<u32>) -> Clock {
        Clock {
            remaining: ms(remaining),
            increment: ms(increment),
            moves_to_go,
        }
    }

    #[test]
    fn movetime_is_exact_minus_overhead() {
        assert_eq!(
            for_movetime(ms(500), ms(50)),
            Budget {
                target: ms(450),
                hard: ms(450)
            }
        );
    }

    #[test]
    fn movetime_below_overhead_still_gives_a_minimal_search() {
        assert_eq!(for_movetime(ms(10), ms(50)).target, MIN_THINK);
    }

    #[test]
    fn clock_without_movestogo_spreads_over_the_default_horizon() {
        let b = for_clock(clock(60_050, 0, None), ms(50));
        assert_eq!(b.target, ms(60_000) / DEFAULT_HORIZON);
    }

    #[test]
    fn increment_adds_to_the_target() {
        let without = for_clock(clock(60_000, 0, None), ms(50)).target;
        let with = for_clock(clock(60_000, 1_000, None), ms(50)).target;
        assert!(with > without, "{with:?} <= {without:?}");
        assert!(with - without <= ms(1_000));
    }

    #[test]
    fn movestogo_divides_the_remaining_time() {
        let b = for_clock(clock(10_050, 0, Some(10)), ms(50));
        assert_eq!(b.target, ms(1_000));
    }

    #[test]
    fn last_move_before_time_control_may_use_most_but_not_all_of_the_clock() {
        let b = for_clock(clock(10_050, 0, Some(1)), ms(50));
        assert!(b.target > ms(5_000) && b.target < ms(10_000), "{b:?}");
    }

    #[test]
    fn target_never_exceeds_the_hard_cap() {
        // A huge increment with little time left must not spend the whole clock.
        let b = for_clock(clock(1_000, 10_000, None), ms(50));
        assert!(b.target <= b.hard);
        assert!(b.hard <= ms(950).mul_f64(MAX_SHARE), "{b:?}");
    }

    #[test]
    fn overhead_is_kept_in_reserve() {
        let b = for_clock(clock(100, 0, Some(1)), ms(50));
        assert!(b.hard <= ms(50), "{b:?}");
    }

    #[test]
    fn empty_or_negative_clock_gives_a_minimal_search() {
        let b = for_clock(clock(0, 0, None), ms(50));
        assert_eq!(
            b,
            Budget {
                target: MIN_THINK,
                hard: MIN_THINK
            }
        );
    }

    #[test]
    fn increment_games_keep_increments_in_reserve() {
        // 1 s + 10 ms: 50 ms overhead and 20 increments (200 ms) are never planned.
        let at_reserve = for_clock(clock(250, 10, None), ms(50));
        assert_eq!(at_reserve.target, MIN_THINK);
        let above = for_clock(clock(1_000, 10, None), ms(50));
        assert_eq!(
            above.target,
            ms(750) / DEFAULT_HORIZON + ms(10).mul_f64(0.75)
        );
    }

    #[test]
    fn increment_reserve_is_capped_for_long_time_controls() {
        let b = for_clock(clock(60_000, 5_000, None), ms(50));
        assert_eq!(
            b.target,
            (ms(60_000) - ms(50) - MAX_INCREMENT_RESERVE) / DEFAULT_HORIZON + ms(3_750)
        );
    }

    #[test]
    fn long_game_with_slow_moves_settles_above_the_reserve() {
        // Each move costs 5 ms beyond its target (pipes, the first batch): the clock
        // drifts down to the reserve and stays near it instead of running out.
        let (overhead, inc, latency) = (ms(50), ms(10), ms(5));
        let mut remaining = ms(1_000);
        let mut lowest = remaining;
        for _ in 0..500 {
            let b = for_clock(
                Clock {
                    remaining,
                    increment: inc,
                    moves_to_go: None,
                },
                overhead,
            );
            remaining = remaining - (b.target + latency) + inc;
            lowest = lowest.min(remaining);
        }
        assert!(
            lowest >= overhead + inc * RESERVE_INCREMENTS,
            "lowest clock {lowest:?}"
        );
    }

    #[test]
    fn one_second_plus_ten_ms_game_never_runs_out() {
        // Simulate 200 moves of a 1 s + 0.01 s game, each using its full target plus a
        // latency (pipes, the first evaluation) below the increment: the clock must stay
        // positive however long the game lasts.
        let overhead = ms(50);
        let lost_per_move = ms(8);
        let mut remaining = ms(1_000);
        for _ in 0..200 {
            let b = for_clock(
                Clock {
                    remaining,
                    increment: ms(10),
                    moves_to_go: None,
                },
                overhead,
            );
            let used = b.target + lost_per_move;
            assert!(used < remaining, "used {used:?} of {remaining:?}");
            remaining = remaining.saturating_sub(used) + ms(10);
            assert!(remaining > Duration::ZERO);
        }
    }

    #[test]
    fn remaining_playouts_scale_with_time_left() {
        assert_eq!(remaining_playouts(ms(250), ms(1_250), 1_000.0), 1_000.0);
        assert_eq!(remaining_playouts(ms(2_000), ms(1_000), 1_000.0), 0.0);
    }

    #[test]
    fn stops_early_when_the_lead_exceeds_the_remaining_playouts() {
        assert!(can_stop_early(900, 100, ms(500), ms(1_000), 1_000.0));
    }

    #[test]
    fn keeps_searching_while_the_second_move_can_catch_up() {
        assert!(!can_stop_early(600, 200, ms(500), ms(1_000), 1_000.0));
    }

    #[test]
    fn extends_when_the_runner_up_is_valued_higher_and_close_in_visits() {
        assert!(should_extend(100, 0.10, 80, 0.15));
    }

    #[test]
    fn does_not_extend_when_the_most_visited_move_is_also_the_best_valued() {
        assert!(!should_extend(100, 0.15, 95, 0.10));
    }

    #[test]
    fn does_not_extend_when_the_runner_up_is_far_behind_in_visits() {
        assert!(!should_extend(100, 0.10, 30, 0.50));
    }

    #[test]
    fn extension_stops_at_twice_the_target_or_the_hard_cap() {
        assert_eq!(
            extended_limit(Budget {
                target: ms(100),
                hard: ms(1_000)
            }),
            ms(200)
        );
        assert_eq!(
            extended_limit(Budget {
                target: ms(100),
                hard: ms(150)
            }),
            ms(150)
        );
        assert_eq!(extended_limit(for_movetime(ms(500), ms(50))), ms(450));
    }

    #[test]
    fn never_stops_early_on_a_tie() {
        assert!(!can_stop_early(50, 50, ms(999), ms(1_000), 1_000.0));
    }
}

//! The engine's UCI options, each declared once in [`TABLE`]: its name, type, range,
//! what it changes, and the field of [`Options`] it reads and sets. `uci` prints the
//! table, `setoption` parses and checks a value against it, and [`Options::search_params`]
//! maps the fields onto the search. A bad value is an error and leaves the option as it was.
//!
//! Units and mappings (one option, one engine field):
//! - `Threads` -> `NetEvaluator::set_threads` (CPU threads of the network's GEMMs; the
//!   tree search itself is one thread).
//! - `MinibatchSize` -> `SearchParams::max_batch` (leaves per network call; small on the
//!   CPU so that `stop` is answered within one batch).
//! - `RamLimitMb` -> `SearchParams::max_nodes`: the search tree's memory in MB (lc0's
//!   option). At the bound the search expands no more nodes and goes on refining the
//!   lines it has, so `go infinite` runs for as long as it is left; `hashfull` reports the
//!   fuller of the tree and the evaluation cache.
//! - `NNCacheSize` -> `SearchParams::cache_entries`, in **entries** (positions), not MB;
//!   an entry is about 200 bytes, so the default 200000 is about 40 MB.
//! - `CPuct` -> `SearchParams::cpuct`, `FpuReduction` -> `SearchParams::fpu_reduction`:
//!   decimal strings (`1.745`), as lc0 writes them.
//! - `Solver` -> `SearchParams::solver` (MCTS-solver: mates found in the tree prove
//!   their lines).
//! - `MoveOverhead` (ms): kept in reserve from every clock and `movetime`.
//! - `Temperature`: 0 plays the most visited move; T > 0 samples by visits^(1/T).
//! - `PolicyTemperature` -> `SearchParams::policy_temperature` (lc0's option): the
//!   priors of the tree are softmax(logits / T); T > 1 flattens the policy, T < 1
//!   sharpens it.
//! - `MovesLeftSlope` -> `SearchParams::moves_left_slope`, `MovesLeftMaxEffect` ->
//!   `SearchParams::moves_left_max_effect`, `MovesLeftThreshold` ->
//!   `SearchParams::moves_left_threshold` (lc0's options, lc0's defaults): with a network
//!   that has the moves-left head, PUCT prefers the shorter line when winning and the
//!   longer one when losing; a slope of 0 turns it off, and without the head it does
//!   nothing.
//! - `VerboseMoveStats`: after each search, one `info string` per root move (visits,
//!   prior, plies left with the moves-left head, Q, U) and one for the root, before
//!   `bestmove` (lc0's option).
//! - `LogFile`: every line in and out, with a UTC timestamp, appended to this file
//!   ([`crate::output`]); `<empty>` (or no value) turns it off.
//! - `UCI_Chess960`: castling is read and written as the king taking its own rook
//!   (e1h1), and `position fen` takes Shredder-FEN and X-FEN castling rights of any rook.

use anyhow::{bail, Context, Result};
use ember_engine::mcts::node::nodes_for_mb;
use ember_engine::mcts::params::DEFAULT_TREE_MB;
use ember_engine::{DeviceChoice, SearchParams};
use shakmaty::CastlingMode;

/// The value of `WeightsFile` that names the network built into the binary.
pub const EMBEDDED: &str = "<embedded>";

/// `RamLimitMb` bounds: a tree of 16 MB holds about 350,000 nodes; 262,144 MB reaches the
/// most nodes a tree can index.
const MIN_RAM_LIMIT_MB: i64 = 16;
const MAX_RAM_LIMIT_MB: i64 = 262_144;

/// Largest `NNCacheSize` in entries (about 2 GB).
pub const MAX_CACHE_ENTRIES: i64 = 10_000_000;

/// How `uci` declares an empty string option, and the value that sets one to empty.
pub const EMPTY: &str = "<empty>";

/// Which part of the engine a changed option touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Changed {
    /// `WeightsFile` or `Device`: the network must be (re)loaded.
    Network,
    /// `Threads`: the evaluator's thread count.
    Threads,
    /// `NNCacheSize`: the cache must be rebuilt.
    Cache,
    /// `LogFile`: the log must be switched to the new file (or off).
    Log,
    /// Anything read at the start of each search.
    Search,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub weights_file: String,
    pub device: DeviceChoice,
    /// As typed, for display.
    pub device_text: String,
    pub threads: usize,
    pub minibatch_size: usize,
    pub nn_cache_size: usize,
    pub cpuct: f32,
    pub fpu_reduction: f32,
    pub move_overhead_ms: u64,
    pub multi_pv: usize,
    pub show_wdl: bool,
    pub solver: bool,
    pub ponder: bool,
    pub temperature: f32,
    /// `RamLimitMb`: the search tree's memory.
    pub ram_limit_mb: usize,
    pub policy_temperature: f32,
    pub moves_left_slope: f32,
    pub moves_left_max_effect: f32,
    pub moves_left_threshold: f32,
    pub verbose_move_stats: bool,
    /// `LogFile`: empty when off.
    pub log_file: String,
    pub chess960: bool,
    /// Limits that depend on the machine, fixed at start-up.
    pub max_threads: usize,
}

/// An option's UCI type and the values it accepts.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// `type spin`: an integer in `min..=max` (`max` none: the machine's CPU count).
    Spin { min: i64, max: Option<i64> },
    /// `type string` holding a decimal number in `min..=max`.
    Decimal { min: f32, max: f32 },
    /// `type check`: `true` or `false`.
    Check,
    /// `type string`: any text (`hint` says what is expected); empty (no value, or
    /// `<empty>`) only where `may_be_empty`.
    Text {
        hint: &'static str,
        may_be_empty: bool,
    },
}

/// A value checked against its option's [`Kind`].
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Decimal(f32),
    Bool(bool),
    Text(String),
}

/// One UCI option: everything about it in one place.
pub struct OptionSpec {
    pub name: &'static str,
    pub kind: Kind,
    pub changes: Changed,
    /// The field's current value (the default `uci` declares).
    pub get: fn(&Options) -> Value,
    /// Sets the field from a checked value (may still refuse it, e.g. an unknown device).
    pub set: fn(&mut Options, Value) -> Result<()>,
}

/// Every option `ember` has, in the order `uci` lists them.
pub static TABLE: &[OptionSpec] = &[
    OptionSpec {
        name: "WeightsFile",
        kind: Kind::Text {
            hint: "a path or <embedded>",
            may_be_empty: false,
        },
        changes: Changed::Network,
        get: |o| Value::Text(o.weights_file.clone()),
        set: |o, v| {
            o.weights_file = v.text();
            Ok(())
        },
    },
    OptionSpec {
        name: "Device",
        kind: Kind::Text {
            hint: "auto, cpu or cuda:N",
            may_be_empty: false,
        },
        changes: Changed::Network,
        get: |o| Value::Text(o.device_text.clone()),
        set: |o, v| {
            let text = v.text();
            o.device = text.parse()?;
            o.device_text = text.to_ascii_lowercase();
            Ok(())
        },
    },
    OptionSpec {
        name: "Threads",
        kind: Kind::Spin { min: 1, max: None },
        changes: Changed::Threads,
        get: |o| Value::Int(o.threads as i64),
        set: |o, v| {
            o.threads = v.int() as usize;
            Ok(())
        },
    },
    OptionSpec {
        name: "MinibatchSize",
        kind: Kind::Spin {
            min: 1,
            max: Some(1024),
        },
        changes: Changed::Search,
        get: |o| Value::Int(o.minibatch_size as i64),
        set: |o, v| {
            o.minibatch_size = v.int() as usize;
            Ok(())
        },
    },
    OptionSpec {
        name: "RamLimitMb",
        kind: Kind::Spin {
            min: MIN_RAM_LIMIT_MB,
            max: Some(MAX_RAM_LIMIT_MB),
        },
        changes: Changed::Search,
        get: |o| Value::Int(o.ram_limit_mb as i64),
        set: |o, v| {
            o.ram_limit_mb = v.int() as usize;
            Ok(())
        },
    },
    OptionSpec {
        name: "NNCacheSize",
        kind: Kind::Spin {
            min: 0,
            max: Some(MAX_CACHE_ENTRIES),
        },
        changes: Changed::Cache,
        get: |o| Value::Int(o.nn_cache_size as i64),
        set: |o, v| {
            o.nn_cache_size = v.int() as usize;
            Ok(())
        },
    },
    OptionSpec {
        name: "CPuct",
        kind: Kind::Decimal {
            min: 0.0,
            max: 100.0,
        },
        changes: Changed::Search,
        get: |o| Value::Decimal(o.cpuct),
        set: |o, v| {
            o.cpuct = v.decimal();
            Ok(())
        },
    },
    OptionSpec {
        name: "FpuReduction",
        kind: Kind::Decimal {
            min: -10.0,
            max: 10.0,
        },
        changes: Changed::Search,
        get: |o| Value::Decimal(o.fpu_reduction),
        set: |o, v| {
            o.fpu_reduction = v.decimal();
            Ok(())
        },
    },
    OptionSpec {
        name: "MoveOverhead",
        kind: Kind::Spin {
            min: 0,
            max: Some(5000),
        },
        changes: Changed::Search,
        get: |o| Value::Int(o.move_overhead_ms as i64),
        set: |o, v| {
            o.move_overhead_ms = v.int() as u64;
            Ok(())
        },
    },
    OptionSpec {
        name: "MultiPV",
        kind: Kind::Spin {
            min: 1,
            max: Some(10),
        },
        changes: Changed::Search,
        get: |o| Value::Int(o.multi_pv as i64),
        set: |o, v| {
            o.multi_pv = v.int() as usize;
            Ok(())
        },
    },
    OptionSpec {
        name: "UCI_ShowWDL",
        kind: Kind::Check,
        changes: Changed::Search,
        get: |o| Value::Bool(o.show_wdl),
        set: |o, v| {
            o.show_wdl = v.bool();
            Ok(())
        },
    },
    OptionSpec {
        name: "Solver",
        kind: Kind::Check,
        changes: Changed::Search,
        get: |o| Value::Bool(o.solver),
        set: |o, v| {
            o.solver = v.bool();
            Ok(())
        },
    },
    OptionSpec {
        name: "Ponder",
        kind: Kind::Check,
        changes: Changed::Search,
        get: |o| Value::Bool(o.ponder),
        set: |o, v| {
            o.ponder = v.bool();
            Ok(())
        },
    },
    OptionSpec {
        name: "Temperature",
        kind: Kind::Decimal {
            min: 0.0,
            max: 100.0,
        },
        changes: Changed::Search,
        get: |o| Value::Decimal(o.temperature),
        set: |o, v| {
            o.temperature = v.decimal();
            Ok(())
        },
    },
    OptionSpec {
        name: "PolicyTemperature",
        kind: Kind::Decimal {
            min: 0.1,
            max: 10.0,
        },
        changes: Changed::Search,
        get: |o| Value::Decimal(o.policy_temperature),
        set: |o, v| {
            o.policy_temperature = v.decimal();
            Ok(())
        },
    },
    OptionSpec {
        name: "MovesLeftSlope",
        kind: Kind::Decimal { min: 0.0, max: 1.0 },
        changes: Changed::Search,
        get: |o| Value::Decimal(o.moves_left_slope),
        set: |o, v| {
            o.moves_left_slope = v.decimal();
            Ok(())
        },
    },
    OptionSpec {
        name: "MovesLeftMaxEffect",
        kind: Kind::Decimal { min: 0.0, max: 1.0 },
        changes: Changed::Search,
        get: |o| Value::Decimal(o.moves_left_max_effect),
        set: |o, v| {
            o.moves_left_max_effect = v.decimal();
            Ok(())
        },
    },
    OptionSpec {
        name: "MovesLeftThreshold",
        kind: Kind::Decimal { min: 0.0, max: 1.0 },
        changes: Changed::Search,
        get: |o| Value::Decimal(o.moves_left_threshold),
        set: |o, v| {
            o.moves_left_threshold = v.decimal();
            Ok(())
        },
    },
    OptionSpec {
        name: "VerboseMoveStats",
        kind: Kind::Check,
        changes: Changed::Search,
        get: |o| Value::Bool(o.verbose_move_stats),
        set: |o, v| {
            o.verbose_move_stats = v.bool();
            Ok(())
        },
    },
    OptionSpec {
        name: "LogFile",
        kind: Kind::Text {
            hint: "a file to append the log to, or <empty> for none",
            may_be_empty: true,
        },
        changes: Changed::Log,
        get: |o| Value::Text(o.log_file.clone()),
        set: |o, v| {
            o.log_file = v.text();
            Ok(())
        },
    },
    OptionSpec {
        name: "UCI_Chess960",
        kind: Kind::Check,
        changes: Changed::Search,
        get: |o| Value::Bool(o.chess960),
        set: |o, v| {
            o.chess960 = v.bool();
            Ok(())
        },
    },
];

impl Value {
    fn text(self) -> String {
        match self {
            Value::Text(t) => t,
            other => unreachable!("a text option was given {other:?}"),
        }
    }
    fn int(self) -> i64 {
        match self {
            Value::Int(n) => n,
            other => unreachable!("a spin option was given {other:?}"),
        }
    }
    fn decimal(self) -> f32 {
        match self {
            Value::Decimal(x) => x,
            other => unreachable!("a decimal option was given {other:?}"),
        }
    }
    fn bool(self) -> bool {
        match self {
            Value::Bool(b) => b,
            other => unreachable!("a check option was given {other:?}"),
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(n) => write!(f, "{n}"),
            Value::Decimal(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Text(t) if t.is_empty() => write!(f, "{EMPTY}"),
            Value::Text(t) => write!(f, "{t}"),
        }
    }
}

impl OptionSpec {
    fn max(&self, options: &Options) -> i64 {
        match self.kind {
            Kind::Spin { max: Some(m), .. } => m,
            _ => options.max_threads as i64,
        }
    }

    /// The `option name ...` line, with the current value as the default.
    fn declaration(&self, options: &Options) -> String {
        let default = (self.get)(options);
        let name = self.name;
        match self.kind {
            Kind::Spin { min, .. } => format!(
                "option name {name} type spin default {default} min {min} max {}",
                self.max(options)
            ),
            Kind::Check => format!("option name {name} type check default {default}"),
            Kind::Decimal { .. } | Kind::Text { .. } => {
                format!("option name {name} type string default {default}")
            }
        }
    }

    /// `value` checked against the option's kind and range.
    fn parse(&self, value: &str, options: &Options) -> Result<Value> {
        let name = self.name;
        match self.kind {
            Kind::Spin { min, .. } => {
                let max = self.max(options);
                let n: i128 = value
                    .parse()
                    .with_context(|| format!("option {name} takes an integer, not {value:?}"))?;
                if n < i128::from(min) || n > i128::from(max) {
                    bail!("option {name} must be between {min} and {max}, not {value}");
                }
                Ok(Value::Int(n as i64))
            }
            Kind::Decimal { min, max } => {
                let x: f32 = value
                    .parse()
                    .with_context(|| format!("option {name} takes a number, not {value:?}"))?;
                if !x.is_finite() || x < min || x > max {
                    bail!("option {name} must be between {min} and {max}, not {value}");
                }
                Ok(Value::Decimal(x))
            }
            Kind::Check => match value.to_ascii_lowercase().as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => bail!("option {name} takes true or false, not {value:?}"),
            },
            Kind::Text { hint, may_be_empty } => {
                let empty = value.is_empty() || value.eq_ignore_ascii_case(EMPTY);
                match (empty, may_be_empty) {
                    (true, true) => Ok(Value::Text(String::new())),
                    (true, false) => bail!("option {name} needs a value ({hint})"),
                    (false, _) => Ok(Value::Text(value.to_string())),
                }
            }
        }
    }
}

impl Options {
    /// Defaults for this machine: `default_weights` as found at start-up, all CPUs, and a
    /// minibatch of 32 on the CPU (about 6 ms per call here, so `stop` stays well inside
    /// 50 ms) or 256 on a GPU.
    pub fn new(default_weights: String, cpus: usize, gpu: bool) -> Options {
        let params = SearchParams::default();
        Options {
            weights_file: default_weights,
            device: DeviceChoice::Auto,
            device_text: "auto".to_string(),
            threads: cpus.max(1),
            minibatch_size: if gpu { 256 } else { 32 },
            nn_cache_size: params.cache_entries,
            cpuct: params.cpuct,
            fpu_reduction: params.fpu_reduction,
            move_overhead_ms: 50,
            multi_pv: 1,
            show_wdl: false,
            solver: params.solver,
            ponder: false,
            temperature: 0.0,
            ram_limit_mb: DEFAULT_TREE_MB,
            policy_temperature: params.policy_temperature,
            moves_left_slope: params.moves_left_slope,
            moves_left_max_effect: params.moves_left_max_effect,
            moves_left_threshold: params.moves_left_threshold,
            verbose_move_stats: false,
            log_file: String::new(),
            chess960: false,
            max_threads: cpus.max(1),
        }
    }

    /// The `option name ...` lines for `uci`, with these values as defaults.
    pub fn declarations(&self) -> Vec<String> {
        TABLE.iter().map(|spec| spec.declaration(self)).collect()
    }

    /// Applies `setoption name <name> value <value>`; on error nothing changes.
    pub fn set(&mut self, name: &str, value: Option<&str>) -> Result<Changed> {
        let Some(spec) = TABLE.iter().find(|s| s.name.eq_ignore_ascii_case(name)) else {
            bail!("unknown option {name:?}");
        };
        let value = spec.parse(value.map(str::trim).unwrap_or(""), self)?;
        let mut next = self.clone();
        (spec.set)(&mut next, value)?;
        *self = next;
        Ok(spec.changes)
    }

    /// The search parameters these options select.
    pub fn search_params(&self) -> SearchParams {
        SearchParams {
            cpuct: self.cpuct,
            fpu_reduction: self.fpu_reduction,
            max_batch: self.minibatch_size,
            cache_entries: self.nn_cache_size,
            solver: self.solver,
            max_nodes: nodes_for_mb(self.ram_limit_mb),
            policy_temperature: self.policy_temperature,
            moves_left_slope: self.moves_left_slope,
            moves_left_max_effect: self.moves_left_max_effect,
            moves_left_threshold: self.moves_left_threshold,
            ..SearchParams::default()
        }
    }

    /// How castling moves and castling rights are read and written (`UCI_Chess960`).
    pub fn castling_mode(&self) -> CastlingMode {
        if self.chess960 {
            CastlingMode::Chess960
        } else {
            CastlingMode::Standard
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options::new(EMBEDDED.to_string(), 2, false)
    }

    #[test]
    fn every_declared_option_accepts_its_default() {
        let mut o = options();
        for line in o.clone().declarations() {
            let rest = line.strip_prefix("option name ").unwrap();
            let (name, rest) = rest.split_once(" type ").unwrap();
            let default = rest
                .split_once(" default ")
                .map(|(_, d)| d.split(" min ").next().unwrap().to_string());
            o.set(name, default.as_deref())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert_eq!(o, options());
    }

    #[test]
    fn option_names_are_case_insensitive() {
        let mut o = options();
        o.set("multipv", Some("3")).unwrap();
        assert_eq!(o.multi_pv, 3);
    }

    #[test]
    fn spin_out_of_range_is_rejected_and_keeps_the_old_value() {
        let mut o = options();
        for (name, value) in [
            ("Threads", "100000"),
            ("Threads", "-3"),
            ("MultiPV", "0"),
            ("MinibatchSize", "0"),
        ] {
            assert!(o.set(name, Some(value)).is_err(), "{name}={value}");
        }
        assert!(o.set("NNCacheSize", Some("99999999999999")).is_err());
        assert_eq!(o, options());
    }

    #[test]
    fn spin_rejects_non_integers() {
        let mut o = options();
        for value in ["abc", "\u{ff14}", "1.5", ""] {
            assert!(o.set("MultiPV", Some(value)).is_err(), "{value:?}");
        }
        assert!(o.set("Threads", None).is_err());
    }

    #[test]
    fn decimal_options_reject_nan_infinity_and_negative_temperature() {
        let mut o = options();
        assert!(o.set("CPuct", Some("NaN")).is_err());
        assert!(o.set("CPuct", Some("inf")).is_err());
        assert!(o.set("Temperature", Some("-1")).is_err());
        o.set("CPuct", Some("2.5")).unwrap();
        assert_eq!(o.search_params().cpuct, 2.5);
    }

    #[test]
    fn check_options_take_only_true_or_false() {
        let mut o = options();
        assert!(o.search_params().solver, "the solver is on by default");
        o.set("Solver", Some("false")).unwrap();
        assert!(!o.search_params().solver);
        assert!(o.set("UCI_ShowWDL", Some("maybe")).is_err());
        o.set("UCI_ShowWDL", Some("true")).unwrap();
        assert!(o.show_wdl);
    }

    #[test]
    fn unknown_device_is_rejected() {
        let mut o = options();
        assert!(o.set("Device", Some("quantum")).is_err());
        assert_eq!(o.set("Device", Some("cpu")).unwrap(), Changed::Network);
        assert_eq!(o.device, DeviceChoice::Cpu);
    }

    #[test]
    fn every_option_of_the_table_is_declared_once_and_sets_its_own_field() {
        let o = options();
        let lines = o.declarations();
        assert_eq!(lines.len(), TABLE.len());
        for spec in TABLE {
            let declared: Vec<&String> = lines
                .iter()
                .filter(|l| l.starts_with(&format!("option name {} type", spec.name)))
                .collect();
            assert_eq!(declared.len(), 1, "{}", spec.name);
            // A value other than the default changes this option's field and no other.
            let other = match (spec.kind, (spec.get)(&o)) {
                (Kind::Spin { min, .. }, Value::Int(n)) => {
                    (if n == min { n + 1 } else { min }).to_string()
                }
                (Kind::Decimal { min, max }, Value::Decimal(x)) => {
                    (if x == min { max } else { min }).to_string()
                }
                (Kind::Check, Value::Bool(b)) => (!b).to_string(),
                (Kind::Text { .. }, _) if spec.name == "Device" => "cpu".to_string(),
                (Kind::Text { .. }, _) if spec.name == "LogFile" => "/some/ember.log".to_string(),
                (Kind::Text { .. }, _) => "/some/file.safetensors".to_string(),
                (kind, v) => panic!("{}: {kind:?} holds {v:?}", spec.name),
            };
            let mut changed = o.clone();
            changed.set(spec.name, Some(&other)).unwrap();
            assert_ne!((spec.get)(&changed), (spec.get)(&o), "{}", spec.name);
            for rest in TABLE.iter().filter(|r| r.name != spec.name) {
                assert_eq!(
                    (rest.get)(&changed),
                    (rest.get)(&o),
                    "{} changed {}",
                    spec.name,
                    rest.name
                );
            }
        }
    }

    #[test]
    fn only_a_text_option_that_may_be_empty_takes_no_value_or_empty() {
        let mut o = options();
        assert!(o
            .declarations()
            .contains(&"option name LogFile type string default <empty>".to_string()));
        o.set("LogFile", Some("/tmp/ember.log")).unwrap();
        assert_eq!(o.log_file, "/tmp/ember.log");
        o.set("LogFile", Some("<empty>")).unwrap();
        assert_eq!(o.log_file, "");
        o.set("LogFile", Some("/tmp/ember.log")).unwrap();
        assert_eq!(o.set("LogFile", None).unwrap(), Changed::Log);
        assert_eq!(o.log_file, "");
        for name in ["WeightsFile", "Device"] {
            assert!(o.set(name, None).is_err(), "{name}");
            assert!(o.set(name, Some("<empty>")).is_err(), "{name}");
        }
    }

    #[test]
    fn policy_temperature_maps_onto_the_search_and_stays_in_its_range() {
        let mut o = options();
        assert_eq!(o.search_params().policy_temperature, 1.0);
        o.set("PolicyTemperature", Some("2.2")).unwrap();
        assert_eq!(o.search_params().policy_temperature, 2.2);
        for value in ["0", "0.05", "11", "-1", "NaN"] {
            assert!(o.set("PolicyTemperature", Some(value)).is_err(), "{value}");
        }
        assert_eq!(o.policy_temperature, 2.2);
    }

    #[test]
    fn the_moves_left_options_set_and_change_the_search_and_stay_in_their_range() {
        let mut o = options();
        let lc0 = SearchParams::default();
        let p = o.search_params();
        assert_eq!(
            (
                p.moves_left_slope,
                p.moves_left_max_effect,
                p.moves_left_threshold
            ),
            (0.0027, 0.0345, 0.8),
            "lc0's defaults"
        );
        assert_eq!(
            (
                p.moves_left_constant_factor,
                p.moves_left_scaled_factor,
                p.moves_left_quadratic_factor
            ),
            (
                lc0.moves_left_constant_factor,
                lc0.moves_left_scaled_factor,
                lc0.moves_left_quadratic_factor
            )
        );
        assert!(o
            .declarations()
            .contains(&"option name MovesLeftSlope type string default 0.0027".to_string()));
        assert_eq!(
            o.set("MovesLeftSlope", Some("0.004")).unwrap(),
            Changed::Search
        );
        o.set("movesleftmaxeffect", Some("0.05")).unwrap();
        o.set("MovesLeftThreshold", Some("0.6")).unwrap();
        let p = o.search_params();
        assert_eq!(
            (
                p.moves_left_slope,
                p.moves_left_max_effect,
                p.moves_left_threshold
            ),
            (0.004, 0.05, 0.6)
        );
        o.set("MovesLeftSlope", Some("0")).unwrap();
        assert_eq!(o.search_params().moves_left_slope, 0.0, "0 turns it off");
        for name in ["MovesLeftSlope", "MovesLeftMaxEffect", "MovesLeftThreshold"] {
            for value in ["-0.1", "1.5", "NaN", "x"] {
                assert!(o.set(name, Some(value)).is_err(), "{name}={value}");
            }
        }
        assert_eq!(
            (
                o.moves_left_slope,
                o.moves_left_max_effect,
                o.moves_left_threshold
            ),
            (0.0, 0.05, 0.6),
            "a refused value changes nothing"
        );
    }

    #[test]
    fn chess960_selects_the_castling_mode() {
        let mut o = options();
        assert_eq!(o.castling_mode(), CastlingMode::Standard);
        o.set("UCI_Chess960", Some("true")).unwrap();
        assert_eq!(o.castling_mode(), CastlingMode::Chess960);
    }

    #[test]
    fn unknown_option_is_an_error() {
        assert!(options().set("NoSuchOption", Some("1")).is_err());
    }

    #[test]
    fn options_map_onto_search_params() {
        let mut o = options();
        o.set("MinibatchSize", Some("64")).unwrap();
        o.set("NNCacheSize", Some("1000")).unwrap();
        o.set("FpuReduction", Some("0.5")).unwrap();
        let p = o.search_params();
        assert_eq!(
            (p.max_batch, p.cache_entries, p.fpu_reduction),
            (64, 1000, 0.5)
        );
    }

    #[test]
    fn ram_limit_bounds_the_tree_in_megabytes() {
        let mut o = options();
        assert_eq!(o.search_params().max_nodes, nodes_for_mb(DEFAULT_TREE_MB));
        o.set("RamLimitMb", Some("64")).unwrap();
        let nodes = o.search_params().max_nodes;
        let bytes = nodes * ember_engine::mcts::node::NODE_BYTES;
        assert!(bytes <= 64 << 20 && bytes > 63 << 20, "{nodes} nodes");
        assert!(o.set("RamLimitMb", Some("8")).is_err());
        assert_eq!(o.ram_limit_mb, 64, "a refused value changes nothing");
    }
}

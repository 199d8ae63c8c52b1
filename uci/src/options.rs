//! The engine's UCI options: their declarations for `uci`, their current values, and
//! `setoption` parsing and validation. A bad value is an error and leaves the option as
//! it was.
//!
//! Units and mappings (one option, one engine field):
//! - `Threads` -> `NetEvaluator::set_threads` (CPU threads of the network's GEMMs; the
//!   tree search itself is one thread).
//! - `MinibatchSize` -> `SearchParams::max_batch` (leaves per network call; small on the
//!   CPU so that `stop` is answered within one batch).
//! - `NNCacheSize` -> `SearchParams::cache_entries`, in **entries** (positions), not MB;
//!   an entry is about 200 bytes, so the default 200000 is about 40 MB.
//! - `CPuct` -> `SearchParams::cpuct`, `FpuReduction` -> `SearchParams::fpu_reduction`:
//!   decimal strings (`1.745`), as lc0 writes them.
//! - `MoveOverhead` (ms): kept in reserve from every clock and `movetime`.
//! - `Temperature`: 0 plays the most visited move; T > 0 samples by visits^(1/T).

use anyhow::{bail, Context, Result};
use ember_engine::{DeviceChoice, SearchParams};

/// The value of `WeightsFile` that names the network built into the binary.
pub const EMBEDDED: &str = "<embedded>";

/// Largest `NNCacheSize` in entries (about 2 GB).
pub const MAX_CACHE_ENTRIES: u64 = 10_000_000;

/// Which part of the engine a changed option touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Changed {
    /// `WeightsFile` or `Device`: the network must be (re)loaded.
    Network,
    /// `Threads`: the evaluator's thread count.
    Threads,
    /// `NNCacheSize`: the cache must be rebuilt.
    Cache,
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
    pub ponder: bool,
    pub temperature: f32,
    /// Limits that depend on the machine, fixed at start-up.
    pub max_threads: usize,
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
            ponder: false,
            temperature: 0.0,
            max_threads: cpus.max(1),
        }
    }

    /// The `option name ...` lines for `uci`, with these values as defaults.
    pub fn declarations(&self) -> Vec<String> {
        vec![
            format!(
                "option name WeightsFile type string default {}",
                self.weights_file
            ),
            format!(
                "option name Device type string default {}",
                self.device_text
            ),
            format!(
                "option name Threads type spin default {} min 1 max {}",
                self.threads, self.max_threads
            ),
            format!(
                "option name MinibatchSize type spin default {} min 1 max 1024",
                self.minibatch_size
            ),
            format!(
                "option name NNCacheSize type spin default {} min 0 max {MAX_CACHE_ENTRIES}",
                self.nn_cache_size
            ),
            format!("option name CPuct type string default {}", self.cpuct),
            format!(
                "option name FpuReduction type string default {}",
                self.fpu_reduction
            ),
            format!(
                "option name MoveOverhead type spin default {} min 0 max 5000",
                self.move_overhead_ms
            ),
            format!(
                "option name MultiPV type spin default {} min 1 max 10",
                self.multi_pv
            ),
            format!(
                "option name UCI_ShowWDL type check default {}",
                self.show_wdl
            ),
            format!("option name Ponder type check default {}", self.ponder),
            format!(
                "option name Temperature type string default {}",
                self.temperature
            ),
        ]
    }

    /// Applies `setoption name <name> value <value>`; on error nothing changes.
    pub fn set(&mut self, name: &str, value: Option<&str>) -> Result<Changed> {
        let value = value.map(str::trim).unwrap_or("");
        let need = |what: &str| -> Result<()> {
            if value.is_empty() {
                bail!("option {name} needs a value ({what})");
            }
            Ok(())
        };
        match name.to_ascii_lowercase().as_str() {
            "weightsfile" => {
                need("a path or <embedded>")?;
                self.weights_file = value.to_string();
                Ok(Changed::Network)
            }
            "device" => {
                need("auto, cpu or cuda:N")?;
                self.device = value.parse()?;
                self.device_text = value.to_ascii_lowercase();
                Ok(Changed::Network)
            }
            "threads" => {
                self.threads = spin(name, value, 1, self.max_threads as u64)? as usize;
                Ok(Changed::Threads)
            }
            "minibatchsize" => {
                self.minibatch_size = spin(name, value, 1, 1024)? as usize;
                Ok(Changed::Search)
            }
            "nncachesize" => {
                self.nn_cache_size = spin(name, value, 0, MAX_CACHE_ENTRIES)? as usize;
                Ok(Changed::Cache)
            }
            "cpuct" => {
                self.cpuct = decimal(name, value, 0.0, 100.0)?;
                Ok(Changed::Search)
            }
            "fpureduction" => {
                self.fpu_reduction = decimal(name, value, -10.0, 10.0)?;
                Ok(Changed::Search)
            }
            "moveoverhead" => {
                self.move_overhead_ms = spin(name, value, 0, 5000)?;
                Ok(Changed::Search)
            }
            "multipv" => {
                self.multi_pv = spin(name, value, 1, 10)? as usize;
                Ok(Changed::Search)
            }
            "uci_showwdl" => {
                self.show_wdl = check(name, value)?;
                Ok(Changed::Search)
            }
            "ponder" => {
                self.ponder = check(name, value)?;
                Ok(Changed::Search)
            }
            "temperature" => {
                self.temperature = decimal(name, value, 0.0, 100.0)?;
                Ok(Changed::Search)
            }
            _ => bail!("unknown option {name:?}"),
        }
    }

    /// The search parameters these options select.
    pub fn search_params(&self) -> SearchParams {
        SearchParams {
            cpuct: self.cpuct,
            fpu_reduction: self.fpu_reduction,
            max_batch: self.minibatch_size,
            cache_entries: self.nn_cache_size,
            ..SearchParams::default()
        }
    }
}

fn spin(name: &str, value: &str, min: u64, max: u64) -> Result<u64> {
    let n: i128 = value
        .parse()
        .with_context(|| format!("option {name} takes an integer, not {value:?}"))?;
    if n < min as i128 || n > max as i128 {
        bail!("option {name} must be between {min} and {max}, not {value}");
    }
    Ok(n as u64)
}

fn decimal(name: &str, value: &str, min: f32, max: f32) -> Result<f32> {
    let x: f32 = value
        .parse()
        .with_context(|| format!("option {name} takes a number, not {value:?}"))?;
    if !x.is_finite() || x < min || x > max {
        bail!("option {name} must be between {min} and {max}, not {value}");
    }
    Ok(x)
}

fn check(name: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => bail!("option {name} takes true or false, not {value:?}"),
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
}

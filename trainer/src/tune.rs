//! `trainer tune`: SPSA over named [`SearchParams`] fields, as fishtest tunes
//! Stockfish. Each step perturbs every parameter at once by ±c_k (one random sign each),
//! plays the network against itself, `theta + c_k * flip` against `theta - c_k * flip`,
//! over game pairs from the opening book at fixed nodes, and moves every parameter by
//! `a_k / c_k * (wins - losses) * flip`. The gains follow Spall's schedules with
//! fishtest's parametrisation: `c_k = c_end * (N / k)^0.101` and `a_k = r_end * c_end^2 *
//! ((A + N) / (A + k))^0.602` with `A = N / 10`, so that the last step perturbs by
//! `c_end` and moves by `r_end * c_end` per game won.
//!
//! Every step is one JSON line in `--out`; started again with the same file, tuning goes
//! on after the last complete step (a line cut short by a kill is dropped).

use crate::cli::TuneArgs;
use crate::commands::{match_setup, say};
use crate::config::derive_seed;
use anyhow::{bail, Context, Result};
use ember_engine::files::write_atomic;
use ember_engine::matches::{run_match_searched, Limit, MatchSpec};
use ember_engine::players::{PlayerSpec, Prepared};
use ember_engine::SearchParams;
use log::{info, warn};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

/// Spall's exponents for the step size and the perturbation.
const ALPHA: f64 = 0.602;
const GAMMA: f64 = 0.101;
/// The step-size offset `A` as a share of the steps.
const A_SHARE: f64 = 0.1;
/// fishtest's default `r_end`.
pub const DEFAULT_R_END: f64 = 0.002;
/// Random stream of the flips.
const STREAM_FLIPS: u64 = 41;

/// One tuned parameter: `NAME,MIN,MAX,C_END[,R_END]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TuneParam {
    /// A numeric field of [`SearchParams`] (`cpuct`, `fpu_reduction`, ...).
    pub name: String,
    pub min: f64,
    pub max: f64,
    /// The perturbation at the last step.
    pub c_end: f64,
    /// `a_end / c_end^2` at the last step.
    pub r_end: f64,
}

impl FromStr for TuneParam {
    type Err = String;
    fn from_str(s: &str) -> Result<TuneParam, String> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        if !(4..=5).contains(&parts.len()) {
            return Err(format!("{s:?}: expected NAME,MIN,MAX,C_END[,R_END]"));
        }
        let number = |i: usize, what: &str| -> Result<f64, String> {
            parts[i]
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("{s:?}: {what} {:?} is not a number", parts[i]))
        };
        let p = TuneParam {
            name: parts[0].to_string(),
            min: number(1, "MIN")?,
            max: number(2, "MAX")?,
            c_end: number(3, "C_END")?,
            r_end: if parts.len() == 5 {
                number(4, "R_END")?
            } else {
                DEFAULT_R_END
            },
        };
        if p.name.is_empty() || p.min >= p.max || p.c_end <= 0.0 || p.r_end <= 0.0 {
            return Err(format!(
                "{s:?}: needs a name, MIN below MAX, and C_END and R_END above 0"
            ));
        }
        Ok(p)
    }
}

/// The gain schedules and the update of one SPSA run of `steps` steps.
#[derive(Clone, Debug)]
pub struct Spsa {
    pub params: Vec<TuneParam>,
    pub steps: u64,
}

impl Spsa {
    /// The perturbation of parameter `i` at step `k` (from 1).
    pub fn c(&self, i: usize, k: u64) -> f64 {
        self.params[i].c_end * (self.steps as f64 / k as f64).powf(GAMMA)
    }

    /// The step size of parameter `i` at step `k`.
    pub fn a(&self, i: usize, k: u64) -> f64 {
        let p = &self.params[i];
        let n = self.steps as f64;
        let big_a = A_SHARE * n;
        p.r_end * p.c_end * p.c_end * ((big_a + n) / (big_a + k as f64)).powf(ALPHA)
    }

    /// Step `k`'s random signs, the same in a resumed run as in an uninterrupted one.
    pub fn flips(&self, seed: u64, k: u64) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(derive_seed(seed, k, STREAM_FLIPS));
        self.params
            .iter()
            .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
            .collect()
    }

    fn clamp(&self, values: impl Iterator<Item = f64>) -> Vec<f64> {
        values
            .zip(&self.params)
            .map(|(x, p)| x.clamp(p.min, p.max))
            .collect()
    }

    /// The two sides of step `k`: `theta + c_k * flip` and `theta - c_k * flip`.
    pub fn perturbed(&self, theta: &[f64], k: u64, flips: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let side = |sign: f64| {
            self.clamp(
                theta
                    .iter()
                    .zip(flips)
                    .enumerate()
                    .map(|(i, (t, f))| t + sign * self.c(i, k) * f),
            )
        };
        (side(1.0), side(-1.0))
    }

    /// `theta` after step `k`, where the plus side scored `result` (wins - losses).
    pub fn step(&self, theta: &[f64], k: u64, flips: &[f64], result: f64) -> Vec<f64> {
        self.clamp(
            theta
                .iter()
                .zip(flips)
                .enumerate()
                .map(|(i, (t, f))| t + self.a(i, k) / self.c(i, k) * result * f),
        )
    }
}

/// `base` with each named field set to its value (integer fields rounded).
pub fn with_values(base: &SearchParams, names: &[String], values: &[f64]) -> Result<SearchParams> {
    let mut v = serde_json::to_value(base)?;
    for (name, &x) in names.iter().zip(values) {
        match v.get_mut(name) {
            Some(field) if field.is_u64() => *field = json!(x.round().max(0.0) as u64),
            Some(field) if field.is_number() => *field = json!(x),
            Some(_) => bail!("search parameter {name} is not a number"),
            None => bail!("there is no search parameter {name}"),
        }
    }
    serde_json::from_value(v).context("search parameters out of their types' range")
}

/// The numeric value of field `name` of `params`.
pub fn value_of(params: &SearchParams, name: &str) -> Result<f64> {
    let v = serde_json::to_value(params)?;
    match v.get(name) {
        Some(field) if field.is_number() => Ok(field.as_f64().expect("a number")),
        Some(_) => bail!("search parameter {name} is not a number"),
        None => bail!("there is no search parameter {name}"),
    }
}

/// The values by parameter name, for a JSON line.
fn named(params: &[TuneParam], values: &[f64]) -> Value {
    let map: Map<String, Value> = params
        .iter()
        .zip(values)
        .map(|(p, &x)| (p.name.clone(), json!(x)))
        .collect();
    Value::Object(map)
}

/// The complete steps already in `path` (the lines that parse, up to the first that
/// does not), rewritten without a cut-short last line; the step to go on from and its
/// theta, or step 1 and `start`.
fn resume(path: &Path, spsa: &Spsa, start: Vec<f64>) -> Result<(u64, Vec<f64>)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((1, start)),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut kept = String::new();
    let mut last: Option<(u64, Vec<f64>)> = None;
    for (n, line) in text.lines().enumerate() {
        let step = serde_json::from_str::<Value>(line).ok().and_then(|v| {
            let k = v.get("step")?.as_u64()?;
            let theta = v.get("theta")?;
            let values: Option<Vec<f64>> = spsa
                .params
                .iter()
                .map(|p| theta.get(&p.name)?.as_f64())
                .collect();
            Some((k, values?))
        });
        match step {
            Some((k, values)) if k == last.as_ref().map_or(1, |l| l.0 + 1) => {
                kept.push_str(line);
                kept.push('\n');
                last = Some((k, values));
            }
            Some(_) => bail!(
                "{} line {}: not the step after the one before it",
                path.display(),
                n + 1
            ),
            None if n + 1 == text.lines().count() => {
                warn!(
                    "{} line {}: incomplete (a kill mid-write?); dropped",
                    path.display(),
                    n + 1
                );
            }
            None => bail!(
                "{} line {}: not a step of these parameters ({})",
                path.display(),
                n + 1,
                spsa.params
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    if kept.len() != text.len() {
        write_atomic(path, kept.as_bytes())?;
    }
    Ok(match last {
        Some((k, theta)) => (k + 1, theta),
        None => (1, start),
    })
}

/// `trainer tune`.
pub fn tune(args: &TuneArgs) -> Result<()> {
    if !matches!(args.player, PlayerSpec::Ember(_)) {
        bail!("tune plays an Ember network against itself: --player ember:PATH or ember:embedded");
    }
    if args.play.tc.is_some() || args.play.movetime.is_some() || args.play.sprt.is_some() {
        bail!("tune plays at fixed --nodes, without --tc, --movetime or --sprt");
    }
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let (setup, spec) = match_setup(&args.play)?;
    let Limit::Nodes(nodes) = spec.limit else {
        bail!("tune plays at fixed --nodes");
    };
    let base = spec.search.clone();
    let names: Vec<String> = args.params.iter().map(|p| p.name.clone()).collect();
    let start: Vec<f64> = args
        .params
        .iter()
        .map(|p| Ok(value_of(&base, &p.name)?.clamp(p.min, p.max)))
        .collect::<Result<_>>()?;
    with_values(&base, &names, &start)?;
    let spsa = Spsa {
        params: args.params.clone(),
        steps: args.steps,
    };
    let (first, mut theta) = resume(&args.out, &spsa, start)?;
    if first > args.steps {
        info!(
            "{} holds all {} steps; theta {}",
            args.out.display(),
            args.steps,
            named(&spsa.params, &theta)
        );
        return Ok(());
    }
    let player = Prepared::new(args.player.clone(), &setup)?;
    info!(
        "tuning {} over {} steps of {} games at {nodes} nodes, from step {first}; theta {}",
        names.join(", "),
        args.steps,
        spec.games,
        named(&spsa.params, &theta)
    );
    for k in first..=args.steps {
        let flips = spsa.flips(args.play.seed, k);
        let (plus, minus) = spsa.perturbed(&theta, k, &flips);
        let searches = [
            with_values(&base, &names, &plus)?,
            with_values(&base, &names, &minus)?,
        ];
        let step_spec = MatchSpec {
            seed: derive_seed(args.play.seed, k, 0),
            ..spec.clone()
        };
        let r = run_match_searched(&player, &player, &setup, &step_spec, &searches, |_| {})?;
        let count = |score: f64| r.games.iter().filter(|g| g.score_a == score).count();
        let (wins, draws, losses) = (count(1.0), count(0.5), count(0.0));
        let result = wins as f64 - losses as f64;
        let next = spsa.step(&theta, k, &flips, result);
        let line = json!({
            "step": k,
            "steps": args.steps,
            "theta": named(&spsa.params, &next),
            "plus": named(&spsa.params, &plus),
            "minus": named(&spsa.params, &minus),
            "c": named(&spsa.params, &(0..names.len()).map(|i| spsa.c(i, k)).collect::<Vec<_>>()),
            "a": named(&spsa.params, &(0..names.len()).map(|i| spsa.a(i, k)).collect::<Vec<_>>()),
            "games": r.games.len(),
            "wins": wins,
            "draws": draws,
            "losses": losses,
            "nodes": nodes,
        });
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args.out)
            .with_context(|| format!("opening {}", args.out.display()))?;
        writeln!(file, "{line}")
            .and_then(|_| file.sync_data())
            .with_context(|| format!("writing {}", args.out.display()))?;
        say(&format!(
            "step {k}/{}: plus side +{wins} ={draws} -{losses}; theta {}",
            args.steps,
            named(&spsa.params, &next)
        ))?;
        theta = next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spsa(steps: u64) -> Spsa {
        Spsa {
            params: vec![
                "cpuct,0.5,5,0.3".parse().unwrap(),
                "fpu_reduction,0,1,0.05,0.004".parse().unwrap(),
            ],
            steps,
        }
    }

    #[test]
    fn parameters_parse_with_bounds_and_gains() {
        let p: TuneParam = "cpuct, 0.5, 5, 0.3".parse().unwrap();
        assert_eq!(
            (p.name.as_str(), p.min, p.max, p.c_end, p.r_end),
            ("cpuct", 0.5, 5.0, 0.3, DEFAULT_R_END)
        );
        for bad in [
            "cpuct",
            "cpuct,5,0.5,0.3",
            "cpuct,0,1,0",
            "cpuct,0,1,x",
            ",0,1,1",
            "a,0,1,1,1,1",
        ] {
            assert!(bad.parse::<TuneParam>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_gains_end_at_c_end_and_r_end() {
        let s = spsa(100);
        assert!((s.c(0, 100) - 0.3).abs() < 1e-12);
        assert!((s.a(1, 100) - 0.004 * 0.05 * 0.05).abs() < 1e-15);
        // Both shrink from step to step, the perturbation more slowly.
        assert!(s.c(0, 1) > s.c(0, 50) && s.a(0, 1) > s.a(0, 50));
        assert!(s.c(0, 1) / s.c(0, 100) < s.a(0, 1) / s.a(0, 100));
    }

    #[test]
    fn a_won_step_moves_theta_towards_the_plus_side_within_bounds() {
        let s = spsa(10);
        let theta = vec![1.745, 0.33];
        let flips = vec![1.0, -1.0];
        let (plus, minus) = s.perturbed(&theta, 1, &flips);
        assert!(plus[0] > theta[0] && minus[0] < theta[0]);
        assert!(plus[1] < theta[1] && minus[1] > theta[1]);
        let next = s.step(&theta, 1, &flips, 3.0);
        assert!(next[0] > theta[0] && next[1] < theta[1], "{next:?}");
        let step0 = s.a(0, 1) / s.c(0, 1) * 3.0;
        assert!((next[0] - theta[0] - step0).abs() < 1e-12);
        let lost = s.step(&theta, 1, &flips, -3.0);
        assert!(lost[0] < theta[0] && lost[1] > theta[1]);
        // Bounds hold however large the result.
        let far = s.step(&theta, 1, &flips, 1e9);
        assert_eq!(far, vec![5.0, 0.0]);
    }

    #[test]
    fn spsa_climbs_a_noisy_objective_to_its_peak() {
        // The plus side "wins" a game pair with a probability that grows with how much
        // closer it is to (3.0, 0.6): the tuner must find the peak from (1.0, 0.1).
        let s = Spsa {
            params: vec![
                "cpuct,0.5,5,0.3,0.05".parse().unwrap(),
                "fpu_reduction,0,1,0.05,0.05".parse().unwrap(),
            ],
            steps: 2000,
        };
        let peak = [3.0, 0.6];
        let f = |x: &[f64]| -((x[0] - peak[0]) / 2.0).powi(2) - ((x[1] - peak[1]) / 0.5).powi(2);
        let mut rng = StdRng::seed_from_u64(5);
        let mut theta = vec![1.0, 0.1];
        for k in 1..=s.steps {
            let flips = s.flips(9, k);
            let (plus, minus) = s.perturbed(&theta, k, &flips);
            let edge = (f(&plus) - f(&minus)) * 20.0;
            let p_win = 1.0 / (1.0 + (-edge).exp());
            let result: f64 = (0..2)
                .map(|_| {
                    if rng.random::<f64>() < p_win {
                        1.0
                    } else {
                        -1.0
                    }
                })
                .sum();
            theta = s.step(&theta, k, &flips, result);
        }
        assert!((theta[0] - peak[0]).abs() < 0.5, "{theta:?}");
        assert!((theta[1] - peak[1]).abs() < 0.15, "{theta:?}");
    }

    #[test]
    fn flips_are_signs_fixed_by_seed_and_step() {
        let s = spsa(10);
        assert_eq!(s.flips(1, 3), s.flips(1, 3));
        assert!((1..50).any(|k| s.flips(1, k) != s.flips(1, 3)));
        assert!(s.flips(2, 3).iter().all(|f| f.abs() == 1.0));
    }

    #[test]
    fn named_fields_are_set_and_unknown_or_non_numeric_ones_refused() {
        let base = SearchParams::for_matches();
        let names = ["cpuct".to_string(), "max_batch".to_string()];
        let p = with_values(&base, &names, &[2.5, 7.6]).unwrap();
        assert_eq!((p.cpuct, p.max_batch), (2.5, 8));
        assert_eq!(p.fpu_reduction, base.fpu_reduction);
        assert!((value_of(&base, "cpuct").unwrap() - f64::from(base.cpuct)).abs() < 1e-6);
        assert!(with_values(&base, &["no_such".to_string()], &[1.0]).is_err());
        assert!(with_values(&base, &["solver".to_string()], &[1.0]).is_err());
        assert!(with_values(&base, &["root_rule".to_string()], &[1.0]).is_err());
    }
}

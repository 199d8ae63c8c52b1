//! Match statistics: score, Elo difference with a 95% interval, likelihood of
//! superiority, and the sequential probability ratio test, from game results
//! (trinomial: wins, draws, losses) or from game pairs (pentanomial: the two games of an
//! opening played with both colours, scored 0, 0.5, 1, 1.5 or 2).
//!
//! Formulas, as the chess-engine testing community uses them:
//! - Elo from an expected score `s` (logistic model): `-400 log10(1/s - 1)`.
//! - Interval: the mean score per game (or per pair) +- 1.96 standard errors, where the
//!   variance is the sample variance of the per-game (per-pair) scores; both ends mapped
//!   to Elo. Pairs keep the correlation between an opening's two games, which is why
//!   fishtest reports the pentanomial interval (narrower when openings are unbalanced).
//! - Likelihood of superiority (chessprogramming wiki, "Match Statistics"):
//!   `LOS = 1/2 (1 + erf((W - L) / sqrt(2 (W + L))))`.
//! - SPRT: the generalised SPRT of M. Van den Bergh's "A practical introduction to the
//!   GSPRT" (as in fishtest): with `s0`, `s1` the expected scores at Elo `elo0`, `elo1`,
//!   `mean` and `var` the sample mean and variance per game (or pair) over `n` of them,
//!   `LLR = n (s1 - s0) (2 mean - s0 - s1) / (2 var)`; stop for H1 at
//!   `ln((1 - beta) / alpha)`, for H0 at `ln(beta / (1 - alpha))`.

/// Elo difference of an expected score in (0, 1) under the logistic model.
pub fn elo_from_score(score: f64) -> f64 {
    -400.0 * (1.0 / score - 1.0).log10()
}

/// An Elo difference for people: signed, whole (`+35`, `-0` shown as `+0`, `+inf`).
pub fn format_elo(elo: f64) -> String {
    // `+ 0.0` turns -0 into 0.
    format!("{:+.0}", elo + 0.0)
}

/// Expected score at an Elo difference under the logistic model.
pub fn score_from_elo(elo: f64) -> f64 {
    1.0 / (1.0 + 10f64.powf(-elo / 400.0))
}

/// Results of a match from one side: wins, draws, losses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Trinomial {
    pub wins: u64,
    pub draws: u64,
    pub losses: u64,
}

/// Game pairs by their score from one side, 0, 0.5, 1, 1.5 or 2 points (index = 2 x score).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pentanomial {
    pub pairs: [u64; 5],
}

/// Score, Elo and its interval from per-unit scores (a game scores 0, 1/2, 1; a pair
/// 0, 1/4, ..., 1 as a fraction of its two games).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Estimate {
    pub units: u64,
    /// Mean score in [0, 1].
    pub score: f64,
    /// Sample variance of one unit's score.
    pub variance: f64,
    pub elo: f64,
    pub elo_low: f64,
    pub elo_high: f64,
}

/// `(value, weight)` pairs -> estimate. Scores of 0 or 1 have no finite Elo: they (and the
/// interval's ends) are kept inside (0, 1) by half a unit of a match one unit longer.
fn estimate(units: &[(f64, u64)]) -> Estimate {
    let n: u64 = units.iter().map(|(_, k)| k).sum();
    if n == 0 {
        return Estimate {
            units: 0,
            score: 0.5,
            variance: 0.0,
            elo: 0.0,
            elo_low: f64::NEG_INFINITY,
            elo_high: f64::INFINITY,
        };
    }
    let nf = n as f64;
    let mean = units.iter().map(|(x, k)| x * *k as f64).sum::<f64>() / nf;
    let variance = units
        .iter()
        .map(|(x, k)| (x - mean).powi(2) * *k as f64)
        .sum::<f64>()
        / nf;
    let eps = 0.5 / (nf + 1.0);
    let clamp = |s: f64| s.clamp(eps, 1.0 - eps);
    // A sample in which every unit scored the same says nothing about its spread: the
    // Bernoulli variance of the clamped score stands in.
    let spread = if variance > 0.0 {
        variance
    } else {
        clamp(mean) * (1.0 - clamp(mean))
    };
    let margin = 1.96 * (spread / nf).sqrt();
    Estimate {
        units: n,
        score: mean,
        variance,
        elo: elo_from_score(clamp(mean)),
        elo_low: elo_from_score(clamp(mean - margin)),
        elo_high: elo_from_score(clamp(mean + margin)),
    }
}

impl Trinomial {
    pub fn games(&self) -> u64 {
        self.wins + self.draws + self.losses
    }

    pub fn add(&mut self, score: f64) {
        if score > 0.75 {
            self.wins += 1;
        } else if score < 0.25 {
            self.losses += 1;
        } else {
            self.draws += 1;
        }
    }

    pub fn estimate(&self) -> Estimate {
        estimate(&[(1.0, self.wins), (0.5, self.draws), (0.0, self.losses)])
    }

    /// Likelihood of superiority: the probability that the side is the stronger, from
    /// wins and losses (draws carry no information about it). 0.5 with no decisive game.
    pub fn los(&self) -> f64 {
        let decisive = (self.wins + self.losses) as f64;
        if decisive == 0.0 {
            return 0.5;
        }
        0.5 * (1.0 + libm::erf((self.wins as f64 - self.losses as f64) / (2.0 * decisive).sqrt()))
    }

    /// The SPRT's log-likelihood ratio of `elo1` against `elo0`, from per-game scores.
    pub fn llr(&self, elo0: f64, elo1: f64) -> f64 {
        llr(&self.estimate(), elo0, elo1)
    }
}

impl Pentanomial {
    pub fn pairs(&self) -> u64 {
        self.pairs.iter().sum()
    }

    /// Adds a pair whose two games scored `a` and `b` (each 0, 0.5 or 1).
    pub fn add(&mut self, a: f64, b: f64) {
        let k = ((a + b) * 2.0).round().clamp(0.0, 4.0) as usize;
        self.pairs[k] += 1;
    }

    pub fn estimate(&self) -> Estimate {
        let units: Vec<(f64, u64)> = self
            .pairs
            .iter()
            .enumerate()
            .map(|(k, &c)| (k as f64 / 4.0, c))
            .collect();
        estimate(&units)
    }

    /// The SPRT's log-likelihood ratio of `elo1` against `elo0`, from per-pair scores.
    pub fn llr(&self, elo0: f64, elo1: f64) -> f64 {
        llr(&self.estimate(), elo0, elo1)
    }
}

fn llr(e: &Estimate, elo0: f64, elo1: f64) -> f64 {
    if e.units == 0 || e.variance <= 0.0 {
        return 0.0;
    }
    let (s0, s1) = (score_from_elo(elo0), score_from_elo(elo1));
    e.units as f64 * (s1 - s0) * (2.0 * e.score - s0 - s1) / (2.0 * e.variance)
}

/// A sequential probability ratio test of `elo0` (H0) against `elo1` (H1).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Sprt {
    pub elo0: f64,
    pub elo1: f64,
    pub alpha: f64,
    pub beta: f64,
}

/// Where an SPRT stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SprtVerdict {
    /// H1 accepted: the difference is at least `elo1` (at the test's error rates).
    H1,
    /// H0 accepted: the difference is at most `elo0`.
    H0,
    Continue,
}

impl Sprt {
    /// `(lower, upper)` LLR bounds.
    pub fn bounds(&self) -> (f64, f64) {
        (
            (self.beta / (1.0 - self.alpha)).ln(),
            ((1.0 - self.beta) / self.alpha).ln(),
        )
    }

    pub fn verdict(&self, llr: f64) -> SprtVerdict {
        let (lo, hi) = self.bounds();
        if llr >= hi {
            SprtVerdict::H1
        } else if llr <= lo {
            SprtVerdict::H0
        } else {
            SprtVerdict::Continue
        }
    }
}

impl std::str::FromStr for Sprt {
    type Err = String;
    /// `elo0,elo1[,alpha,beta]` (alpha and beta default to 0.05).
    fn from_str(s: &str) -> Result<Sprt, String> {
        let parts: Vec<f64> = s
            .split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("--sprt {s:?}: expected elo0,elo1[,alpha,beta]"))?;
        let (elo0, elo1, alpha, beta) = match parts[..] {
            [a, b] => (a, b, 0.05, 0.05),
            [a, b, al, be] => (a, b, al, be),
            _ => return Err(format!("--sprt {s:?}: expected elo0,elo1[,alpha,beta]")),
        };
        if !(elo1 > elo0) || ![elo0, elo1].iter().all(|x| x.is_finite()) {
            return Err(format!("--sprt {s:?}: elo1 must be above elo0"));
        }
        if !(0.0 < alpha && alpha < 0.5 && 0.0 < beta && beta < 0.5) {
            return Err(format!("--sprt {s:?}: alpha and beta must lie in (0, 0.5)"));
        }
        Ok(Sprt {
            elo0,
            elo1,
            alpha,
            beta,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn elo_and_score_are_inverse_and_match_hand_values() {
        // 0.75 = 3:1 odds: 400 log10(3) = 190.849 Elo.
        assert!(close(elo_from_score(0.75), 190.849, 1e-3));
        assert!(close(elo_from_score(0.5), 0.0, 1e-12));
        for elo in [-300.0, -5.0, 0.0, 42.0, 250.0] {
            assert!(close(elo_from_score(score_from_elo(elo)), elo, 1e-9));
        }
    }

    #[test]
    fn elo_is_shown_signed_and_whole() {
        assert_eq!(format_elo(34.86), "+35");
        assert_eq!(format_elo(-0.0), "+0");
        assert_eq!(format_elo(-190.8), "-191");
        assert_eq!(format_elo(f64::INFINITY), "+inf");
        assert_eq!(format_elo(f64::NEG_INFINITY), "-inf");
    }

    #[test]
    fn trinomial_interval_matches_a_hand_computation() {
        // 60 wins, 20 draws, 20 losses: mean 0.7; per-game variance
        // (60*0.09 + 20*0.04 + 20*0.49)/100 = 0.16; se = 0.04; 0.7 +- 0.0784.
        let t = Trinomial {
            wins: 60,
            draws: 20,
            losses: 20,
        };
        let e = t.estimate();
        assert!(close(e.score, 0.7, 1e-12));
        assert!(close(e.variance, 0.16, 1e-12));
        assert!(close(e.elo, elo_from_score(0.7), 1e-9));
        assert!(close(e.elo, 147.19, 0.01));
        assert!(close(e.elo_low, elo_from_score(0.7 - 0.0784), 1e-9));
        assert!(close(e.elo_high, elo_from_score(0.7 + 0.0784), 1e-9));
    }

    #[test]
    fn all_wins_has_a_finite_elo_and_interval() {
        let e = Trinomial {
            wins: 10,
            draws: 0,
            losses: 0,
        }
        .estimate();
        assert!(e.elo.is_finite() && e.elo > 300.0);
        assert!(e.elo_low.is_finite() && e.elo_low < e.elo);
    }

    #[test]
    fn los_matches_a_hand_computation() {
        // W 10, L 5: 1/2 (1 + erf(5 / sqrt(30))) = 0.901647 (erf(0.912871) = 0.803294).
        let t = Trinomial {
            wins: 10,
            draws: 7,
            losses: 5,
        };
        assert!(close(t.los(), 0.901647, 1e-5), "{}", t.los());
        assert_eq!(Trinomial::default().los(), 0.5);
        let even = Trinomial {
            wins: 4,
            draws: 1,
            losses: 4,
        };
        assert!(close(even.los(), 0.5, 1e-12));
    }

    #[test]
    fn pentanomial_interval_uses_the_pair_variance() {
        // Pairs of 0, 0.5, 1, 1.5, 2 points score 0, .25, .5, .75, 1: counts 1, 2, 4, 2, 1.
        // Mean 0.5; variance (1*.25 + 2*.0625 + 0 + 2*.0625 + 1*.25) / 10 = 0.075.
        let p = Pentanomial {
            pairs: [1, 2, 4, 2, 1],
        };
        let e = p.estimate();
        assert!(close(e.score, 0.5, 1e-12));
        assert!(close(e.variance, 0.075, 1e-12));
        let margin = 1.96 * (0.075f64 / 10.0).sqrt();
        assert!(close(e.elo_high, elo_from_score(0.5 + margin), 1e-9));
        let mut q = Pentanomial::default();
        q.add(1.0, 0.5);
        q.add(0.0, 0.0);
        assert_eq!(q.pairs, [1, 0, 0, 1, 0]);
    }

    #[test]
    fn sprt_llr_and_bounds_match_hand_computations() {
        let sprt: Sprt = "0,10".parse().unwrap();
        // ln(0.05/0.95) = -2.944439, ln(0.95/0.05) = 2.944439.
        let (lo, hi) = sprt.bounds();
        assert!(close(lo, -2.944439, 1e-6) && close(hi, 2.944439, 1e-6));
        // 60/20/20 over 100 games: s0 = 0.5, s1 = score_from_elo(10) = 0.514387;
        // LLR = 100 * 0.014387 * (1.4 - 1.014387) / (2 * 0.16) = 1.733713.
        let t = Trinomial {
            wins: 60,
            draws: 20,
            losses: 20,
        };
        let s1 = score_from_elo(10.0);
        let want = 100.0 * (s1 - 0.5) * (1.4 - 0.5 - s1) / 0.32;
        assert!(close(t.llr(0.0, 10.0), want, 1e-9));
        assert!(close(want, 1.733713, 1e-5), "{want}");
        assert_eq!(sprt.verdict(t.llr(0.0, 10.0)), SprtVerdict::Continue);
        assert_eq!(sprt.verdict(3.0), SprtVerdict::H1);
        assert_eq!(sprt.verdict(-3.0), SprtVerdict::H0);
        assert!("10,0".parse::<Sprt>().is_err());
        assert!("0,5,0.6,0.05".parse::<Sprt>().is_err());
        assert_eq!("0,5,0.1,0.2".parse::<Sprt>().unwrap().beta, 0.2);
    }
}

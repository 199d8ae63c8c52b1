//! `metrics.jsonl` (one JSON object per complete iteration) and `progress.svg` (losses,
//! game length and cumulative Elo by iteration), redrawn after every iteration.

use anyhow::{Context, Result};
use ember_engine::files::write_atomic;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IterationMetrics {
    pub iteration: u64,
    /// Mean losses of the iteration's training steps; null when every step was skipped.
    pub loss_policy: Option<f64>,
    pub loss_value: Option<f64>,
    pub loss_l2: Option<f64>,
    pub loss_total: Option<f64>,
    pub lr: f64,
    /// Steps skipped by the f16 loss scaler (inf/NaN gradients).
    pub skipped_steps: usize,
    pub positions: usize,
    pub games: usize,
    pub mean_plies: f64,
    /// Finished games by how they ended (`checkmate`, `max_plies`, ...).
    pub terminations: BTreeMap<String, usize>,
    pub white_wins: usize,
    pub black_wins: usize,
    pub draws: usize,
    pub selfplay_positions_per_s: f64,
    pub evals_per_position: f64,
    pub replay_positions: usize,
    pub train_steps: usize,
    pub train_batch: usize,
    pub train_samples_per_s: f64,
    pub gating_games: usize,
    pub gating_score: f64,
    /// Elo of the candidate over the best network; null when the score is 0 or 1.
    pub gating_elo: Option<f64>,
    pub gating_elo_low: Option<f64>,
    pub gating_elo_high: Option<f64>,
    pub promoted: bool,
    pub best_iteration: u64,
    pub cumulative_elo: f64,
    pub wall_selfplay_s: f64,
    pub wall_train_s: f64,
    pub wall_gating_s: f64,
    pub wall_total_s: f64,
}

/// Reads the metrics of complete iterations. Lines of iterations after `complete` (left
/// by a run killed before it committed) are dropped from the file; a line that does not
/// parse, or repeats an iteration, is moved to `metrics.unreadable.jsonl` beside it with
/// a warning, never lost.
pub fn load_and_trim(path: &Path, complete: u64) -> Result<Vec<IterationMetrics>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut kept: Vec<IterationMetrics> = Vec::new();
    let mut unreadable = String::new();
    let mut dropped = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<IterationMetrics>(line) {
            Ok(m) if m.iteration > complete => {
                log::info!(
                    "{}: dropped the metrics of uncommitted iteration {}",
                    path.display(),
                    m.iteration
                );
                dropped = true;
            }
            Ok(m) if kept.last().is_none_or(|k| k.iteration < m.iteration) => kept.push(m),
            parsed => {
                let why = match parsed {
                    Err(e) => format!("does not parse ({e})"),
                    Ok(m) => format!("repeats iteration {}", m.iteration),
                };
                log::warn!(
                    "{} line {} {why}; moved to {}",
                    path.display(),
                    n + 1,
                    unreadable_path(path).display()
                );
                unreadable.push_str(line);
                unreadable.push('\n');
                dropped = true;
            }
        }
    }
    if !unreadable.is_empty() {
        let aside = unreadable_path(path);
        let mut all = std::fs::read_to_string(&aside).unwrap_or_default();
        all.push_str(&unreadable);
        write_atomic(&aside, all.as_bytes())
            .with_context(|| format!("writing {}", aside.display()))?;
    }
    if dropped || !text.ends_with('\n') {
        write_all(path, &kept)?;
    }
    Ok(kept)
}

/// Where [`load_and_trim`] keeps the lines it could not use.
pub fn unreadable_path(path: &Path) -> std::path::PathBuf {
    path.with_extension("unreadable.jsonl")
}

fn write_all(path: &Path, all: &[IterationMetrics]) -> Result<()> {
    let mut text = String::new();
    for m in all {
        text.push_str(&serde_json::to_string(m)?);
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

/// Rewrites the file with one more line (atomic, so a kill never leaves half a line).
pub fn append(path: &Path, all: &[IterationMetrics]) -> Result<()> {
    write_all(path, all).with_context(|| format!("writing {}", path.display()))
}

/// Draws the three panels into `path` (SVG, atomic).
pub fn plot(path: &Path, all: &[IterationMetrics]) -> Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 960)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let panels = root.split_evenly((3, 1));
        let xs = |f: fn(&IterationMetrics) -> Option<f64>| -> Vec<(f64, f64)> {
            all.iter()
                .filter_map(|m| Some((m.iteration as f64, f(m)?)))
                .filter(|(_, y)| y.is_finite())
                .collect()
        };
        let x_max = all.last().map_or(1.0, |m| m.iteration as f64).max(1.0);
        panel(
            &panels[0],
            "Training loss",
            x_max,
            &[
                ("policy", xs(|m| m.loss_policy), RED),
                ("value", xs(|m| m.loss_value), BLUE),
            ],
        )?;
        panel(
            &panels[1],
            "Mean self-play game length (plies)",
            x_max,
            &[("plies", xs(|m| Some(m.mean_plies)), GREEN)],
        )?;
        panel(
            &panels[2],
            "Cumulative Elo (promoted candidates)",
            x_max,
            &[("Elo", xs(|m| Some(m.cumulative_elo)), MAGENTA)],
        )?;
        root.present().map_err(plot_err)?;
    }
    write_atomic(path, svg.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// A named line: its points (iteration, value) and colour.
type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_max: f64,
    series: &[Series],
) -> Result<()> {
    let ys = series.iter().flat_map(|(_, s, _)| s.iter().map(|p| p.1));
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
        (lo.min(y), hi.max(y))
    });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.1).max(0.05);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..x_max + 0.5, (lo - pad)..(hi + pad))
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("iteration")
        .draw()
        .map_err(plot_err)?;
    for (name, points, color) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the progress plot: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_drops_uncommitted_iterations_and_moves_unreadable_lines_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let line = |i: u64| {
            serde_json::to_string(&IterationMetrics {
                iteration: i,
                ..Default::default()
            })
            .unwrap()
        };
        std::fs::write(
            &path,
            format!(
                "{}\n{}\n{}\n{}\n{{\"iter",
                line(1),
                line(2),
                line(2),
                line(3)
            ),
        )
        .unwrap();
        let kept = load_and_trim(&path, 2).unwrap();
        assert_eq!(
            kept.iter().map(|m| m.iteration).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        let aside = std::fs::read_to_string(dir.path().join("metrics.unreadable.jsonl")).unwrap();
        assert_eq!(aside, format!("{}\n{{\"iter\n", line(2)));
        // Read again: nothing more is moved, and what was moved aside stays.
        load_and_trim(&path, 2).unwrap();
        let again = std::fs::read_to_string(dir.path().join("metrics.unreadable.jsonl")).unwrap();
        assert_eq!(again, aside);
    }

    #[test]
    fn plot_is_an_svg_with_three_panels() {
        let path = std::env::temp_dir().join(format!("ember-plot-unit-{}.svg", std::process::id()));
        let all: Vec<IterationMetrics> = (1..=3)
            .map(|i| IterationMetrics {
                iteration: i,
                loss_policy: Some(8.0 - i as f64),
                mean_plies: 40.0,
                ..Default::default()
            })
            .collect();
        plot(&path, &all).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("Cumulative Elo"));
        std::fs::remove_file(&path).ok();
    }
}

//! `progress.svg`: losses, game length and the score against fixed anchors (the
//! strength curve) by iteration, redrawn after every iteration from the run's metrics.

use anyhow::{Context, Result};
use ember_engine::files::write_atomic;
use ember_engine::pipeline::metrics::IterationMetrics;
use plotters::prelude::*;
use std::path::Path;

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
                (
                    "policy over uniform-legal",
                    xs(|m| m.policy_excess),
                    RGBColor(230, 120, 0),
                ),
            ],
        )?;
        panel(
            &panels[1],
            "Mean self-play game length (plies)",
            x_max,
            &[("plies", xs(|m| Some(m.mean_plies)), GREEN)],
        )?;
        let mut anchors: Vec<String> = Vec::new();
        for m in all {
            for p in &m.strength {
                if !anchors.contains(&p.opponent) {
                    anchors.push(p.opponent.clone());
                }
            }
        }
        let colours = [MAGENTA, CYAN, BLACK, RGBColor(120, 80, 0), RED, BLUE];
        let strength: Vec<(String, Vec<(f64, f64)>, RGBColor)> = anchors
            .iter()
            .zip(colours.iter().cycle())
            .map(|(a, &c)| {
                let points = all
                    .iter()
                    .filter_map(|m| {
                        let p = m.strength.iter().find(|p| &p.opponent == a)?;
                        Some((m.iteration as f64, p.score))
                    })
                    .collect();
                (format!("vs {a}"), points, c)
            })
            .collect();
        let series: Vec<Series> = strength
            .iter()
            .map(|(n, p, c)| (n.as_str(), p.clone(), *c))
            .collect();
        panel(
            &panels[2],
            "Score against fixed anchors (strength games)",
            x_max,
            &series,
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
        assert!(svg.contains("Score against fixed anchors"));
        std::fs::remove_file(&path).ok();
    }
}

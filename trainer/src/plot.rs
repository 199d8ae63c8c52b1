//! `progress.svg`: losses and game length by iteration, and the strength curve (Elo
//! against each fixed anchor, with its 95% interval) by iteration and by wall time,
//! redrawn after every iteration from the run's metrics.
//!
//! Every panel keeps its legend in a column to the right of the data, and the iteration
//! axis has whole-number ticks only.

use anyhow::{Context, Result};
use ember_engine::files::write_atomic;
use ember_engine::pipeline::metrics::IterationMetrics;
use ember_engine::pipeline::strength_stage::StrengthPoint;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// Elo beyond this is drawn at it: a score of 0 or 1 has no finite Elo.
pub const ELO_CLIP: f64 = 600.0;

const WIDTH: u32 = 960;
const PANEL_HEIGHT: u32 = 300;
/// The legend column on the right of every panel.
const LEGEND_WIDTH: u32 = 210;

const COLOURS: [RGBColor; 8] = [
    RGBColor(200, 30, 140),
    RGBColor(0, 150, 170),
    RGBColor(30, 30, 30),
    RGBColor(140, 90, 0),
    RGBColor(220, 40, 40),
    RGBColor(40, 70, 220),
    RGBColor(40, 160, 40),
    RGBColor(230, 120, 0),
];

/// A named line: its points and colour.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    colour: RGBColor,
}

/// One anchor's strength points: (x, Elo, low, high), clipped to [`ELO_CLIP`].
struct EloSeries {
    name: String,
    points: Vec<(f64, f64, f64, f64)>,
    colour: RGBColor,
}

/// Draws the four panels into `path` (SVG, atomic).
pub fn plot(path: &Path, all: &[IterationMetrics]) -> Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 4 * PANEL_HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let panels = root.split_evenly((4, 1));
        let by_iteration = |f: fn(&IterationMetrics) -> Option<f64>| -> Vec<(f64, f64)> {
            all.iter()
                .filter_map(|m| Some((m.iteration as f64, f(m)?)))
                .filter(|(_, y)| y.is_finite())
                .collect()
        };
        let iterations = Axis::iterations(all.last().map_or(1, |m| m.iteration));
        line_panel(
            &panels[0],
            "Training loss",
            &iterations,
            &[
                series("policy", by_iteration(|m| m.loss_policy), COLOURS[4]),
                series("value", by_iteration(|m| m.loss_value), COLOURS[5]),
                series(
                    "policy over uniform-legal",
                    by_iteration(|m| m.policy_excess),
                    COLOURS[7],
                ),
            ],
        )?;
        line_panel(
            &panels[1],
            "Mean self-play game length (plies)",
            &iterations,
            &[series(
                "plies",
                by_iteration(|m| Some(m.mean_plies)),
                COLOURS[6],
            )],
        )?;
        let minutes = wall_minutes(all);
        let elo_title = format!(
            "Elo against fixed anchors, 95% intervals (a score of 0 or 1 drawn at ±{ELO_CLIP:.0})"
        );
        elo_panel(
            &panels[2],
            &elo_title,
            &iterations,
            &strength_series(all, |m, _| m.iteration as f64),
        )?;
        let wall = Axis::wall(minutes.last().copied().unwrap_or(0.0));
        elo_panel(
            &panels[3],
            "The same, by wall time",
            &wall,
            &strength_series(all, |_, i| minutes[i]),
        )?;
        root.present().map_err(plot_err)?;
    }
    write_atomic(path, svg.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

fn series(name: &str, points: Vec<(f64, f64)>, colour: RGBColor) -> Series {
    Series {
        name: name.to_string(),
        points,
        colour,
    }
}

/// Minutes of wall time at the end of each iteration (the run's time so far).
fn wall_minutes(all: &[IterationMetrics]) -> Vec<f64> {
    all.iter()
        .scan(0.0, |total, m| {
            *total += m.wall_total_s.max(0.0);
            Some(*total / 60.0)
        })
        .collect()
}

/// The strength points of every anchor in the order they first appear, at `x(metrics,
/// index)`.
fn strength_series(
    all: &[IterationMetrics],
    x: impl Fn(&IterationMetrics, usize) -> f64,
) -> Vec<EloSeries> {
    let mut anchors: Vec<&str> = Vec::new();
    for p in all.iter().flat_map(|m| &m.strength) {
        if !anchors.contains(&p.opponent.as_str()) {
            anchors.push(&p.opponent);
        }
    }
    anchors
        .iter()
        .zip(COLOURS.iter().cycle())
        .map(|(&anchor, &colour)| EloSeries {
            name: format!("vs {anchor}"),
            points: all
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    let p = m.strength.iter().find(|p| p.opponent == anchor)?;
                    let (elo, low, high) = clipped_elo(p);
                    Some((x(m, i), elo, low, high))
                })
                .collect(),
            colour,
        })
        .collect()
}

/// A point's Elo and interval within ±[`ELO_CLIP`]; a missing (infinite) value takes the
/// clip on the side of its score.
fn clipped_elo(p: &StrengthPoint) -> (f64, f64, f64) {
    let side = if p.score >= 0.5 { ELO_CLIP } else { -ELO_CLIP };
    let clip = |v: Option<f64>, missing: f64| {
        v.filter(|v| v.is_finite())
            .unwrap_or(missing)
            .clamp(-ELO_CLIP, ELO_CLIP)
    };
    let elo = clip(p.elo, side);
    let low = clip(p.elo_low, elo).min(elo);
    let high = clip(p.elo_high, elo).max(elo);
    (elo, low, high)
}

/// An x axis: its range, tick positions and label.
struct Axis {
    max: f64,
    ticks: Vec<f64>,
    label: &'static str,
    /// The step between ticks, which sets the labels' decimals.
    step: f64,
}

impl Axis {
    /// Iterations 0..=last, with whole-number ticks.
    fn iterations(last: u64) -> Axis {
        let max = last.max(1) as f64;
        let step = nice_step(max, 10).max(1.0);
        Axis {
            max,
            ticks: ticks(max, step),
            label: "iteration",
            step,
        }
    }

    /// Minutes 0..=total.
    fn wall(total: f64) -> Axis {
        let max = if total > 0.0 { total } else { 1.0 };
        let step = nice_step(max, 10);
        Axis {
            max,
            ticks: ticks(max, step),
            label: "wall time (minutes)",
            step,
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        // A little room either side, so that the first and last points are not on the frame.
        let pad = self.max * 0.03;
        -pad..self.max + pad
    }

    /// A tick's label; none for a tick between whole numbers on a whole-number axis.
    fn format(&self, x: f64) -> String {
        if decimals_for(self.step) == 0 && (x - x.round()).abs() > 1e-9 {
            return String::new();
        }
        format_at(x, self.step)
    }
}

/// The smallest of 1, 2 or 5 times a power of ten that cuts `0..=max` into at most
/// `most` steps.
fn nice_step(max: f64, most: usize) -> f64 {
    let raw = max / most as f64;
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * power)
}

fn ticks(max: f64, step: f64) -> Vec<f64> {
    (0..)
        .map(|k| k as f64 * step)
        .take_while(|&x| x <= max + step * 1e-9)
        .collect()
}

/// Splits a panel into the chart and the legend column to its right.
fn chart_and_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
) -> (DrawingArea<DB, Shift>, DrawingArea<DB, Shift>) {
    let (width, _) = area.dim_in_pixel();
    area.split_horizontally(width.saturating_sub(LEGEND_WIDTH))
}

/// Names and colours in a column, beside the chart rather than over it.
fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(&str, RGBColor)],
) -> Result<()> {
    for (k, (name, colour)) in entries.iter().enumerate() {
        let y = 50 + 22 * k as i32;
        area.draw(&PathElement::new(
            vec![(8, y), (30, y)],
            colour.stroke_width(2),
        ))
        .map_err(plot_err)?;
        area.draw(&Circle::new((19, y), 3, colour.filled()))
            .map_err(plot_err)?;
        area.draw(&Text::new(
            name.to_string(),
            (36, y - 7),
            ("sans-serif", 14).into_font().color(&BLACK),
        ))
        .map_err(plot_err)?;
    }
    Ok(())
}

/// The y range that holds `values`, with a margin, and the step its labels are written
/// to.
fn y_range(values: impl Iterator<Item = f64>, least_pad: f64) -> (std::ops::Range<f64>, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
        (lo.min(y), hi.max(y))
    });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.1)
        .max(least_pad)
        .max(hi.abs().max(lo.abs()) * 0.05);
    let (lo, hi) = (lo - pad, hi + pad);
    (lo..hi, nice_step(hi - lo, 8))
}

/// The decimals that labels `step` apart need.
fn decimals_for(step: f64) -> usize {
    if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    }
}

/// `v` with as many decimals as `step` needs.
fn format_at(v: f64, step: f64) -> String {
    let decimals = decimals_for(step);
    format!("{v:.decimals$}")
}

fn line_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x: &Axis,
    series: &[Series],
) -> Result<()> {
    let (plot_area, legend_area) = chart_and_legend(area);
    let (y, y_step) = y_range(
        series.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
        0.05,
    );
    // As many labels as `y_step` apart fit, so that the labels plotters places are
    // `y_step` apart and the formatter's decimals suit them.
    let y_labels = ((y.end - y.start) / y_step).floor() as usize + 1;
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(56)
        .build_cartesian_2d(x.range(), y)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc(x.label)
        .x_labels(x.ticks.len())
        .x_label_formatter(&|v| x.format(*v))
        .y_labels(y_labels)
        .y_label_formatter(&|v| format_at(*v, y_step))
        .draw()
        .map_err(plot_err)?;
    for s in series {
        let colour = s.colour;
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(plot_err)?;
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(plot_err)?;
    }
    let entries: Vec<(&str, RGBColor)> =
        series.iter().map(|s| (s.name.as_str(), s.colour)).collect();
    legend(&legend_area, &entries)
}

fn elo_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x: &Axis,
    series: &[EloSeries],
) -> Result<()> {
    let (plot_area, legend_area) = chart_and_legend(area);
    let values = series
        .iter()
        .flat_map(|s| s.points.iter().flat_map(|p| [p.2, p.3]))
        .chain([0.0]);
    let (y, _) = y_range(values, 50.0);
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(56)
        .build_cartesian_2d(x.range(), y)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc(x.label)
        .y_desc("Elo")
        .x_labels(x.ticks.len())
        .x_label_formatter(&|v| x.format(*v))
        .y_label_formatter(&|v| {
            if v.abs() < 0.5 {
                "0".to_string()
            } else {
                format!("{v:+.0}")
            }
        })
        .draw()
        .map_err(plot_err)?;
    // Even odds.
    chart
        .draw_series(LineSeries::new(
            [(x.range().start, 0.0), (x.range().end, 0.0)],
            BLACK.mix(0.4).stroke_width(1),
        ))
        .map_err(plot_err)?;
    // Anchors measured at the same x are spread a little sideways, so that their bars
    // do not hide each other.
    let spread = x.max * 0.006;
    let middle = (series.len() as f64 - 1.0) / 2.0;
    for (k, s) in series.iter().enumerate() {
        let colour = s.colour;
        let shift = (k as f64 - middle) * spread;
        chart
            .draw_series(LineSeries::new(
                s.points.iter().map(|p| (p.0 + shift, p.1)),
                colour.stroke_width(2),
            ))
            .map_err(plot_err)?;
        chart
            .draw_series(s.points.iter().map(|p| {
                ErrorBar::new_vertical(p.0 + shift, p.2, p.1, p.3, colour.stroke_width(1), 6)
            }))
            .map_err(plot_err)?;
        chart
            .draw_series(
                s.points
                    .iter()
                    .map(|p| Circle::new((p.0 + shift, p.1), 3, colour.filled())),
            )
            .map_err(plot_err)?;
    }
    let entries: Vec<(&str, RGBColor)> =
        series.iter().map(|s| (s.name.as_str(), s.colour)).collect();
    legend(&legend_area, &entries)
}

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the progress plot: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(opponent: &str, wins: u64, draws: u64, losses: u64) -> StrengthPoint {
        let games = (wins + draws + losses) as usize;
        let score = (wins as f64 + draws as f64 / 2.0) / games as f64;
        let elo = (score > 0.0 && score < 1.0).then(|| -400.0 * (1.0 / score - 1.0).log10());
        StrengthPoint {
            opponent: opponent.to_string(),
            games,
            wins,
            draws,
            losses,
            score,
            elo,
            elo_low: elo.map(|e| e - 150.0),
            elo_high: elo.map(|e| e + 150.0),
            nodes: 64,
        }
    }

    fn tiny_run() -> Vec<IterationMetrics> {
        (1..=12)
            .map(|i| IterationMetrics {
                iteration: i,
                loss_policy: Some(8.0 - i as f64 * 0.1),
                loss_value: Some(7.5),
                mean_plies: 40.0,
                wall_total_s: 300.0,
                strength: if i % 4 == 0 {
                    vec![
                        point("random", 20, 0, 0),
                        point("greedy", 10 + i / 2, 2, 8 - i / 2),
                        point("minimax:2", 1, 1, 18),
                    ]
                } else {
                    Vec::new()
                },
                ..Default::default()
            })
            .collect()
    }

    fn render(all: &[IterationMetrics]) -> String {
        // Tests run at once: every rendering has its own file.
        static RENDERED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = RENDERED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("ember-plot-unit-{}-{n}.svg", std::process::id()));
        plot(&path, all).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).ok();
        svg
    }

    /// The text of every `<text>` element.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                Some(
                    t.split_once('>')?
                        .1
                        .split_once("</text>")?
                        .0
                        .trim()
                        .to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn the_plot_holds_every_series_in_legends_beside_the_data() {
        let svg = render(&tiny_run());
        assert!(svg.starts_with("<svg"));
        let texts = texts(&svg);
        for name in [
            "Training loss",
            "policy",
            "value",
            "Mean self-play game length (plies)",
            "The same, by wall time",
            "wall time (minutes)",
        ] {
            assert!(texts.iter().any(|t| t == name), "{name} missing: {texts:?}");
        }
        // Each anchor is named once in each strength panel's legend.
        for anchor in ["vs random", "vs greedy", "vs minimax:2"] {
            assert_eq!(texts.iter().filter(|t| *t == anchor).count(), 2, "{anchor}");
        }
        // Three strength points per anchor, each with an error bar, in both panels: the
        // bars of one anchor are drawn in its colour.
        let colour = COLOURS[2];
        let stroke = format!(
            "stroke=\"#{:02X}{:02X}{:02X}\"",
            colour.0, colour.1, colour.2
        );
        assert!(svg.matches(&stroke).count() >= 2 * 3, "minimax:2's bars");
    }

    #[test]
    fn iteration_ticks_are_whole_numbers() {
        let labels = texts(&render(&tiny_run()));
        for want in ["0", "2", "4", "6", "8", "10", "12"] {
            assert!(labels.iter().any(|t| t == want), "tick {want}: {labels:?}");
        }
        assert!(
            !labels.iter().any(|t| t == "5.0" || t == "10.0"),
            "{labels:?}"
        );
        // Two iterations: ticks 0, 1, 2 and nothing between.
        let short: Vec<IterationMetrics> = tiny_run().into_iter().take(2).collect();
        let short = texts(&render(&short));
        assert!(!short.iter().any(|t| t == "0.5" || t == "1.5"), "{short:?}");
    }

    #[test]
    fn scores_of_zero_and_one_are_drawn_at_the_clip() {
        let all = point("random", 20, 0, 0);
        assert_eq!(clipped_elo(&all), (ELO_CLIP, ELO_CLIP, ELO_CLIP));
        let none = point("minimax:3", 0, 0, 20);
        assert_eq!(clipped_elo(&none), (-ELO_CLIP, -ELO_CLIP, -ELO_CLIP));
        let even = point("greedy", 5, 10, 5);
        assert_eq!(clipped_elo(&even), (0.0, -150.0, 150.0));
    }

    #[test]
    fn nice_steps_cut_the_axis_into_at_most_ten() {
        assert_eq!(nice_step(40.0, 10), 5.0);
        assert_eq!(nice_step(12.0, 10), 2.0);
        assert_eq!(nice_step(3.0, 10), 0.5);
        assert_eq!(Axis::iterations(3).ticks, vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(wall_minutes(&tiny_run())[3], 20.0);
        assert_eq!(format_at(7.2, 0.2), "7.2");
        assert_eq!(format_at(40.0, 2.0), "40");
    }
}

//! `switchy-controller plot`: one run's CDRs drawn over time: call rate
//! against its target, concurrent calls (all and per node) against the
//! limit, setup latency p50/p95/p99, failures by cause. SVG from
//! plotters; PNG by rendering that SVG with resvg and a bundled font
//! (DejaVu Sans, `assets/fonts`), so no system font or C library is needed.

use crate::PlotError;
use crate::cdr::Cdr;
use crate::cdr_stats::{ms, pcts, start_of};
use plotters::prelude::*;
use std::collections::BTreeMap;

/// The font PNGs are drawn with.
const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Causes drawn one line each in the failures panel (the most frequent).
const MAX_CAUSES: usize = 6;

/// One second of a run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Second {
    /// Seconds since the run's first call.
    pub t: f64,
    /// Calls launched in this second.
    pub rate: f64,
    /// Moving average of the rate over 5 s.
    pub rate_avg: f64,
    /// Calls up at the end of this second.
    pub erlangs: f64,
    /// Calls up per caller node.
    pub erlangs_per_node: BTreeMap<String, f64>,
    /// Setup latency (p50, p95, p99) of calls launched this second, ms.
    pub setup_ms: Option<(f64, f64, f64)>,
    /// Median answer latency of calls launched this second, ms.
    pub answer_ms: Option<f64>,
    /// Failed calls launched this second.
    pub failed: usize,
    /// The same by hangup cause.
    pub failed_by_cause: BTreeMap<String, usize>,
}

/// Setup latency of a call: on the agent's clock when it has it (µs),
/// else FreeSWITCH's (caller create → answer).
fn setup_of(c: &Cdr) -> Option<f64> {
    ms(c.originate_sent_agent, c.originate_done_agent)
        .or_else(|| ms(c.caller_create, c.caller_answer))
}

/// Per-second series of `cdrs` (one run: a gap between runs would be
/// drawn as seconds with nothing in them).
pub fn per_second(cdrs: &[Cdr]) -> Vec<Second> {
    let Some(t0) = cdrs.iter().filter_map(start_of).min() else {
        return Vec::new();
    };
    let t_end = cdrs
        .iter()
        .filter_map(|c| c.caller_hangup.or(start_of(c)))
        .max()
        .unwrap_or(t0);
    let n = ((t_end - t0) / 1_000_000 + 1).clamp(1, 1_000_000) as usize;
    let mut out: Vec<Second> = (0..n)
        .map(|i| Second {
            t: i as f64,
            ..Default::default()
        })
        .collect();
    let mut setup: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut answer: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut delta = vec![0i64; n + 1];
    let mut node_delta: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for c in cdrs {
        let Some(t) = start_of(c) else { continue };
        let i = (((t - t0) / 1_000_000) as usize).min(n - 1);
        out[i].rate += 1.0;
        if c.failed {
            out[i].failed += 1;
            *out[i]
                .failed_by_cause
                .entry(c.hangup_cause.clone())
                .or_default() += 1;
        }
        setup[i].extend(setup_of(c));
        answer[i].extend(ms(c.callee_answer, c.caller_answer));
        let end = c.caller_hangup.unwrap_or(t).max(t);
        let j = (((end - t0) / 1_000_000) as usize).min(n);
        delta[i] += 1;
        delta[j] -= 1;
        let nd = node_delta
            .entry(c.node.as_str())
            .or_insert_with(|| vec![0; n + 1]);
        nd[i] += 1;
        nd[j] -= 1;
    }
    let mut cur = 0i64;
    let mut node_cur: BTreeMap<&str, i64> = BTreeMap::new();
    for i in 0..n {
        cur += delta[i];
        out[i].erlangs = cur as f64;
        for (node, d) in &node_delta {
            let v = node_cur.entry(node).or_default();
            *v += d[i];
            out[i]
                .erlangs_per_node
                .insert((*node).to_owned(), *v as f64);
        }
        let lo = i.saturating_sub(4);
        out[i].rate_avg = out[lo..=i].iter().map(|s| s.rate).sum::<f64>() / (i - lo + 1) as f64;
        out[i].setup_ms = (!setup[i].is_empty()).then(|| {
            let p = pcts(&mut setup[i]);
            (p.p50, p.p95, p.p99)
        });
        out[i].answer_ms = (!answer[i].is_empty()).then(|| pcts(&mut answer[i]).p50);
    }
    out
}

/// What is known of the run besides its CDRs (its parameters, if the run
/// recorded them).
#[derive(Clone, Debug, Default)]
pub struct RunInfo {
    /// Run id (empty: CDRs with no run).
    pub run_id: String,
    /// Target rate, calls/s.
    pub rate: Option<f64>,
    /// Concurrency limit.
    pub limit: Option<f64>,
    /// Holding time, s.
    pub hold_s: Option<f64>,
    /// Apps and weights, as given.
    pub apps: Option<String>,
    /// When it started (RFC 3339).
    pub started: Option<String>,
}

impl RunInfo {
    /// From a run's recorded parameters (the Originator's config as JSON).
    pub fn from_params(run_id: &str, started_us: Option<i64>, p: &serde_json::Value) -> RunInfo {
        let apps = p["apps"].as_array().map(|a| {
            a.iter()
                .map(|w| format!("{}:{}", w["app"].as_str().unwrap_or("?"), w["weight"]))
                .collect::<Vec<_>>()
                .join(",")
        });
        RunInfo {
            run_id: run_id.to_owned(),
            rate: p["rate"].as_f64(),
            limit: p["limit"].as_f64(),
            hold_s: p["duration"].as_f64(),
            apps: apps.filter(|a| !a.is_empty()),
            started: started_us
                .and_then(|us| u64::try_from(us).ok())
                .and_then(|us| {
                    std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_micros(us))
                })
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        }
    }

    fn title(&self, calls: usize) -> String {
        let mut parts = vec![if self.run_id.is_empty() {
            "switchy".to_owned()
        } else {
            format!("switchy run {}", self.run_id)
        }];
        if let Some(r) = self.rate {
            parts.push(format!("rate {r} cps"));
        }
        if let Some(l) = self.limit {
            parts.push(format!("limit {l}"));
        }
        if let Some(h) = self.hold_s {
            parts.push(format!("hold {h} s"));
        }
        if let Some(a) = &self.apps {
            parts.push(format!("apps {a}"));
        }
        parts.push(format!("{calls} calls"));
        if let Some(s) = &self.started {
            parts.push(format!("started {s}"));
        }
        parts.join(" · ")
    }
}

/// The output format, from the file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.svg`.
    Svg,
    /// `.png`.
    Png,
}

impl Format {
    /// From `path`'s extension.
    pub fn of(path: &std::path::Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "svg" => Some(Format::Svg),
            "png" => Some(Format::Png),
            _ => None,
        }
    }
}

const W: u32 = 1400;
const H: u32 = 1500;

/// A run's plot as SVG text.
pub fn svg(cdrs: &[Cdr], run: &RunInfo) -> Result<String, PlotError> {
    let series = per_second(cdrs);
    if series.is_empty() {
        return Err(PlotError::Empty);
    }
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (W, H)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(&run.title(cdrs.len()), ("sans-serif", 22))?;
        let panels = root.split_evenly((4, 1));
        let tmax = series.last().map_or(1.0, |s| s.t + 1.0);
        let at = |f: &dyn Fn(&Second) -> Option<f64>| -> Vec<Option<(f64, f64)>> {
            series.iter().map(|s| f(s).map(|v| (s.t, v))).collect()
        };
        let all = |f: &dyn Fn(&Second) -> f64| at(&|s| Some(f(s)));
        let palette = [
            BLUE,
            RED,
            GREEN,
            MAGENTA,
            CYAN,
            RGBColor(255, 140, 0),
            BLACK,
        ];
        // 1. Call rate, while launching (the drain after the last launch
        // is not a rate drop).
        let last = series
            .iter()
            .rev()
            .find(|s| s.rate > 0.0)
            .map_or(0.0, |s| s.t);
        let mut lines = vec![
            Series::new(
                "launched per second",
                BLUE,
                at(&|s| (s.t <= last).then_some(s.rate)),
            ),
            Series::new(
                "5 s moving average",
                RED,
                at(&|s| (s.t <= last).then_some(s.rate_avg)),
            ),
        ];
        if let Some(r) = run.rate {
            lines.push(Series::reference(&format!("target {r} cps"), tmax, r));
        }
        panel(&panels[0], "Call rate", "calls/s", tmax, lines)?;
        // 2. Concurrent calls.
        let mut lines = vec![Series::new("all nodes", BLACK, all(&|s| s.erlangs))];
        let nodes: Vec<String> = series
            .last()
            .map(|s| s.erlangs_per_node.keys().cloned().collect())
            .unwrap_or_default();
        if nodes.len() > 1 {
            for (i, n) in nodes.iter().enumerate() {
                lines.push(Series::new(
                    n,
                    palette[i % (palette.len() - 1)],
                    all(&|s| s.erlangs_per_node.get(n).copied().unwrap_or(0.0)),
                ));
            }
        }
        if let Some(l) = run.limit {
            lines.push(Series::reference(&format!("limit {l}"), tmax, l));
        }
        panel(&panels[1], "Concurrent calls", "calls", tmax, lines)?;
        // 3. Setup latency.
        let clock = if cdrs.iter().any(|c| c.originate_sent_agent.is_some()) {
            "originate → answer, agent clock"
        } else {
            "caller create → answer, FreeSWITCH's clock"
        };
        panel(
            &panels[2],
            &format!("Call setup latency ({clock}), per second of launch"),
            "ms",
            tmax,
            vec![
                Series::new("p50", BLUE, at(&|s| s.setup_ms.map(|p| p.0))),
                Series::new(
                    "p95",
                    RGBColor(255, 140, 0),
                    at(&|s| s.setup_ms.map(|p| p.1)),
                ),
                Series::new("p99", RED, at(&|s| s.setup_ms.map(|p| p.2))),
            ],
        )?;
        // 4. Failures by cause.
        let mut causes: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &series {
            for (c, n) in &s.failed_by_cause {
                *causes.entry(c.as_str()).or_default() += n;
            }
        }
        let mut causes: Vec<(&str, usize)> = causes.into_iter().collect();
        causes.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        let mut lines = vec![Series::new(
            "all failures",
            BLACK,
            all(&|s| s.failed as f64),
        )];
        for (i, (c, n)) in causes.iter().take(MAX_CAUSES).enumerate() {
            lines.push(Series::new(
                &format!("{c} ({n})"),
                palette[i % (palette.len() - 1)],
                all(&|s| s.failed_by_cause.get(*c).copied().unwrap_or(0) as f64),
            ));
        }
        let title = if causes.is_empty() {
            "Failed calls per second (none)".to_owned()
        } else {
            "Failed calls per second, by hangup cause".to_owned()
        };
        panel(&panels[3], &title, "calls/s", tmax, lines)?;
        root.present()?;
    }
    Ok(text)
}

/// A run's plot as PNG bytes (the SVG rendered with the bundled font).
pub fn png(cdrs: &[Cdr], run: &RunInfo) -> Result<Vec<u8>, PlotError> {
    let text = svg(cdrs, run)?;
    let mut opt = resvg::usvg::Options {
        font_family: "DejaVu Sans".into(),
        ..Default::default()
    };
    {
        let db = opt.fontdb_mut();
        db.load_font_data(FONT.to_vec());
        db.set_sans_serif_family("DejaVu Sans");
    }
    let tree = resvg::usvg::Tree::from_str(&text, &opt)
        .map_err(|e| PlotError::Draw(format!("SVG not readable: {e}")))?;
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| PlotError::Draw("empty image".into()))?;
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    pixmap
        .encode_png()
        .map_err(|e| PlotError::Draw(format!("PNG encoding failed: {e}")))
}

/// Writes a run's plot to `path` (SVG or PNG by its extension).
pub fn write(cdrs: &[Cdr], run: &RunInfo, path: &std::path::Path) -> Result<(), PlotError> {
    let bytes = match Format::of(path) {
        Some(Format::Svg) => svg(cdrs, run)?.into_bytes(),
        Some(Format::Png) => png(cdrs, run)?,
        None => {
            return Err(PlotError::Draw(format!(
                "{}: name the file .svg or .png",
                path.display()
            )));
        }
    };
    std::fs::write(path, bytes)
        .map_err(|e| PlotError::Draw(format!("cannot write {}: {e}", path.display())))
}

/// One line of a panel: points with gaps (None) where there is no data,
/// drawn as separate segments so nothing is joined across a gap.
struct Series {
    label: String,
    color: RGBColor,
    points: Vec<Option<(f64, f64)>>,
    dashed: bool,
}

impl Series {
    fn new(label: &str, color: RGBColor, points: Vec<Option<(f64, f64)>>) -> Series {
        Series {
            label: label.to_owned(),
            color,
            points,
            dashed: false,
        }
    }

    fn reference(label: &str, tmax: f64, y: f64) -> Series {
        Series {
            label: label.to_owned(),
            color: RGBColor(120, 120, 120),
            points: vec![Some((0.0, y)), Some((tmax, y))],
            dashed: true,
        }
    }

    fn segments(&self) -> Vec<Vec<(f64, f64)>> {
        let mut out: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for p in &self.points {
            match p {
                Some(p) => out.last_mut().map_or((), |s| s.push(*p)),
                None if out.last().is_some_and(|s| !s.is_empty()) => out.push(Vec::new()),
                None => {}
            }
        }
        out.retain(|s| !s.is_empty());
        out
    }
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    name: &str,
    unit: &str,
    tmax: f64,
    lines: Vec<Series>,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let ymax = lines
        .iter()
        .flat_map(|s| s.points.iter().flatten().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(name, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(65)
        .build_cartesian_2d(0f64..tmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the run's first call")
        .y_desc(unit)
        .label_style(("sans-serif", 14))
        .draw()?;
    for s in lines {
        let color = s.color;
        let style = color.stroke_width(if s.dashed { 1 } else { 2 });
        let mut first = true;
        for seg in s.segments() {
            let drawn = if s.dashed {
                chart.draw_series(DashedLineSeries::new(seg, 8, 6, style))?
            } else if seg.len() == 1 {
                chart.draw_series(seg.into_iter().map(|p| Circle::new(p, 2, color.filled())))?
            } else {
                chart.draw_series(LineSeries::new(seg, style))?
            };
            if first {
                drawn
                    .label(s.label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
                first = false;
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cdr(i: i64, node: &str, failed: Option<&str>) -> Cdr {
        let t = 1_796_000_000_000_000 + i * 100_000;
        Cdr {
            call_id: format!("c{i}"),
            node: node.into(),
            caller_req_originate: Some(t),
            caller_create: Some(t + 1_000),
            caller_answer: failed.is_none().then_some(t + 20_000),
            caller_hangup: Some(t + 2_000_000),
            originate_sent_agent: Some(t + 500),
            originate_done_agent: failed.is_none().then_some(t + 20_500 + (i % 10) * 1000),
            failed: failed.is_some(),
            hangup_cause: failed.unwrap_or("NORMAL_CLEARING").into(),
            ..Cdr::default()
        }
    }

    fn run() -> (Vec<Cdr>, RunInfo) {
        let cdrs: Vec<Cdr> = (0..200)
            .map(|i| {
                let node = if i % 2 == 0 { "fs1" } else { "fs2" };
                cdr(i, node, (i % 25 == 0).then_some("USER_BUSY"))
            })
            .collect();
        let params = serde_json::json!({"rate": 10.0, "limit": 30, "duration": 2.0,
            "apps": [{"app": "Park", "weight": 1}]});
        (
            cdrs,
            RunInfo::from_params("r1", Some(1_796_000_000_000_000), &params),
        )
    }

    #[test]
    fn series_split_by_node_and_cause_and_gaps_are_not_joined() {
        let (cdrs, _) = run();
        let s = per_second(&cdrs);
        assert_eq!(s[0].rate, 10.0);
        assert_eq!(s[5].erlangs_per_node.get("fs1"), Some(&10.0));
        assert_eq!(s[5].erlangs, 20.0);
        assert_eq!(s[0].failed_by_cause.get("USER_BUSY"), Some(&1));
        let p = s[3].setup_ms.expect("setup");
        assert!(p.0 <= p.1 && p.1 <= p.2 && p.0 >= 20.0, "{p:?}");
        let line = Series::new(
            "x",
            BLUE,
            vec![
                Some((0.0, 1.0)),
                Some((1.0, 1.0)),
                None,
                None,
                Some((4.0, 2.0)),
            ],
        );
        assert_eq!(line.segments().len(), 2);
    }

    #[test]
    fn png_is_an_image_with_the_title_drawn() {
        let (cdrs, info) = run();
        let svg = svg(&cdrs, &info).expect("svg");
        assert!(
            svg.contains(
                "switchy run r1 · rate 10 cps · limit 30 · hold 2 s · apps Park:1 · 200 calls"
            ),
            "title"
        );
        assert!(svg.contains("target 10 cps") && svg.contains("limit 30"));
        assert!(svg.contains("USER_BUSY (8)"));
        let png = png(&cdrs, &info).expect("png");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let w = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
        let h = u32::from_be_bytes([png[20], png[21], png[22], png[23]]);
        assert_eq!((w, h), (W, H));
        // The title was drawn with the bundled font: dark pixels in the
        // top band, where there are no lines, only the title's glyphs.
        let img = resvg::tiny_skia::Pixmap::decode_png(&png).expect("decode");
        let dark = (0..W * 24)
            .filter(|i| img.pixels()[*i as usize].red() < 100)
            .count();
        assert!(dark > 500, "{dark} dark pixels in the title band");
    }
}

//! Charts drawn as inline SVG: the histogram of effective rewards, the mean reward per role over
//! time, a triplet's reward split by source, and a span's bar in the trace waterfall. Geometry is
//! written in SVG attributes (the pages allow no inline style); colours come from the stylesheet,
//! so both themes apply. Each chart carries a text alternative and its numbers in a table.

use maud::{Markup, html};
use rltrace_core::time::Micros;

use super::page::{count, when};

const W: f64 = 640.0;
const H: f64 = 220.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 12.0;

fn plot_w() -> f64 {
    W - LEFT - 12.0
}

fn plot_h() -> f64 {
    H - TOP - BOTTOM
}

/// A histogram of rewards over [0, 1]; `max` is the top of the y axis (shared by charts shown
/// side by side).
pub fn histogram(label: &str, bins: &[u64], max: u64, class: &str) -> Markup {
    let n = bins.len().max(1);
    let max = max.max(1) as f64;
    let bw = plot_w() / n as f64;
    let total: u64 = bins.iter().sum();
    html! {
        figure class="chart" {
            svg viewBox={ "0 0 " (W) " " (H) } role="img" aria-label={ (label) ": " (count(total)) " rewarded triplets in " (n) " bins" } {
                line class="axis" x1=(LEFT) y1=(TOP + plot_h()) x2=(LEFT + plot_w()) y2=(TOP + plot_h()) {}
                line class="axis" x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(TOP + plot_h()) {}
                text class="tick" x=(LEFT - 6.0) y=(TOP + 4.0) text-anchor="end" { (count(max as u64)) }
                text class="tick" x=(LEFT - 6.0) y=(TOP + plot_h()) text-anchor="end" { "0" }
                @for (i, &c) in bins.iter().enumerate() {
                    @let h = plot_h() * c as f64 / max;
                    @let (lo, hi) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                    rect class={ "bar " (class) } x=(LEFT + i as f64 * bw + 1.0) y=(TOP + plot_h() - h) width=((bw - 2.0).max(1.0)) height=(h) {
                        title { (format!("{lo:.2}–{hi:.2}: {} triplets", count(c))) }
                    }
                }
                @for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
                    text class="tick" x=(LEFT + tick * plot_w()) y=(H - 8.0) text-anchor="middle" { (format!("{tick}")) }
                }
            }
            figcaption { (label) }
            details class="data" {
                summary { "Data" }
                table {
                    thead { tr { th scope="col" { "Reward" } th scope="col" class="num" { "Triplets" } } }
                    tbody {
                        @for (i, &c) in bins.iter().enumerate() {
                            tr { td { (format!("{:.2}–{:.2}", i as f64 / n as f64, (i + 1) as f64 / n as f64)) } td class="num" { (count(c)) } }
                        }
                    }
                }
            }
        }
    }
}

/// One role's line: mean reward per time bucket.
pub struct Series<'a> {
    /// Legend label.
    pub label: &'a str,
    /// One value per bucket (`None`: a gap).
    pub values: &'a [Option<f64>],
}

/// Lines of mean reward (0 to 1) over time buckets starting at `starts`, the last ending at `end`.
pub fn lines(label: &str, starts: &[Micros], end: Micros, series: &[Series<'_>]) -> Markup {
    let n = starts.len().max(1);
    let x = |i: usize| LEFT + plot_w() * (i as f64 + 0.5) / n as f64;
    let y = |v: f64| TOP + plot_h() * (1.0 - v.clamp(0.0, 1.0));
    html! {
        figure class="chart" {
            svg viewBox={ "0 0 " (W) " " (H) } role="img" aria-label={ (label) ": " (series.len()) " roles over " (n) " time buckets" } {
                line class="axis" x1=(LEFT) y1=(TOP + plot_h()) x2=(LEFT + plot_w()) y2=(TOP + plot_h()) {}
                line class="axis" x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(TOP + plot_h()) {}
                @for v in [0.0, 0.5, 1.0] {
                    line class="grid" x1=(LEFT) y1=(y(v)) x2=(LEFT + plot_w()) y2=(y(v)) {}
                    text class="tick" x=(LEFT - 6.0) y=(y(v) + 4.0) text-anchor="end" { (format!("{v}")) }
                }
                @if let Some(first) = starts.first() {
                    text class="tick" x=(LEFT) y=(H - 8.0) text-anchor="start" { (when(Some(*first)).get(..16).unwrap_or_default()) }
                    text class="tick" x=(LEFT + plot_w()) y=(H - 8.0) text-anchor="end" { (when(Some(end)).get(..16).unwrap_or_default()) }
                }
                @for (k, s) in series.iter().enumerate() {
                    @for segment in segments(s.values) {
                        @if segment.len() > 1 {
                            polyline class={ "line s" (k % 8) } points=(segment.iter().map(|&(i, v)| format!("{:.1},{:.1}", x(i), y(v))).collect::<Vec<_>>().join(" ")) {}
                        }
                        @for &(i, v) in &segment {
                            circle class={ "dot s" (k % 8) } cx=(format!("{:.1}", x(i))) cy=(format!("{:.1}", y(v))) r="3" {
                                title { (s.label) ": " (format!("{v:.3}")) " from " (when(starts.get(i).copied())) }
                            }
                        }
                    }
                }
            }
            figcaption { (label) }
            ul class="legend" {
                @for (k, s) in series.iter().enumerate() {
                    li { svg class="swatch" viewBox="0 0 10 10" aria-hidden="true" { rect class={ "bar s" (k % 8) } x="0" y="0" width="10" height="10" {} } (s.label) }
                }
            }
            details class="data" {
                summary { "Data" }
                table {
                    thead { tr { th scope="col" { "From" } @for s in series { th scope="col" class="num" { (s.label) } } } }
                    tbody {
                        @for (i, t) in starts.iter().enumerate() {
                            tr {
                                td { (when(Some(*t))) }
                                @for s in series { td class="num" { (super::page::reward(s.values.get(i).copied().flatten())) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Runs of consecutive present values, as (bucket, value).
fn segments(values: &[Option<f64>]) -> Vec<Vec<(usize, f64)>> {
    let mut out: Vec<Vec<(usize, f64)>> = Vec::new();
    let mut cur = Vec::new();
    for (i, v) in values.iter().enumerate() {
        match v {
            Some(v) => cur.push((i, *v)),
            None if !cur.is_empty() => out.push(std::mem::take(&mut cur)),
            None => {}
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A triplet's effective reward as a bar split by source: each source's segment is its share of
/// the weighted mean (`weight * value / total weight`), so the segments add up to the reward.
pub fn shares(parts: &[(String, f64, f64)]) -> Markup {
    let total_w: f64 = parts.iter().map(|p| p.2).sum();
    let mut x = 0.0;
    let placed: Vec<(&str, f64, f64, f64, f64)> = parts
        .iter()
        .map(|(source, value, weight)| {
            let width = if total_w > 0.0 { 100.0 * weight * value / total_w } else { 0.0 };
            let at = x;
            x += width;
            (source.as_str(), *value, *weight, at, width)
        })
        .collect();
    html! {
        svg class="shares" viewBox="0 0 100 8" preserveAspectRatio="none" role="img"
            aria-label={ @for (i, (s, v, w)) in parts.iter().enumerate() { @if i > 0 { ", " } (s) " " (format!("{v:.2}")) " weight " (w) } } {
            rect class="track" x="0" y="0" width="100" height="8" {}
            @for (k, (source, value, weight, at, width)) in placed.iter().enumerate() {
                rect class={ "bar s" (k % 8) } x=(format!("{at:.2}")) y="0" width=(format!("{width:.2}")) height="8" {
                    title { (source) ": " (format!("{value:.3}")) " × weight " (weight) }
                }
            }
        }
    }
}

/// One span's bar in the waterfall: `[start, end]` within the trace's `[t0, t1]` (nanoseconds).
pub fn span_bar(t0: i64, t1: i64, start: i64, end: i64, triplet: bool, error: bool) -> Markup {
    let span = (t1 - t0).max(1) as f64;
    let x = 1000.0 * (start - t0).max(0) as f64 / span;
    let w = (1000.0 * (end - start).max(0) as f64 / span).max(2.0);
    let class = match (triplet, error) {
        (_, true) => "bar err",
        (true, false) => "bar trip",
        _ => "bar span",
    };
    html! {
        svg class="wf" viewBox="0 0 1000 10" preserveAspectRatio="none" aria-hidden="true" {
            rect class=(class) x=(format!("{x:.1}")) y="1" width=(format!("{w:.1}")) height="8" {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_split_at_gaps() {
        assert_eq!(segments(&[Some(0.1), None, Some(0.2), Some(0.3), None]), vec![vec![(0, 0.1)], vec![(2, 0.2), (3, 0.3)]]);
        assert!(segments(&[None, None]).is_empty());
    }

    #[test]
    fn charts_escape_labels() {
        let m = lines("x", &[0, 10], 20, &[Series { label: "<b>role</b>", values: &[Some(0.5), Some(0.6)] }]).into_string();
        assert!(m.contains("&lt;b&gt;role&lt;/b&gt;") && !m.contains("<b>role"));
        let h = histogram("h", &[1, 2, 3], 3, "cur").into_string();
        assert_eq!(h.matches("<rect").count(), 3);
        let s = shares(&[("local".into(), 0.5, 1.0), ("hitl".into(), 1.0, 1.0)]).into_string();
        assert!(s.contains("width=\"25.00\"") && s.contains("width=\"50.00\""), "{s}");
    }
}

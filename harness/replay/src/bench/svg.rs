//! The picture of a [`BenchReport`]: a hand-written SVG with the latency
//! histogram of the filter and of the floor, and the per-callback breakdown
//! (median wall time per call, filter against floor).

use super::{BenchReport, Bucket};
use std::fmt::Write;

const W: f64 = 900.0;
const PLOT_H: f64 = 220.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;

pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn ns_label(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// Draws both histograms on one log-scaled time axis.
fn histograms(o: &mut String, top: f64, series: &[(&str, &str, &[Bucket])]) {
    let all = series.iter().flat_map(|(_, _, b)| b.iter());
    let (lo, hi) = all.fold((f64::MAX, 1.0f64), |(lo, hi), b| {
        (lo.min(b.le_ns as f64), hi.max(b.le_ns as f64))
    });
    let (lo, hi) = ((lo.max(1.0) / 1.2).ln(), (hi * 1.2).ln());
    let plot_w = W - LEFT - RIGHT;
    let x = |ns: f64| LEFT + (ns.max(1.0).ln() - lo) / (hi - lo).max(1e-9) * plot_w;
    let frac_max = series
        .iter()
        .map(|(_, _, b)| {
            let total: u64 = b.iter().map(|b| b.count).sum();
            b.iter()
                .map(|b| b.count as f64 / total.max(1) as f64)
                .fold(0.0, f64::max)
        })
        .fold(0.0, f64::max)
        .max(1e-9);
    let _ = writeln!(
        o,
        r#"<text x="{LEFT}" y="{:.0}" class="h">Latency per request (share of requests, log time axis)</text>"#,
        top - 8.0
    );
    let base = top + PLOT_H;
    let _ = writeln!(
        o,
        r##"<line x1="{LEFT}" y1="{base}" x2="{:.0}" y2="{base}" stroke="#444"/>"##,
        W - RIGHT
    );
    // Decade ticks.
    let mut t = 10f64.powf((lo.exp()).log10().floor());
    while t <= hi.exp() {
        if t >= lo.exp() {
            let xt = x(t);
            let _ = writeln!(
                o,
                r##"<line x1="{xt:.1}" y1="{top}" x2="{xt:.1}" y2="{base}" stroke="#ddd"/><text x="{xt:.1}" y="{:.0}" text-anchor="middle">{}</text>"##,
                base + 14.0,
                ns_label(t)
            );
        }
        t *= 10.0;
    }
    for (name, colour, buckets) in series {
        let total: u64 = buckets.iter().map(|b| b.count).sum();
        let mut prev = buckets.first().map_or(1.0, |b| b.le_ns as f64 / 1.19);
        for b in buckets.iter() {
            let (x0, x1) = (x(prev), x(b.le_ns as f64));
            prev = b.le_ns as f64;
            if b.count == 0 {
                continue;
            }
            let h = b.count as f64 / total.max(1) as f64 / frac_max * PLOT_H;
            let _ = writeln!(
                o,
                r#"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{colour}" fill-opacity="0.55"><title>{}: {} requests &lt;= {}</title></rect>"#,
                base - h,
                (x1 - x0).max(1.0),
                esc(name),
                b.count,
                ns_label(b.le_ns as f64)
            );
        }
    }
    for (i, (name, colour, _)) in series.iter().enumerate() {
        let ly = top + 12.0 + 16.0 * i as f64;
        let _ = writeln!(
            o,
            r#"<rect x="{:.0}" y="{:.0}" width="10" height="10" fill="{colour}"/><text x="{:.0}" y="{:.0}">{}</text>"#,
            W - 330.0,
            ly - 9.0,
            W - 315.0,
            ly,
            esc(name)
        );
    }
}

impl BenchReport {
    /// The report as a standalone SVG document.
    pub fn svg(&self) -> String {
        let f = &self.filter;
        let cb_rows = f.callbacks.len().max(1) as f64;
        let cb_top = 80.0 + PLOT_H + 70.0;
        let height = cb_top + 30.0 + cb_rows * 24.0 + 40.0;
        let mut o = String::new();
        let _ = writeln!(
            o,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height:.0}" viewBox="0 0 {W} {height:.0}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(
            o,
            "<style>.t{{font-size:15px;font-weight:bold}} .h{{font-size:13px;font-weight:bold}}</style>"
        );
        let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            o,
            r#"<text x="{LEFT}" y="24" class="t">tollgate bench: {}</text>"#,
            esc(&f.filter)
        );
        let _ = writeln!(
            o,
            r#"<text x="{LEFT}" y="42">{} requests x {} passes from {}; p50 {} (floor {}), p99 {}, above floor {}</text>"#,
            self.requests_per_pass,
            self.passes,
            esc(&self.traffic),
            ns_label(f.request.p50_ns as f64),
            ns_label(self.floor.request.p50_ns as f64),
            ns_label(f.request.p99_ns as f64),
            ns_label(self.above_floor_p50_ns as f64),
        );
        let mut series: Vec<(&str, &str, &[Bucket])> = vec![
            (f.filter.as_str(), "#d9480f", &f.histogram),
            ("floor (no-op module)", "#1c7ed6", &self.floor.histogram),
        ];
        if let Some(c) = &self.comparison {
            series.push((c.baseline.as_str(), "#2f9e44", &c.baseline_bench.histogram));
        }
        histograms(&mut o, 80.0, &series);

        // Per-callback breakdown: horizontal bars of p50 per call, floor overlaid.
        let _ = writeln!(
            o,
            r#"<text x="{LEFT}" y="{:.0}" class="h">Per callback: median wall time per call (orange: filter, blue: floor)</text>"#,
            cb_top - 8.0
        );
        let label_w = 190.0;
        let bar_x = LEFT + label_w;
        let bar_w = W - bar_x - RIGHT - 160.0;
        let max = f
            .callbacks
            .iter()
            .map(|c| c.latency.p50_ns.max(c.floor_p50_ns))
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        for (i, c) in f.callbacks.iter().enumerate() {
            let y = cb_top + 10.0 + 24.0 * i as f64;
            let wf = c.latency.p50_ns as f64 / max * bar_w;
            let wb = c.floor_p50_ns as f64 / max * bar_w;
            let _ = writeln!(
                o,
                r##"<text x="{:.0}" y="{:.0}" text-anchor="end">{}</text><rect x="{bar_x:.0}" y="{:.0}" width="{wf:.1}" height="14" fill="#d9480f"/><rect x="{bar_x:.0}" y="{:.0}" width="{wb:.1}" height="6" fill="#1c7ed6"/><text x="{:.0}" y="{:.0}">{} (floor {}), {} instr/call</text>"##,
                bar_x - 6.0,
                y + 11.0,
                esc(&c.callback),
                y,
                y + 4.0,
                bar_x + bar_w + 8.0,
                y + 11.0,
                ns_label(c.latency.p50_ns as f64),
                ns_label(c.floor_p50_ns as f64),
                c.instructions / c.calls.max(1)
            );
        }
        let _ = writeln!(o, "</svg>");
        o
    }
}

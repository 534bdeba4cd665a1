//! The report as one self-contained HTML page ([`BenchReport::html`]):
//! the tables of the terminal report (setup, memory, per request, per
//! callback, deterministic counts, baseline) and the SVG picture inline.
//! No script, no external stylesheet or font: the file can be mailed or
//! attached to a CI run as is.

use super::svg::esc;
use super::{BenchReport, FilterBench, Latency};
use std::fmt::Write;

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:0.5em 0 1.5em}\
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:right}\
th:first-child,td:first-child{text-align:left}\
th{background:#f2f2f2}\
.regression{color:#b00;font-weight:bold}";

fn kib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / 1024.0)
}

fn latency_row(o: &mut String, name: &str, l: &Latency) {
    let _ = writeln!(
        o,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{}</td></tr>",
        esc(name),
        l.p50_ns,
        l.p90_ns,
        l.p99_ns,
        l.p999_ns,
        l.max_ns,
        l.mean_ns,
        l.count
    );
}

fn setup_row(o: &mut String, role: &str, f: &FilterBench) {
    let _ = writeln!(
        o,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2}{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        esc(role),
        esc(&f.filter),
        f.wasm_bytes,
        f.compile_us / 1000.0,
        if f.compiled_from_cache {
            " (cache)"
        } else {
            ""
        },
        f.vm_start_us,
        f.streams,
        kib(f.memory_start),
        kib(f.memory_end),
        kib(f.memory_peak),
        f.failed_requests
    );
}

impl BenchReport {
    /// The report as a standalone HTML document: the tables and the SVG
    /// picture ([`BenchReport::svg`]) inline.
    pub fn html(&self) -> String {
        let f = &self.filter;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>tollgate bench: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>",
            esc(&f.filter)
        );
        let _ = writeln!(o, "<h1>tollgate bench: {}</h1>", esc(&f.filter));
        let _ = writeln!(
            o,
            "<p>Traffic {}: {} requests per pass &times; {} passes, streams = {} in flight. \
             Median {} ns per request, {} ns above the floor (the no-op module).</p>",
            esc(&self.traffic),
            self.requests_per_pass,
            self.passes,
            f.streams,
            f.request.p50_ns,
            self.above_floor_p50_ns
        );

        let _ = writeln!(o, "<h2>Setup and memory</h2>\n<table id=\"setup\">");
        let _ = writeln!(
            o,
            "<tr><th>role</th><th>module</th><th>bytes</th><th>compile (ms)</th><th>VM creation (&micro;s)</th>\
             <th>streams</th><th>memory start (KiB)</th><th>memory end (KiB)</th><th>memory peak (KiB)</th><th>failed requests</th></tr>"
        );
        setup_row(&mut o, "filter", f);
        setup_row(&mut o, "floor", &self.floor);
        if let Some(c) = &self.comparison {
            setup_row(&mut o, "baseline", &c.baseline_bench);
        }
        let _ = writeln!(o, "</table>");

        let _ = writeln!(o, "<h2>Per request (ns)</h2>\n<table id=\"requests\">");
        let _ = writeln!(
            o,
            "<tr><th></th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>mean</th><th>samples</th></tr>"
        );
        latency_row(&mut o, "filter", &f.request);
        latency_row(&mut o, "floor (no-op module)", &self.floor.request);
        if let Some(c) = &self.comparison {
            latency_row(&mut o, "baseline", &c.baseline_bench.request);
        }
        let _ = writeln!(o, "</table>");

        let _ = writeln!(o, "<h2>Per callback</h2>\n<table id=\"callbacks\">");
        let _ = writeln!(
            o,
            "<tr><th>callback</th><th>calls (counting pass)</th><th>p50 (ns)</th><th>p99 (ns)</th><th>max (ns)</th>\
             <th>floor p50 (ns)</th><th>wasm instructions (counting pass)</th></tr>"
        );
        for c in &f.callbacks {
            let _ = writeln!(
                o,
                "<tr class=\"callback\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.callback),
                c.calls,
                c.latency.p50_ns,
                c.latency.p99_ns,
                c.latency.max_ns,
                c.floor_p50_ns,
                c.instructions
            );
        }
        let _ = writeln!(o, "</table>");

        let n = self.counted_requests.max(1) as f64;
        let _ = writeln!(
            o,
            "<h2>Per request, deterministic</h2>\n<table id=\"counts\">\n\
             <tr><th></th><th>wasm instructions</th><th>host calls</th><th>bytes in</th><th>bytes out</th></tr>"
        );
        for (name, k) in [("filter", &f.counts), ("floor", &self.floor.counts)] {
            let _ = writeln!(
                o,
                "<tr><td>{name}</td><td>{:.0}</td><td>{:.1}</td><td>{:.0}</td><td>{:.0}</td></tr>",
                k.instructions as f64 / n,
                k.host_calls as f64 / n,
                k.bytes_in as f64 / n,
                k.bytes_out as f64 / n
            );
        }
        let _ = writeln!(o, "</table>");

        if let Some(c) = &self.comparison {
            let verdict = match (c.threshold_pct, c.regression) {
                (Some(t), true) => {
                    format!(" <span class=\"regression\">REGRESSION past {t}%</span>")
                }
                (Some(t), false) => format!(": within {t}%"),
                (None, _) => String::new(),
            };
            let _ = writeln!(
                o,
                "<h2>Baseline</h2>\n<p>vs {}: {:.3}&times; (95% CI {:.3}..{:.3}){verdict}</p>",
                esc(&c.baseline),
                c.ratio,
                c.ci_low,
                c.ci_high
            );
        }

        let _ = writeln!(o, "<h2>Latency and callbacks</h2>");
        o.push_str(&self.svg());
        let _ = writeln!(o, "</body>\n</html>");
        o
    }
}

//! The result table.

use super::{Run, Workload};
use std::fmt::Write as _;

pub(crate) fn us(ns: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let v = ns as f64 / 1000.0;
    format!("{v:.2}")
}

pub(crate) fn kiops(r: &Run) -> String {
    format!("{:.1}k", r.iops() / 1000.0)
}

pub(crate) struct Row {
    pub(crate) w: Workload,
    pub(crate) threads: usize,
    /// The engine's backing kind.
    pub(crate) backing: &'static str,
    pub(crate) engine: Option<Run>,
    pub(crate) baseline: Option<Run>,
}

pub(crate) fn print_table(rows: &[Row], markdown: bool) -> String {
    let mut s = String::new();
    let header = [
        "workload",
        "thr",
        "backing",
        "engine IOPS",
        "p50 µs",
        "p99 µs",
        "CPU µs",
        "bg CPU µs",
        "wb %",
        "baseline IOPS",
        "p50 µs",
        "p99 µs",
        "CPU µs",
        "IOPS ratio",
        "CPU ratio",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let side = |x: &Option<Run>| match x {
                Some(x) => vec![
                    kiops(x),
                    us(x.hist.quantile(0.5)),
                    us(x.hist.quantile(0.99)),
                    format!("{:.2}", x.cpu_us()),
                ],
                None => vec!["-".into(); 4],
            };
            let bg = r
                .engine
                .as_ref()
                .map_or_else(|| "-".into(), |x| format!("{:.2}", x.bg_cpu_us()));
            let (ratio, cpu_ratio) = match (&r.engine, &r.baseline) {
                (Some(e), Some(b)) => (
                    format!("{:.2}", e.iops() / b.iops()),
                    format!("{:.2}", b.cpu_us() / e.cpu_us()),
                ),
                _ => ("-".into(), "-".into()),
            };
            let mut v = vec![
                r.w.name().to_string(),
                r.threads.to_string(),
                r.backing.to_string(),
            ];
            v.extend(side(&r.engine));
            v.push(bg);
            v.push(
                r.engine
                    .as_ref()
                    .and_then(|x| x.wb)
                    .map_or_else(|| "-".into(), |f| format!("{:.0}", f * 100.0)),
            );
            v.extend(side(&r.baseline));
            v.push(ratio);
            v.push(cpu_ratio);
            v
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .chain(std::iter::once(header[i].chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |s: &mut String, v: &[String]| {
        if markdown {
            s.push('|');
        }
        for (i, c) in v.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            if i < 3 {
                let _ = write!(s, " {c}{} ", " ".repeat(pad));
            } else {
                let _ = write!(s, " {}{c} ", " ".repeat(pad));
            }
            if markdown {
                s.push('|');
            }
        }
        s.push('\n');
    };
    line(&mut s, &header.map(String::from));
    if markdown {
        let sep: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                if i < 3 {
                    "-".repeat(w)
                } else {
                    format!("{}:", "-".repeat(w - 1))
                }
            })
            .collect();
        line(&mut s, &sep);
    } else {
        let total: usize = widths.iter().map(|w| w + 2).sum();
        let _ = writeln!(s, "{}", "-".repeat(total));
    }
    for c in &cells {
        line(&mut s, c);
    }
    s
}

pub(crate) fn best(a: Option<Run>, b: Run) -> Option<Run> {
    match a {
        Some(a) if a.iops() >= b.iops() => Some(a),
        _ => Some(b),
    }
}

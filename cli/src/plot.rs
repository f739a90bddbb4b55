//! A loss-curve plot as a self-contained SVG: axes with round-number ticks, the raw loss as a
//! thin polyline and an exponential moving average on top.

use std::fmt::Write;

/// Round tick values covering [lo, hi], about `n` of them (1-2-5 steps).
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![lo];
    }
    let raw = (hi - lo) / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let mut v = Vec::new();
    let mut t = (lo / step).ceil() * step;
    while t <= hi + step * 1e-9 {
        v.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    v
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// SVG of `points` (x = step, y = loss). Non-finite values are left out.
pub fn loss_curve_svg(points: &[(f64, f64)], title: &str) -> String {
    let (w, h) = (720.0, 420.0);
    let (ml, mr, mt, mb) = (70.0, 20.0, 40.0, 50.0);
    let pts: Vec<(f64, f64)> = points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = write!(s, r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#, w / 2.0, escape(title));
    if pts.is_empty() {
        let _ = write!(s, r#"<text x="{}" y="{}" text-anchor="middle">no data yet</text></svg>"#, w / 2.0, h / 2.0);
        return s;
    }
    let (mut x0, mut x1) = (f64::MAX, f64::MIN);
    let (mut y0, mut y1) = (f64::MAX, f64::MIN);
    for &(x, y) in &pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    y0 = (y0 - pad).max(0.0_f64.min(y0));
    y1 += pad;
    let (pw, ph) = (w - ml - mr, h - mt - mb);
    let sx = |x: f64| ml + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| mt + (1.0 - (y - y0) / (y1 - y0)) * ph;
    // Grid, ticks and labels.
    for t in ticks(y0, y1, 6) {
        let y = sy(t);
        let _ = write!(s, r##"<line x1="{ml}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e5e5"/>"##, ml + pw);
        let _ = write!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#, ml - 6.0, y + 4.0, fmt_tick(t));
    }
    for t in ticks(x0, x1, 8) {
        let x = sx(t);
        let _ = write!(s, r##"<line x1="{x:.1}" y1="{mt}" x2="{x:.1}" y2="{:.1}" stroke="#f0f0f0"/>"##, mt + ph);
        let _ = write!(s, r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, mt + ph + 18.0, fmt_tick(t));
    }
    let _ = write!(s, r##"<path d="M{ml},{mt} V{:.1} H{:.1}" fill="none" stroke="#333"/>"##, mt + ph, ml + pw);
    let _ = write!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">step</text>"#, ml + pw / 2.0, h - 10.0);
    let _ = write!(
        s,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">loss</text>"#,
        mt + ph / 2.0,
        mt + ph / 2.0
    );
    let line = |pts: &[(f64, f64)]| -> String {
        pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect::<Vec<_>>().join(" ")
    };
    let _ = write!(s, r##"<polyline points="{}" fill="none" stroke="#9ecae1" stroke-width="1"/>"##, line(&pts));
    // EMA with a window of about 5% of the run, so the trend is readable under the noise.
    let alpha = (2.0 / (pts.len() as f64 / 20.0 + 1.0)).clamp(0.02, 1.0);
    let mut ema = pts[0].1;
    let smooth: Vec<(f64, f64)> = pts
        .iter()
        .map(|&(x, y)| {
            ema += alpha * (y - ema);
            (x, ema)
        })
        .collect();
    let _ = write!(s, r##"<polyline points="{}" fill="none" stroke="#08519c" stroke-width="2"/>"##, line(&smooth));
    let _ = write!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#08519c">last {:.4} (smoothed {:.4})</text>"##,
        ml + pw - 4.0,
        mt + 14.0,
        pts[pts.len() - 1].1,
        ema
    );
    s.push_str("</svg>");
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        let t = ticks(0.37, 1.21, 6);
        assert!(t.first().unwrap() >= &0.37 && t.last().unwrap() <= &1.21 && t.len() >= 4);
        assert_eq!(fmt_tick(0.6000000000000001), "0.6");
        assert_eq!(fmt_tick(250.0), "250");
    }

    #[test]
    fn svg_has_axes_and_both_lines_and_survives_nan() {
        let pts: Vec<(f64, f64)> =
            (0..50).map(|i| (i as f64, 1.0 / (1.0 + i as f64))).chain([(50.0, f64::NAN)]).collect();
        let svg = loss_curve_svg(&pts, "loss <test>");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("loss &lt;test&gt;") && !svg.contains("NaN"));
        assert!(loss_curve_svg(&[], "empty").contains("no data yet"));
    }
}

//! The status page's chart: deliveries, deferrals and bounces per minute
//! over 24 hours as inline SVG, one line per series. Of a run of equal
//! minutes only its ends are written, so a quiet day costs a few bytes and
//! the busiest one (a point every minute) about 40 KiB, well under the
//! page's 100 KiB.

use std::fmt::Write;

/// Plot area in SVG units: one unit per minute across.
const LEFT: u32 = 48;
const TOP: u32 = 10;
const WIDTH: u32 = 1440;
const HEIGHT: u32 = 180;

/// Series names (CSS classes), colours and labels, in `[u32; 3]` order.
const SERIES: [(&str, &str, &str); 3] = [
    ("delivered", "#2a9d4b", "delivered"),
    ("deferred", "#e09a1a", "deferred"),
    ("bounced", "#d0342c", "bounced"),
];

/// The chart of `per_minute` (oldest first, one entry a minute).
pub fn svg(per_minute: &[[u32; 3]]) -> String {
    let max = per_minute
        .iter()
        .flatten()
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    let y = |v: u32| TOP + HEIGHT - (u64::from(v) * u64::from(HEIGHT) / u64::from(max)) as u32;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg id="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" role="img" aria-label="recipients per minute, last 24 hours">"#,
        LEFT + WIDTH + 8,
        TOP + HEIGHT + 28
    );
    // Axes, the scale, and a tick every three hours.
    let _ = write!(
        out,
        r##"<g class="axes" stroke="#999" fill="#555" font-size="13"><line x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}"/><text x="{lx}" y="{ty}" text-anchor="end" stroke="none">{max}</text><text x="{lx}" y="{bottom}" text-anchor="end" stroke="none">0</text>"##,
        bottom = TOP + HEIGHT,
        right = LEFT + WIDTH,
        lx = LEFT - 6,
        ty = TOP + 10,
    );
    for tick in 0..=8u32 {
        let x = LEFT + tick * WIDTH / 8;
        let label = match tick {
            8 => "now".to_string(),
            t => format!("-{}h", 24 - 3 * t),
        };
        let _ = write!(
            out,
            r#"<line x1="{x}" y1="{b}" x2="{x}" y2="{b5}"/><text x="{x}" y="{ty}" text-anchor="middle" stroke="none">{label}</text>"#,
            b = TOP + HEIGHT,
            b5 = TOP + HEIGHT + 5,
            ty = TOP + HEIGHT + 20,
        );
    }
    out.push_str("</g>");
    for (s, (class, colour, _)) in SERIES.iter().enumerate() {
        let total: u64 = per_minute.iter().map(|c| u64::from(c[s])).sum();
        let _ = write!(
            out,
            r#"<polyline class="{class}" data-total="{total}" fill="none" stroke="{colour}" stroke-width="2" points=""#
        );
        for (i, counts) in per_minute.iter().enumerate() {
            let v = counts[s];
            let same =
                |j: Option<usize>| j.and_then(|j| per_minute.get(j)).is_some_and(|c| c[s] == v);
            // Inside a flat run a point adds nothing to the line.
            if i > 0 && i + 1 < per_minute.len() && same(i.checked_sub(1)) && same(Some(i + 1)) {
                continue;
            }
            let sep = if i == 0 { "" } else { " " };
            let _ = write!(out, "{sep}{},{}", LEFT + i as u32, y(v));
        }
        out.push_str(r#""/>"#);
    }
    out.push_str("</svg>");
    out
}

/// The legend: each series' colour, name and 24-hour total.
pub fn legend(per_minute: &[[u32; 3]]) -> String {
    let mut out = String::from(r#"<p class="legend">"#);
    for (s, (class, colour, label)) in SERIES.iter().enumerate() {
        let total: u64 = per_minute.iter().map(|c| u64::from(c[s])).sum();
        let _ = write!(
            out,
            r#"<span style="color:{colour}">&#9632;</span> {label}: <span id="total-{class}">{total}</span> "#
        );
    }
    out.push_str("</p>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(svg: &str, class: &str) -> Vec<(u32, u32)> {
        let start = svg.find(&format!("class=\"{class}\"")).unwrap();
        let rest = &svg[start..];
        let p = rest.find("points=\"").unwrap() + 8;
        let end = rest[p..].find('"').unwrap();
        rest[p..p + end]
            .split(' ')
            .map(|xy| {
                let (x, y) = xy.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn points_only_where_the_line_bends() {
        let mut minutes = vec![[0u32; 3]; 1440];
        minutes[1000] = [4, 1, 0];
        minutes[1001] = [2, 0, 0];
        let svg = svg(&minutes);
        let bottom = TOP + HEIGHT;
        assert_eq!(
            points(&svg, "delivered"),
            [
                (LEFT, bottom),
                (LEFT + 999, bottom),
                (LEFT + 1000, TOP),
                (LEFT + 1001, TOP + HEIGHT / 2),
                (LEFT + 1002, bottom),
                (LEFT + 1439, bottom)
            ]
        );
        assert_eq!(
            points(&svg, "bounced"),
            [(LEFT, bottom), (LEFT + 1439, bottom)]
        );
        assert!(svg.contains(r#"class="delivered" data-total="6""#));
        assert!(legend(&minutes).contains(r#"<span id="total-deferred">1</span>"#));
    }

    #[test]
    fn the_busiest_day_stays_small() {
        let minutes: Vec<[u32; 3]> = (0..1440u32).map(|i| [i % 7 * 1000, i % 5, i % 3]).collect();
        assert!(svg(&minutes).len() < 45 * 1024, "{}", svg(&minutes).len());
    }
}

//! Deterministic number and time formatting shared by the dashboard, the log lines and tests.

/// A duration in seconds as a short human string: `45s`, `2m10s`, `1h02m`, `3d04h`.
///
/// Negative or non-finite input prints `--`.
pub fn fmt_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "--".to_string();
    }
    let s = secs.round() as u64;
    let (d, h, m, s) = (s / 86_400, (s / 3600) % 24, (s / 60) % 60, s % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Estimated time left, from the progress made so far in this process.
///
/// `done` steps took `elapsed` seconds; `left` steps remain. `None` until at least one step
/// has taken measurable time.
pub fn eta_secs(done: u64, elapsed: f64, left: u64) -> Option<f64> {
    if done == 0 || !elapsed.is_finite() || elapsed <= 0.0 {
        return None;
    }
    Some(elapsed / done as f64 * left as f64)
}

/// Seconds left at step `s`, from the steps this process has done since the first one it saw
/// (`first_seen`: that step and its clock), so a slow first step (warm-up) does not bias the
/// rate. With a single step seen, that step's own duration, falling back to the clock since
/// `start_step` (after a resume the clock also counts earlier processes).
pub fn run_eta(
    s: &manners_events::StepStats,
    first_seen: (u64, f64),
    start_step: u64,
    total: u64,
) -> Option<f64> {
    let left = total.saturating_sub(s.step);
    let (step0, t0) = first_seen;
    if s.step > step0 {
        return eta_secs(s.step - step0, s.elapsed_secs - t0, left);
    }
    step_secs(s)
        .map(|d| d * left as f64)
        .or_else(|| eta_secs(s.step.saturating_sub(start_step), s.elapsed_secs, left))
}

/// Wall seconds of one step, from its token count and rate (`None` when not reported).
pub fn step_secs(s: &manners_events::StepStats) -> Option<f64> {
    (s.tokens > 0 && s.tokens_per_sec.is_finite() && s.tokens_per_sec > 0.0)
        .then(|| s.tokens as f64 / s.tokens_per_sec)
}

/// An integer with thousands separators: `4,120`, `1,234,567`.
pub fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate (tokens per second) rounded to an integer with separators. Non-finite prints `--`.
pub fn fmt_rate(x: f64) -> String {
    if !x.is_finite() || x < 0.0 {
        return "--".to_string();
    }
    fmt_count(x.round() as u64)
}

/// A large count with an SI suffix and 3 significant digits: `999`, `12.3K`, `124M`, `1.50B`.
pub fn fmt_si(n: u64) -> String {
    let x = n as f64;
    let (v, suffix) = if n < 1_000 {
        return n.to_string();
    } else if x < 1e6 {
        (x / 1e3, "K")
    } else if x < 1e9 {
        (x / 1e6, "M")
    } else if x < 1e12 {
        (x / 1e9, "B")
    } else {
        (x / 1e12, "T")
    };
    if v < 9.995 {
        format!("{v:.2}{suffix}")
    } else if v < 99.95 {
        format!("{v:.1}{suffix}")
    } else {
        format!("{v:.0}{suffix}")
    }
}

/// A learning rate in compact scientific notation: `3.00e-4`, `1.00e0`; `0` for zero.
pub fn fmt_lr(lr: f64) -> String {
    if lr == 0.0 {
        return "0".to_string();
    }
    if !lr.is_finite() {
        return format!("{lr}");
    }
    format!("{lr:.2e}")
}

/// A loss with 4 decimals (`1.2345`); non-finite values print as `nan`/`inf`.
pub fn fmt_loss(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.4}")
    } else {
        format!("{x}").to_lowercase()
    }
}

pub use manners_events::stats::fmt_sig3;

/// A gradient norm: 2 decimals below 100 (`0.81`, `12.50`), else 3 significant digits.
pub fn fmt_gnorm(x: f64) -> String {
    if x.is_finite() && x.abs() < 100.0 {
        format!("{x:.2}")
    } else {
        fmt_sig3(x)
    }
}

/// A fraction as a percentage with no decimals (`38%`), or one decimal below 10% (`4.5%`).
pub fn fmt_pct(frac: f64) -> String {
    if !frac.is_finite() {
        return "--".to_string();
    }
    let p = frac * 100.0;
    if p > 0.0 && p < 10.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.0}%")
    }
}

/// Makes free text (a prompt, a generation, an error) safe to draw on one terminal line or in
/// a wrapped paragraph: tabs become spaces, other control characters are dropped, and `\r\n`
/// becomes `\n`. With `one_line`, newlines become ` ⏎ `.
pub fn sanitize(text: &str, one_line: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' if one_line => out.push_str(" ⏎ "),
            '\n' => out.push('\n'),
            '\t' => out.push_str("    "),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Cuts `text` to at most `max` characters, ending with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Cuts `text` to at most `max` characters from the front, starting with `…` when cut (for
/// paths, whose end matters most).
pub fn truncate_start(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_string();
    }
    let keep = max.saturating_sub(1);
    let mut out = String::from("…");
    out.extend(text.chars().skip(n - keep));
    out
}

/// Greedy word wrap to `width` display columns. Each output line starts with `indent` (which
/// counts towards the width); words longer than a line are split. Newlines in `text` start new
/// lines; empty input lines are kept.
pub fn wrap_text(text: &str, width: usize, indent: &str) -> Vec<String> {
    let w = |s: &str| ratatui::text::Span::raw(s).width();
    let room = width.saturating_sub(w(indent)).max(1);
    let mut out = Vec::new();
    for para in text.split('\n') {
        // Keep leading indentation (code in a generation), at most half a line of it.
        let body = para.trim_start_matches(' ');
        let lead = (para.len() - body.len()).min(room / 2);
        let mut line = " ".repeat(lead);
        let mut line_w = lead;
        let mut has_word = false;
        for word in body.split(' ') {
            let ww = w(word);
            if ww > room.saturating_sub(lead) {
                // A word that fits on no line: flush, then split it by characters.
                if has_word {
                    out.push(format!("{indent}{line}"));
                    line.clear();
                    line_w = 0;
                } else if line_w + ww > room {
                    line.clear();
                    line_w = 0;
                }
                for c in word.chars() {
                    let cw = w(c.encode_utf8(&mut [0; 4]));
                    if line_w + cw > room && line_w > 0 {
                        out.push(format!("{indent}{line}"));
                        line.clear();
                        line_w = 0;
                    }
                    line.push(c);
                    line_w += cw;
                }
                has_word = true;
                continue;
            }
            let sep = usize::from(has_word);
            if has_word && line_w + sep + ww > room {
                out.push(format!("{indent}{line}"));
                line = word.to_string();
                line_w = ww;
            } else {
                if has_word {
                    line.push(' ');
                }
                line.push_str(word);
                line_w += sep + ww;
            }
            has_word = true;
        }
        out.push(format!("{indent}{line}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(0.0), "0s");
        assert_eq!(fmt_duration(44.6), "45s");
        assert_eq!(fmt_duration(130.0), "2m10s");
        assert_eq!(fmt_duration(3600.0 + 120.0 + 5.0), "1h02m");
        assert_eq!(fmt_duration(3.0 * 86_400.0 + 4.0 * 3600.0), "3d04h");
        assert_eq!(fmt_duration(f64::NAN), "--");
        assert_eq!(fmt_duration(-1.0), "--");
    }

    #[test]
    fn eta_from_rate() {
        // 120 steps in 60 s, 680 left: 0.5 s/step -> 340 s.
        assert_eq!(eta_secs(120, 60.0, 680), Some(340.0));
        assert_eq!(
            fmt_duration(eta_secs(120, 60.0, 680).unwrap_or(f64::NAN)),
            "5m40s"
        );
        assert_eq!(eta_secs(0, 60.0, 680), None);
        assert_eq!(eta_secs(5, 0.0, 680), None);
        assert_eq!(eta_secs(5, 10.0, 0), Some(0.0));
    }

    #[test]
    fn counts_and_rates() {
        assert_eq!(fmt_count(0), "0");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_count(4120), "4,120");
        assert_eq!(fmt_count(1_234_567), "1,234,567");
        assert_eq!(fmt_rate(4119.6), "4,120");
        assert_eq!(fmt_rate(f64::NAN), "--");
        assert_eq!(fmt_si(999), "999");
        assert_eq!(fmt_si(12_345), "12.3K");
        assert_eq!(fmt_si(124_439_808), "124M");
        assert_eq!(fmt_si(1_500_000_000), "1.50B");
        assert_eq!(fmt_si(9_999_999), "10.0M");
    }

    #[test]
    fn numbers() {
        assert_eq!(fmt_lr(3e-4), "3.00e-4");
        assert_eq!(fmt_lr(0.0), "0");
        assert_eq!(fmt_loss(1.23456), "1.2346");
        assert_eq!(fmt_loss(f64::NAN), "nan");
        assert_eq!(fmt_sig3(0.8123), "0.812");
        assert_eq!(fmt_sig3(0.01234), "0.0123");
        assert_eq!(fmt_sig3(2.5), "2.50");
        assert_eq!(fmt_sig3(12.34), "12.3");
        assert_eq!(fmt_sig3(123.4), "123");
        assert_eq!(fmt_sig3(12345.0), "1.23e4");
        assert_eq!(fmt_gnorm(0.8123), "0.81");
        assert_eq!(fmt_gnorm(1234.0), "1234");
        assert_eq!(fmt_gnorm(f64::INFINITY), "inf");
        assert_eq!(fmt_pct(0.38), "38%");
        assert_eq!(fmt_pct(0.045), "4.5%");
        assert_eq!(fmt_pct(1.0), "100%");
    }

    #[test]
    fn text_cleanup() {
        assert_eq!(sanitize("a\tb\x07c\r\nd", false), "a    bc\nd");
        assert_eq!(sanitize("a\nb", true), "a ⏎ b");
        assert_eq!(truncate("hello", 5), "hello");
        assert_eq!(truncate("hello world", 5), "hell…");
        assert_eq!(truncate_start("runs/a/step-10", 8), "…step-10");
        assert_eq!(truncate_start("short", 8), "short");
    }

    #[test]
    fn word_wrap() {
        assert_eq!(
            wrap_text("the quick brown fox jumps", 12, "  "),
            vec!["  the quick", "  brown fox", "  jumps"]
        );
        assert_eq!(wrap_text("a\n\nb", 10, ""), vec!["a", "", "b"]);
        assert_eq!(
            wrap_text("abcdefghij", 6, "> "),
            vec!["> abcd", "> efgh", "> ij"]
        );
        // Leading indentation survives; wide characters count two columns.
        assert_eq!(wrap_text("    x = 1", 20, ""), vec!["    x = 1"]);
        assert_eq!(wrap_text("日本語 text", 8, ""), vec!["日本語", "text"]);
    }
}

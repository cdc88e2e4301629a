//! Drawing the dashboard. Nothing here mutates state.

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{
    Axis, Block, BorderType, Chart, Clear, Dataset, Gauge, GraphType, LineGauge, Paragraph,
    Sparkline, Wrap,
};

use crate::dashboard::{ChartView, Dashboard, LogKind, RunStatus};
use crate::format::{
    fmt_count, fmt_duration, fmt_gnorm, fmt_loss, fmt_lr, fmt_pct, fmt_rate, fmt_si, sanitize,
    truncate, truncate_start, wrap_text,
};

type Points = Vec<(f64, f64)>;

const ACCENT: Color = Color::Cyan;
const RAW: Color = Color::DarkGray;
const EMA: Color = Color::Cyan;
const EVAL: Color = Color::Yellow;
const DIM: Color = Color::DarkGray;
const BORDER: Color = Color::DarkGray;

/// Below this width or height the dashboard uses its compact layout.
pub const WIDE_MIN_WIDTH: u16 = 100;
pub const WIDE_MIN_HEIGHT: u16 = 30;

fn label(s: &str) -> Span<'static> {
    Span::styled(s.to_string(), Style::new().fg(DIM))
}

fn value(s: String) -> Span<'static> {
    Span::styled(s, Style::new().add_modifier(Modifier::BOLD))
}

fn panel(title: &str) -> Block<'static> {
    panel_with(title, "")
}

/// A rounded panel titled `title`, followed by a dim `subtitle` when not empty.
fn panel_with(title: &str, subtitle: &str) -> Block<'static> {
    let mut spans = vec![Span::styled(
        format!(" {title} "),
        Style::new().bold().fg(Color::White),
    )];
    if !subtitle.is_empty() {
        spans.push(Span::styled(format!("{subtitle} "), Style::new().fg(DIM)));
    }
    Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(Style::new().fg(BORDER))
        .title(Line::from(spans))
}

/// Decimals for axis labels spanning `lo..hi`: enough to tell three labels apart.
fn axis_decimals(lo: f64, hi: f64) -> usize {
    let range = (hi - lo).abs().max(1e-12);
    (2.0 - range.log10().floor()).clamp(0.0, 5.0) as usize
}

fn status_style(status: &RunStatus) -> Style {
    let bg = match status {
        RunStatus::Waiting => Color::Gray,
        RunStatus::Running => Color::Green,
        RunStatus::Paused => Color::Yellow,
        RunStatus::Stopping => Color::Magenta,
        RunStatus::Finished(_) => Color::Cyan,
        RunStatus::Failed { .. } | RunStatus::Disconnected { .. } => Color::Red,
    };
    Style::new()
        .bg(bg)
        .fg(Color::Black)
        .add_modifier(Modifier::BOLD)
}

impl Dashboard {
    /// Draws the whole dashboard into the frame. Picks the compact layout below 100x30.
    pub fn render(&self, frame: &mut Frame) {
        let area = frame.area();
        if area.width < 20 || area.height < 6 {
            frame.render_widget(Paragraph::new("manners: terminal too small"), area);
            return;
        }
        if area.width >= WIDE_MIN_WIDTH && area.height >= WIDE_MIN_HEIGHT {
            self.render_wide(frame, area);
        } else {
            self.render_compact(frame, area);
        }
    }

    fn render_wide(&self, frame: &mut Frame, area: Rect) {
        let [title, main, progress, bottom, help] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Fill(3),
            Constraint::Length(4),
            Constraint::Fill(2),
            Constraint::Length(1),
        ])
        .areas(area);
        self.render_title(frame, title);
        let side = (area.width * 2 / 5).clamp(40, 56);
        let [chart, right] =
            Layout::horizontal([Constraint::Fill(1), Constraint::Length(side)]).areas(main);
        self.render_chart(frame, chart);
        // Stats need 7 lines (8 with raw text mixed in) plus borders; the facts get the rest.
        let stats_h = 9 + u16::from(self.mixed_last.is_some());
        let facts_h = (self.fact_lines(side.saturating_sub(4) as usize).len() as u16 + 2)
            .min(right.height.saturating_sub(stats_h));
        let [facts, stats] =
            Layout::vertical([Constraint::Length(facts_h), Constraint::Fill(1)]).areas(right);
        self.render_facts(frame, facts);
        self.render_stats(frame, stats);
        let [gauge, tput] =
            Layout::horizontal([Constraint::Fill(1), Constraint::Length(side)]).areas(progress);
        self.render_progress(frame, gauge);
        self.render_throughput(frame, tput);
        let [samples, events] =
            Layout::horizontal([Constraint::Fill(1), Constraint::Length(side)]).areas(bottom);
        self.render_samples(frame, samples);
        self.render_events(frame, events);
        self.render_help(frame, help);
        if self.status.is_over() {
            self.render_outcome(frame, bottom);
        }
    }

    fn render_compact(&self, frame: &mut Frame, area: Rect) {
        let bottom_h = if area.height >= 20 { 7 } else { 4 };
        let [title, chart, gauge, stats, bottom, help] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(5),
            Constraint::Length(1),
            Constraint::Length(2),
            Constraint::Length(bottom_h),
            Constraint::Length(1),
        ])
        .areas(area);
        self.render_title(frame, title);
        self.render_chart(frame, chart);
        self.render_line_gauge(frame, gauge);
        self.render_stat_lines(frame, stats);
        self.render_latest(frame, bottom);
        self.render_help(frame, help);
        if self.status.is_over() {
            self.render_outcome(frame, bottom);
        }
    }

    fn render_title(&self, frame: &mut Frame, area: Rect) {
        let badge = format!(" {} ", self.status.label());
        let badge_w = badge.chars().count() as u16;
        let [left, right] =
            Layout::horizontal([Constraint::Fill(1), Constraint::Length(badge_w)]).areas(area);
        let mut spans = vec![Span::styled(
            " manners ",
            Style::new().bg(ACCENT).fg(Color::Black).bold(),
        )];
        match &self.info {
            Some(info) => {
                let kind = match info.kind {
                    manners_events::RunKind::Sft => "sft",
                    manners_events::RunKind::Pretrain => "pretrain",
                };
                spans.push(Span::raw(" "));
                spans.push(Span::styled(
                    sanitize(&info.name, true),
                    Style::new().bold(),
                ));
                spans.push(Span::styled(format!(" · {kind}"), Style::new().fg(DIM)));
                if !info.model.is_empty() {
                    spans.push(Span::styled(
                        format!(" · {}", sanitize(&info.model, true)),
                        Style::new().fg(DIM),
                    ));
                }
                if !info.backend.is_empty() {
                    spans.push(Span::styled(
                        format!(" · {}", sanitize(&info.backend, true)),
                        Style::new().fg(DIM),
                    ));
                }
            }
            None => spans.push(Span::styled(
                " loading model and data…",
                Style::new().fg(DIM),
            )),
        }
        frame.render_widget(Paragraph::new(Line::from(spans)), left);
        frame.render_widget(
            Paragraph::new(Span::styled(badge, status_style(&self.status))),
            right,
        );
    }

    /// The raw, smoothed and held-out series of the current view.
    fn chart_series(&self) -> (Points, Points, Points) {
        match self.view {
            ChartView::Full => (
                self.train.points(),
                self.train_ema.points(),
                self.eval.points(),
            ),
            ChartView::Recent => {
                let raw: Vec<_> = self.recent.iter().copied().collect();
                let ema: Vec<_> = self.recent_ema.iter().copied().collect();
                let from = raw.first().map_or(f64::NEG_INFINITY, |p| p.0);
                (raw, ema, self.eval.points_since(from))
            }
        }
    }

    fn render_chart(&self, frame: &mut Frame, area: Rect) {
        let (raw, ema, eval) = self.chart_series();
        let legend = Line::from(vec![
            Span::styled(" ── train ", Style::new().fg(Color::Gray)),
            Span::styled("━━ ema ", Style::new().fg(EMA)),
            Span::styled("● held-out ", Style::new().fg(EVAL)),
        ]);
        let last_step = self.last.as_ref().map_or(0, |s| s.step);
        let span_text = match (self.view, raw.first()) {
            (ChartView::Full, Some(&(x0, _))) => {
                format!("· steps {}-{}", fmt_count(x0 as u64), fmt_count(last_step))
            }
            (ChartView::Recent, Some(_)) => format!("· last {} steps", raw.len()),
            (_, None) => String::new(),
        };
        let mut block = panel_with("Loss", &span_text).title_top(legend.right_aligned());
        if self.status == RunStatus::Paused {
            block = block.title_bottom(Line::from(" ⏸ paused ").yellow().centered());
        }
        if raw.is_empty() && eval.is_empty() {
            let msg = if self.status == RunStatus::Waiting {
                "waiting for the first step…"
            } else {
                "no loss yet"
            };
            let inner = block.inner(area);
            frame.render_widget(block, area);
            let y = inner.y + inner.height / 2;
            let line = Rect {
                y,
                height: 1.min(inner.height),
                ..inner
            };
            frame.render_widget(
                Paragraph::new(msg).alignment(Alignment::Center).fg(DIM),
                line,
            );
            return;
        }

        let xs = raw.iter().chain(&eval).map(|p| p.0);
        let (mut x0, mut x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
        if x1 - x0 < 1.0 {
            x0 = (x0 - 1.0).max(0.0);
            x1 = x0 + 2.0;
        }
        // y range: everything smoothed or held out, plus the raw minimum; raw spikes above
        // the smoothed maximum are clipped so that one bad step does not flatten the curve.
        let lo = raw
            .iter()
            .chain(&ema)
            .chain(&eval)
            .map(|p| p.1)
            .fold(f64::INFINITY, f64::min);
        let mut hi = ema
            .iter()
            .chain(&eval)
            .map(|p| p.1)
            .fold(f64::NEG_INFINITY, f64::max);
        if !hi.is_finite() {
            hi = raw.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        }
        let pad = ((hi - lo).abs() * 0.05).max(1e-3);
        let (y0, y1) = ((lo - pad).max(0.0).min(lo), hi + pad);
        let ymid = (y0 + y1) / 2.0;
        let xmid = ((x0 + x1) / 2.0).round();
        let d = axis_decimals(y0, y1);

        // Later datasets win a cell, so draw by importance: the held-out line (faint), the raw
        // loss, the smoothed loss, then the held-out markers on top.
        let mut datasets = Vec::with_capacity(4);
        if eval.len() > 1 {
            datasets.push(
                Dataset::default()
                    .marker(Marker::Braille)
                    .graph_type(GraphType::Line)
                    .style(Style::new().fg(EVAL).add_modifier(Modifier::DIM))
                    .data(&eval),
            );
        }
        datasets.push(
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(RAW))
                .data(&raw),
        );
        datasets.push(
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(EMA))
                .data(&ema),
        );
        if !eval.is_empty() {
            datasets.push(
                Dataset::default()
                    .marker(Marker::Custom('●'))
                    .graph_type(GraphType::Scatter)
                    .style(Style::new().fg(EVAL))
                    .data(&eval),
            );
        }
        let axis_style = Style::new().fg(DIM);
        let chart = Chart::new(datasets)
            .block(block)
            .legend_position(None)
            .x_axis(Axis::default().style(axis_style).bounds([x0, x1]).labels([
                format!("{x0:.0}"),
                format!("{xmid:.0}"),
                format!("{x1:.0}"),
            ]))
            .y_axis(Axis::default().style(axis_style).bounds([y0, y1]).labels([
                format!("{y0:.d$}"),
                format!("{ymid:.d$}"),
                format!("{y1:.d$}"),
            ]));
        frame.render_widget(chart, area);
    }

    /// Label/value lines of the run facts panel.
    fn fact_lines(&self, width: usize) -> Vec<Line<'static>> {
        let Some(info) = &self.info else {
            return vec![Line::from(label("waiting for the run to start…"))];
        };
        let mut rows: Vec<(String, String)> = Vec::new();
        if !info.model.is_empty() {
            rows.push(("model".into(), info.model.clone()));
        }
        if info.params > 0 {
            let p = if info.trainable_params == 0 || info.trainable_params == info.params {
                format!("{} (all trainable)", fmt_si(info.params))
            } else {
                format!(
                    "{} · {} trainable ({})",
                    fmt_si(info.params),
                    fmt_si(info.trainable_params),
                    fmt_pct(info.trainable_params as f64 / info.params as f64)
                )
            };
            rows.push(("params".into(), p));
        }
        if !info.backend.is_empty() {
            rows.push(("backend".into(), info.backend.clone()));
        }
        if !info.data.is_empty() {
            rows.push(("data".into(), info.data.clone()));
        }
        if info.train_examples > 0 || info.eval_examples > 0 {
            rows.push((
                "examples".into(),
                format!(
                    "{} train · {} held-out",
                    fmt_count(info.train_examples),
                    fmt_count(info.eval_examples)
                ),
            ));
        }
        if !info.template.is_empty() {
            rows.push(("template".into(), info.template.clone()));
        }
        let total = self.total_steps();
        if total > 0 {
            let s = if info.start_step > 0 {
                format!(
                    "{} (resumed at {})",
                    fmt_count(total),
                    fmt_count(info.start_step)
                )
            } else {
                fmt_count(total)
            };
            rows.push(("steps".into(), s));
        }
        rows.extend(info.facts.iter().cloned());
        if !info.run_dir.is_empty() {
            rows.push(("run dir".into(), info.run_dir.clone()));
        }
        let lw = rows
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0)
            .min(10);
        let vw = width.saturating_sub(lw + 1).max(4);
        rows.into_iter()
            .map(|(l, v)| {
                Line::from(vec![
                    label(&format!("{:<lw$} ", truncate(&sanitize(&l, true), lw))),
                    Span::raw(truncate(&sanitize(&v, true), vw)),
                ])
            })
            .collect()
    }

    fn render_facts(&self, frame: &mut Frame, area: Rect) {
        let block = panel("Run");
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let lines = self.fact_lines(inner.width.saturating_sub(1) as usize);
        frame.render_widget(
            Paragraph::new(lines).block(Block::new().padding(pad_left())),
            inner,
        );
    }

    fn stat_pairs(&self) -> Vec<[(&'static str, String); 2]> {
        let last = self.last.as_ref();
        let loss = last.map_or("--".to_string(), |s| fmt_loss(s.sft_loss.unwrap_or(s.loss)));
        let ema = self.ema_value.map_or("--".to_string(), fmt_loss);
        let (eval, ppl) = match &self.last_eval {
            Some(e) => (fmt_loss(e.loss), format!("{:.2}", e.perplexity)),
            None => ("--".into(), "--".into()),
        };
        let best = self
            .best_eval
            .map_or("--".to_string(), |(s, l)| format!("{} @{}", fmt_loss(l), s));
        let lr = last.map_or("--".to_string(), |s| fmt_lr(s.lr));
        let gnorm = last.map_or("--".to_string(), |s| fmt_gnorm(s.grad_norm));
        let sup = self.supervised_fraction().map_or("--".to_string(), fmt_pct);
        let step_time = self.secs_per_step().map_or("--".to_string(), fmt_step_time);
        let epoch = last.map_or("--".to_string(), |s| format!("{:.2}", s.epoch));
        let ckpt = self
            .last_checkpoint
            .as_ref()
            .map_or("--".to_string(), |c| format!("@{}", c.step));
        let mut pairs = vec![[("loss", loss), ("ema", ema)]];
        if let Some(last) = self.mixed_last {
            let ema = self.mixed_ema_value.map_or("--".to_string(), fmt_loss);
            pairs.push([("raw txt", fmt_loss(last)), ("ema", ema)]);
        }
        pairs.extend([
            [("eval", eval), ("best", best)],
            [("ppl", ppl), ("ckpt", ckpt)],
            [("lr", lr), ("gnorm", gnorm)],
            [("sup", sup), ("skipped", fmt_count(self.skipped))],
            [
                ("tokens", fmt_si(self.tokens_total)),
                ("warn", fmt_count(self.warnings)),
            ],
            [("step", step_time), ("epoch", epoch)],
        ]);
        pairs
    }

    fn render_stats(&self, frame: &mut Frame, area: Rect) {
        let block = panel("Stats");
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let pairs = self.stat_pairs();
        let col = (inner.width.saturating_sub(1) / 2) as usize;
        let lines: Vec<Line> = pairs
            .iter()
            .map(|[(l1, v1), (l2, v2)]| {
                let w1 = col.saturating_sub(8);
                let mut spans = vec![
                    label(&format!("{l1:<7} ")),
                    value(format!("{:<w1$}", truncate(v1, w1))),
                    label(&format!("{l2:<7} ")),
                    value(v2.clone()),
                ];
                if *l1 == "eval" && self.best_eval.is_some() {
                    spans[1] = spans[1].clone().fg(EVAL);
                }
                if *l1 == "loss" || *l1 == "raw txt" {
                    spans[3] = spans[3].clone().fg(EMA);
                }
                if *l2 == "warn" && self.warnings > 0 {
                    spans[3] = spans[3].clone().fg(Color::Yellow);
                }
                if *l2 == "skipped" && self.skipped > 0 {
                    spans[3] = spans[3].clone().fg(Color::Yellow);
                }
                Line::from(spans)
            })
            .collect();
        frame.render_widget(
            Paragraph::new(lines).block(Block::new().padding(pad_left())),
            inner,
        );
    }

    fn render_throughput(&self, frame: &mut Frame, area: Rect) {
        let now = self
            .last
            .as_ref()
            .map_or("--".to_string(), |s| fmt_rate(s.tokens_per_sec));
        let avg = self.mean_tps().map_or("--".to_string(), fmt_rate);
        let block = panel_with("Tokens/s", &format!("· {now} now · avg {avg}"));
        let inner = block.inner(area);
        frame.render_widget(block, area);
        if self.devices.is_empty() {
            self.render_sparkline(frame, inner);
            return;
        }
        // Data-parallel: one line per device with its mean when they fit (the sparkline takes
        // what is left), else the latest rates packed several to a line.
        let width = inner.width.saturating_sub(2) as usize;
        // The name column gives way to the rates on a narrow panel.
        let name_w = width.saturating_sub(24).clamp(6, 20);
        let lines: Vec<Line> = if self.devices.len() <= inner.height as usize {
            self.devices
                .iter()
                .map(|d| {
                    let mean = d.mean().map_or("--".to_string(), fmt_rate);
                    Line::from(vec![
                        Span::styled(
                            format!("{:<name_w$.name_w$} ", d.name),
                            Style::new().fg(Color::Gray),
                        ),
                        Span::raw(format!("{:>7} now · avg {mean}", fmt_rate(d.now))),
                    ])
                })
                .collect()
        } else {
            // `#3 2.1K`: the device's place in the list (as in --devices) and its rate.
            let mut lines = vec![String::new()];
            for (i, d) in self.devices.iter().enumerate() {
                let rate = if d.now.is_finite() && d.now >= 0.0 {
                    fmt_si(d.now.round() as u64)
                } else {
                    "--".into()
                };
                let item = format!("#{i} {rate}");
                let cur = lines.last_mut().expect("one line");
                if !cur.is_empty() && cur.chars().count() + 2 + item.chars().count() > width {
                    lines.push(item);
                } else {
                    if !cur.is_empty() {
                        cur.push_str("  ");
                    }
                    cur.push_str(&item);
                }
            }
            lines.into_iter().map(Line::from).collect()
        };
        let rows = (lines.len() as u16).min(inner.height);
        let text_area = Rect {
            x: inner.x + 1,
            width: inner.width.saturating_sub(2),
            height: rows,
            ..inner
        };
        frame.render_widget(Paragraph::new(lines), text_area);
        let spark = Rect {
            y: inner.y + rows,
            height: inner.height - rows,
            ..inner
        };
        if spark.height > 0 {
            self.render_sparkline(frame, spark);
        }
    }

    fn render_sparkline(&self, frame: &mut Frame, area: Rect) {
        let area = Rect {
            x: area.x + 1,
            width: area.width.saturating_sub(2),
            ..area
        };
        let n = area.width as usize;
        let skip = self.tps.len().saturating_sub(n);
        let data: Vec<u64> = self.tps.iter().skip(skip).copied().collect();
        frame.render_widget(
            Sparkline::default()
                .data(data)
                .style(Style::new().fg(Color::Green)),
            area,
        );
    }

    fn progress(&self) -> (f64, String, String) {
        let total = self.total_steps();
        let step = self.last.as_ref().map_or(0, |s| s.step);
        let ratio = if total > 0 {
            (step as f64 / total as f64).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let bar_label = if total > 0 {
            format!(
                "step {} / {} · {:.1}%",
                fmt_count(step),
                fmt_count(total),
                ratio * 100.0
            )
        } else {
            format!("step {}", fmt_count(step))
        };
        (ratio, bar_label, self.progress_details(false))
    }

    /// `epoch 5.60 · elapsed 13m18s · eta 12m02s` (`ep 5.60 · 13m18s · eta 12m02s` compact).
    fn progress_details(&self, compact: bool) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.last {
            if compact {
                parts.push(format!("ep {:.2}", s.epoch));
                parts.push(fmt_duration(s.elapsed_secs));
            } else {
                parts.push(format!("epoch {:.2}", s.epoch));
                parts.push(format!("elapsed {}", fmt_duration(s.elapsed_secs)));
            }
        }
        let eta = match &self.status {
            RunStatus::Running | RunStatus::Paused => {
                self.eta_secs().map(|e| format!("eta {}", fmt_duration(e)))
            }
            _ => None,
        };
        parts.extend(eta);
        parts.join(if compact { " · " } else { "   " })
    }

    fn gauge_color(&self) -> Color {
        match self.status {
            RunStatus::Paused => Color::Yellow,
            RunStatus::Stopping => Color::Magenta,
            RunStatus::Failed { .. } | RunStatus::Disconnected { .. } => Color::Red,
            RunStatus::Finished(_) => Color::Green,
            _ => ACCENT,
        }
    }

    fn render_progress(&self, frame: &mut Frame, area: Rect) {
        let (ratio, bar_label, details) = self.progress();
        let block = panel("Progress");
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let [bar, info] =
            Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(inner);
        let bar = Rect {
            x: bar.x + 1,
            width: bar.width.saturating_sub(2),
            ..bar
        };
        let gauge = Gauge::default()
            .ratio(ratio)
            .use_unicode(true)
            .label(Span::styled(
                bar_label,
                Style::new().fg(Color::White).bold(),
            ))
            .gauge_style(Style::new().fg(self.gauge_color()).bg(Color::Black));
        frame.render_widget(gauge, bar);
        let state = match self.status {
            RunStatus::Paused => Span::styled(
                "paused · p resumes   ",
                Style::new().fg(Color::Yellow).bold(),
            ),
            RunStatus::Stopping => Span::styled(
                "stopping: writing a checkpoint   ",
                Style::new().fg(Color::Magenta).bold(),
            ),
            _ => Span::raw(""),
        };
        frame.render_widget(
            Paragraph::new(Line::from(vec![
                Span::raw(" "),
                state,
                Span::styled(details, Style::new().fg(Color::Gray)),
            ])),
            info,
        );
    }

    fn render_line_gauge(&self, frame: &mut Frame, area: Rect) {
        let (ratio, _, _) = self.progress();
        let right = self.progress_details(true);
        let total = self.total_steps();
        let step = self.last.as_ref().map_or(0, |s| s.step);
        let left = if total > 0 {
            format!(" {}/{} {:>3.0}%", step, total, ratio * 100.0)
        } else {
            format!(" step {step}")
        };
        let right = format!(" {right} ");
        let rw = (right.chars().count() as u16).min(area.width / 2);
        let [g, r] = Layout::horizontal([Constraint::Fill(1), Constraint::Length(rw)]).areas(area);
        frame.render_widget(
            LineGauge::default()
                .ratio(ratio)
                .label(Span::styled(left, Style::new().bold()))
                .filled_style(Style::new().fg(self.gauge_color()))
                .unfilled_style(Style::new().fg(Color::DarkGray)),
            g,
        );
        frame.render_widget(Paragraph::new(Span::styled(right, Style::new().fg(DIM))), r);
    }

    /// The two stat lines of the compact layout.
    fn render_stat_lines(&self, frame: &mut Frame, area: Rect) {
        let last = self.last.as_ref();
        let mut l1 = vec![
            label(" loss "),
            value(last.map_or("--".into(), |s| fmt_loss(s.sft_loss.unwrap_or(s.loss)))),
            label("  ema "),
            value(self.ema_value.map_or("--".into(), fmt_loss)).fg(EMA),
        ];
        if let Some(m) = self.mixed_ema_value.or(self.mixed_last) {
            l1.push(label("  raw txt "));
            l1.push(value(fmt_loss(m)));
        }
        if let Some(e) = &self.last_eval {
            l1.push(label("  eval "));
            l1.push(value(fmt_loss(e.loss)).fg(EVAL));
            if let Some((s, b)) = self.best_eval {
                l1.push(label(format!(" (best {} @{s})", fmt_loss(b)).as_str()));
            }
        }
        let mut l2 = vec![
            label(" lr "),
            value(last.map_or("--".into(), |s| fmt_lr(s.lr))),
            label("  gnorm "),
            value(last.map_or("--".into(), |s| fmt_gnorm(s.grad_norm))),
            label("  sup "),
            value(self.supervised_fraction().map_or("--".into(), fmt_pct)),
            label("  "),
            value(last.map_or("--".into(), |s| fmt_rate(s.tokens_per_sec))),
            label(" tok/s "),
        ];
        // A tiny inline sparkline of recent throughput in the space that is left.
        let used: usize = l2.iter().map(|s| s.content.chars().count()).sum();
        let room = (area.width as usize).saturating_sub(used + 1).min(24);
        if room >= 4 {
            l2.push(Span::styled(
                mini_spark(&self.tps, room),
                Style::new().fg(Color::Green),
            ));
        }
        if self.skipped > 0 {
            l2.push(Span::styled(
                format!(" skip {}", self.skipped),
                Style::new().fg(Color::Yellow),
            ));
        }
        frame.render_widget(Paragraph::new(vec![Line::from(l1), Line::from(l2)]), area);
    }

    fn sample_lines(&self, width: usize, first_only: bool) -> Vec<Line<'static>> {
        let mut lines = Vec::new();
        let n = self.samples.len();
        let count = if first_only { n.min(1) } else { n };
        for k in 0..count {
            let s = &self.samples[(self.sample_sel + k) % n];
            if k > 0 {
                lines.push(Line::from(""));
            }
            lines.push(Line::from(vec![
                Span::styled("› ", Style::new().fg(ACCENT).bold()),
                Span::styled(
                    truncate(&sanitize(&s.prompt, true), width.saturating_sub(2)),
                    Style::new().fg(ACCENT).bold(),
                ),
            ]));
            let resp = sanitize(&s.response, false);
            if resp.trim().is_empty() {
                lines.push(Line::from(Span::styled(
                    "  (empty response)",
                    Style::new().fg(DIM),
                )));
            } else {
                lines.extend(
                    wrap_text(resp.trim_end(), width, "  ")
                        .into_iter()
                        .map(Line::from),
                );
            }
            if !s.stopped {
                lines.push(Line::from(Span::styled(
                    "  [cut at the token budget]",
                    Style::new().fg(DIM).italic(),
                )));
            }
        }
        lines
    }

    fn render_samples(&self, frame: &mut Frame, area: Rect) {
        let sub = self
            .samples
            .first()
            .map_or(String::new(), |s| format!("· step {}", s.step));
        let mut block = panel_with("Samples", &sub);
        if self.samples.len() > 1 {
            let pos = format!(
                " {}/{} · tab next ",
                self.sample_sel + 1,
                self.samples.len()
            );
            block = block.title_top(Line::from(pos).fg(DIM).right_aligned());
        }
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let text: Text = if self.samples.is_empty() {
            let pending = if self.pending.sample {
                " (requested)"
            } else {
                ""
            };
            Text::from(label(&format!("no samples yet{pending}; s samples now")))
        } else {
            Text::from(self.sample_lines(inner.width.saturating_sub(1) as usize, false))
        };
        frame.render_widget(
            Paragraph::new(text).block(Block::new().padding(pad_left())),
            inner,
        );
    }

    fn format_log_line(&self, l: &crate::dashboard::LogLine, width: usize) -> Line<'static> {
        let (tag, color) = match l.kind {
            LogKind::Info => ("info", Color::Gray),
            LogKind::Eval => ("eval", EVAL),
            LogKind::Checkpoint => ("ckpt", Color::Green),
            LogKind::Warning => ("warn", Color::Yellow),
            LogKind::Error => ("fail", Color::Red),
        };
        let head = format!("{:>6} ", l.step);
        let room = width.saturating_sub(head.len() + 5);
        let text_style = match l.kind {
            LogKind::Warning => Style::new().fg(Color::Yellow),
            LogKind::Error => Style::new().fg(Color::Red),
            _ => Style::new(),
        };
        let text = if l.kind == LogKind::Checkpoint {
            truncate_start(&l.text, room)
        } else {
            truncate(&l.text, room)
        };
        Line::from(vec![
            label(&head),
            Span::styled(format!("{tag} "), Style::new().fg(color).bold()),
            Span::styled(text, text_style),
        ])
    }

    fn render_events(&self, frame: &mut Frame, area: Rect) {
        let mut block = panel("Events");
        if self.warnings > 0 {
            let w = if self.warnings == 1 {
                "warning"
            } else {
                "warnings"
            };
            block = block.title_top(
                Line::from(format!(" {} {w} ", self.warnings))
                    .yellow()
                    .right_aligned(),
            );
        }
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let h = inner.height as usize;
        let skip = self.log.len().saturating_sub(h);
        let lines: Vec<Line> = self
            .log
            .iter()
            .skip(skip)
            .map(|l| self.format_log_line(l, inner.width as usize))
            .collect();
        frame.render_widget(Paragraph::new(lines), inner);
    }

    /// Compact layout: the latest warning (if it is recent) and the selected sample.
    fn render_latest(&self, frame: &mut Frame, area: Rect) {
        let sub = self.samples.first().map_or(String::new(), |s| {
            format!(
                "· sample {}/{} · step {}",
                self.sample_sel + 1,
                self.samples.len(),
                s.step
            )
        });
        let mut block = panel_with("Latest", &sub);
        if self.warnings > 0 {
            block = block.title_top(
                Line::from(format!(" {} warn ", self.warnings))
                    .yellow()
                    .right_aligned(),
            );
        }
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let width = inner.width as usize;
        let mut lines = Vec::new();
        if let Some(l) = self.log.back() {
            lines.push(self.format_log_line(l, width));
        }
        if self.samples.is_empty() {
            lines.push(Line::from(label(" no samples yet; s samples now")));
        } else {
            lines.extend(self.sample_lines(width.saturating_sub(1), true));
        }
        frame.render_widget(Paragraph::new(lines), inner);
    }

    fn render_help(&self, frame: &mut Frame, area: Rect) {
        let key = |k: &str| Span::styled(k.to_string(), Style::new().fg(ACCENT).bold());
        let txt = |t: &str| Span::styled(t.to_string(), Style::new().fg(DIM));
        let mut spans = Vec::new();
        if self.status.is_over() {
            spans.push(Span::styled(
                " run over · press any key to exit",
                Style::new().bold(),
            ));
        } else if let Some(n) = &self.notice {
            spans.push(Span::styled(
                format!(" {n}"),
                Style::new().fg(Color::Yellow),
            ));
        } else {
            let pause = if self.status == RunStatus::Paused {
                " resume "
            } else {
                " pause "
            };
            let wide = area.width >= WIDE_MIN_WIDTH;
            let items: [(&str, &str); 7] = [
                ("q", "stop"),
                ("p", pause.trim()),
                ("e", "eval"),
                ("s", "sample"),
                ("c", if wide { "checkpoint" } else { "ckpt" }),
                ("v", if wide { "full/recent" } else { "view" }),
                ("tab", if wide { "next sample" } else { "sample" }),
            ];
            let gap = if wide { "   " } else { "  " };
            spans.push(Span::raw(" "));
            for (i, (k, t)) in items.into_iter().enumerate() {
                if i > 0 {
                    spans.push(Span::raw(gap));
                }
                spans.push(key(k));
                spans.push(txt(&format!(" {t}")));
            }
        }
        let mut pending = Vec::new();
        if self.pending.pause {
            pending.push("pause");
        }
        if self.pending.eval {
            pending.push("eval");
        }
        if self.pending.sample {
            pending.push("samples");
        }
        if self.pending.checkpoint {
            pending.push("checkpoint");
        }
        let right = if pending.is_empty() {
            String::new()
        } else {
            format!("pending: {} ", pending.join(", "))
        };
        let rw = right.chars().count() as u16;
        let [l, r] = Layout::horizontal([Constraint::Fill(1), Constraint::Length(rw)]).areas(area);
        frame.render_widget(Paragraph::new(Line::from(spans)), l);
        frame.render_widget(
            Paragraph::new(Span::styled(right, Style::new().fg(Color::Yellow))),
            r,
        );
    }

    /// The end-of-run box, drawn over `area`.
    fn render_outcome(&self, frame: &mut Frame, area: Rect) {
        let (title, color, lines): (String, Color, Vec<Line>) = match &self.status {
            RunStatus::Finished(s) => {
                let mut lines = vec![Line::from(vec![
                    value(sanitize(&s.reason, true)),
                    Span::raw(format!(
                        " after {} steps in {}",
                        fmt_count(s.steps),
                        fmt_duration(s.elapsed_secs)
                    )),
                ])];
                let mut l = vec![
                    label("final loss "),
                    value(s.final_loss.map_or("--".into(), fmt_loss)),
                ];
                if let Some(e) = s.final_eval_loss {
                    l.push(label("  held-out "));
                    l.push(value(fmt_loss(e)).fg(EVAL));
                }
                if let Some((st, b)) = self.best_eval {
                    l.push(label(&format!("  best {} @{st}", fmt_loss(b))));
                }
                lines.push(Line::from(l));
                if !s.run_dir.is_empty() {
                    lines.push(Line::from(vec![
                        label("saved in "),
                        Span::raw(sanitize(&s.run_dir, true)),
                    ]));
                }
                (" Run finished ".into(), Color::Green, lines)
            }
            RunStatus::Failed { step, error } => {
                let mut lines: Vec<Line> = sanitize(error, false)
                    .lines()
                    .map(|l| Line::from(l.to_string()).red())
                    .collect();
                if let Some(c) = &self.last_checkpoint {
                    lines.push(Line::from(vec![
                        label("last checkpoint: "),
                        Span::raw(format!("step {} · {}", c.step, sanitize(&c.path, true))),
                    ]));
                }
                (format!(" Run failed at step {step} "), Color::Red, lines)
            }
            RunStatus::Disconnected { reason } => {
                let mut lines = vec![Line::from(
                    "the training thread stopped without a final report",
                )];
                if let Some(r) = reason {
                    let red = |l: &str| Line::from(l.to_string()).red();
                    lines.extend(sanitize(r, false).lines().map(red));
                }
                (" Trainer disconnected ".into(), Color::Red, lines)
            }
            _ => return,
        };
        let w = (area.width * 4 / 5).clamp(area.width.min(30), area.width.min(80));
        let text_w = w.saturating_sub(4).max(1);
        let body: u16 = lines
            .iter()
            .map(|l| (l.width() as u16).div_ceil(text_w).max(1))
            .sum();
        let h = (body + 2).min(area.height);
        let popup = Rect {
            x: area.x + (area.width - w) / 2,
            y: area.y + (area.height - h) / 2,
            width: w,
            height: h,
        };
        frame.render_widget(Clear, popup);
        let block = Block::bordered()
            .border_type(BorderType::Double)
            .border_style(Style::new().fg(color))
            .title(Span::styled(title, Style::new().fg(color).bold()))
            .padding(pad_left());
        frame.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .block(block),
            popup,
        );
    }
}

fn pad_left() -> ratatui::widgets::Padding {
    ratatui::widgets::Padding::horizontal(1)
}

/// Seconds per step: `0.48s`, `12.3s`, `1m05s`, or `85ms` below a tenth of a second.
fn fmt_step_time(secs: f64) -> String {
    if secs < 0.1 {
        format!("{:.0}ms", secs * 1000.0)
    } else if secs < 60.0 {
        format!("{}s", crate::format::fmt_sig3(secs))
    } else {
        fmt_duration(secs)
    }
}

/// A one-line sparkline of the last `width` values, drawn with block characters.
fn mini_spark(values: &std::collections::VecDeque<u64>, width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let skip = values.len().saturating_sub(width);
    let vals: Vec<u64> = values.iter().skip(skip).copied().collect();
    let max = vals.iter().copied().max().unwrap_or(0);
    if max == 0 {
        return String::new();
    }
    vals.iter()
        .map(|&v| BARS[((v as f64 / max as f64) * 7.0).round() as usize])
        .collect()
}
